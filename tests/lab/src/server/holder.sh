# rebox-lab holder: PID 1 of a lab server. Run (by server.rs) as
#   nsenter --net=/run/netns/NS unshare --mount --uts --pid --fork --propagation private \
#     bash SCRATCH/holder.sh HOSTNAME SCRATCH
# and prints "pid <host pid>", then "ready" (or fails, with its error in SCRATCH/holder.log).
# It is already inside the lab's network namespace and in fresh mount, UTS and PID namespaces
# (mount propagation private, so nothing below leaks to the host). It builds the server's root
# file system and then waits, reaping orphans, until it is killed; killing it (SIGKILL from the
# host) kills every process of the lab, and the lab's mounts vanish with its mount namespace.
set -euo pipefail
name=$1 scratch=$2
# The host-visible PID of this shell (we are PID 1 inside, but the host's /proc is still mounted).
read -r hostpid _ </proc/self/stat
echo "pid $hostpid"
hostname "$name"
m=$scratch/merged
mkdir -p "$m"
# Lower dir: the host's root file system (only that file system, not its submounts).
# Upper + work dirs live on a tmpfs the host mounted at $scratch/fs (an upper dir on the root
# file system itself would be refused by overlayfs as overlapping the lower dir).
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/fs/upper,workdir=$scratch/fs/work" "$m"
mount -t proc -o nosuid,nodev,noexec proc "$m/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$m/sys"
mount --rbind /dev "$m/dev"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$m/run"
mkdir -p -m 755 "$m/run/sshd" "$m/run/lock"
chmod 1777 "$m/run/lock"
# Make the overlay the root of this mount namespace and drop the host's mount tree from it, so
# the lab holds no reference to the host's mounts (other labs' netns files, tmpfs, ...).
cd "$m"
mkdir .rebox-lab-oldroot
pivot_root . .rebox-lab-oldroot
cd /
umount -l /.rebox-lab-oldroot
rmdir /.rebox-lab-oldroot
echo ready
exec >/dev/null </dev/null
trap 'exit 0' TERM INT
# bash reaps every child that exits while it waits, including orphans re-parented to PID 1.
while :; do
  sleep 3600 &
  wait $! || true
done
