# rebox-lab setup: runs as root inside a freshly started lab server (after holder.sh), with
# the LAB_* variables set by server.rs. Makes the overlay look like a fresh Ubuntu server with
# the `homelab` user, then starts sshd.
set -euo pipefail
user=$LAB_USER

# Identity: hostname, hosts (sudo resolves the hostname), os-release.
printf '%s\n' "$LAB_HOSTNAME" >/etc/hostname
cat >/etc/hosts <<HOSTS
127.0.0.1	localhost
127.0.1.1	$LAB_HOSTNAME
$LAB_ADDR	$LAB_HOSTNAME

::1	ip6-localhost ip6-loopback
HOSTS
# On Debian /etc/os-release is a symlink to ../usr/lib/os-release: replace both.
rm -f /etc/os-release /etc/lsb-release
printf '%s' "$LAB_OS_RELEASE" >/usr/lib/os-release
cp /usr/lib/os-release /etc/os-release
chmod 644 /usr/lib/os-release /etc/os-release
if [ -n "${LAB_LSB_RELEASE:-}" ]; then
  printf '%s' "$LAB_LSB_RELEASE" >/etc/lsb-release
  chmod 644 /etc/lsb-release
fi

# The user, in the sudo group like an Ubuntu installer's first user, with a known password
# (only used when sudo asks for one; SSH password logins are off).
if ! id -u "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --user-group --groups sudo "$user"
fi
echo "$user:$LAB_PASSWORD" | chpasswd
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
printf '%s\n' "$LAB_AUTHORIZED_KEYS" >"$home/.ssh/authorized_keys"
chown "$user:$user" "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"

# sudo: NOPASSWD (like cloud-init's 90-cloud-init-users) or the sudo group's password rule.
rm -f /etc/sudoers.d/90-rebox-lab
if [ "$LAB_SUDO_NOPASSWD" = 1 ]; then
  printf '%s ALL=(ALL:ALL) NOPASSWD:ALL\n' "$user" >/etc/sudoers.d/90-rebox-lab
else
  printf '%s ALL=(ALL:ALL) ALL\n' "$user" >/etc/sudoers.d/90-rebox-lab
fi
chmod 440 /etc/sudoers.d/90-rebox-lab
visudo -cq

# No systemd inside the lab: stand-ins take the place of systemctl and timedatectl in
# /usr/bin (in the overlay only; the host's are untouched), so every user's PATH finds them.
rm -f /usr/bin/systemctl /usr/bin/timedatectl
printf '%s\n' "$LAB_SYSTEMCTL" >/usr/bin/systemctl
printf '%s\n' "$LAB_TIMEDATECTL" >/usr/bin/timedatectl
chmod 755 /usr/bin/systemctl /usr/bin/timedatectl

# The k3s unit reads /etc/default/k3s (EnvironmentFile=-/etc/default/%N): tell the k3s
# stand-in it runs on a lab node (it may add Service addresses to lo) and, when the caller
# named one, which bao binary runs as Vault (else the one scripts/setup installed).
printf 'LAB_NODE=1\n' >/etc/default/k3s
if [ -n "${LAB_BAO:-}" ]; then printf 'LAB_BAO=%s\n' "$LAB_BAO" >>/etc/default/k3s; fi
mkdir -p /etc/rebox-lab && echo "this overlay is a rebox lab node" >/etc/rebox-lab/node

# Packages: a local mirror with stand-ins for what a rebuild installs.
printf '%s\n' "$LAB_APT_MIRROR" >/tmp/lab-apt-mirror.sh
bash /tmp/lab-apt-mirror.sh
rm -f /tmp/lab-apt-mirror.sh

# sshd: this lab's own ed25519 host key only (the host's keys are hidden by whiteouts).
rm -f /etc/ssh/ssh_host_*
(umask 077 && printf '%s\n' "$LAB_HOST_KEY" >/etc/ssh/ssh_host_ed25519_key)
printf '%s\n' "$LAB_HOST_KEY_PUB" >/etc/ssh/ssh_host_ed25519_key.pub
chmod 644 /etc/ssh/ssh_host_ed25519_key.pub
mkdir -p /etc/ssh/sshd_config.d
rm -f /etc/ssh/sshd_config.d/*
cat >/etc/ssh/sshd_config <<SSHD
# rebox lab server (Ubuntu-like; drop-ins in sshd_config.d win, first value counts)
Include /etc/ssh/sshd_config.d/*.conf
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
SSHD
/usr/sbin/sshd -t
