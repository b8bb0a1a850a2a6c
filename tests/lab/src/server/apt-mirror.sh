# rebox-lab: the lab server's package mirror (sourced by setup.sh, as root inside the lab).
# A fresh Ubuntu server lacks open-iscsi and nfs-common, and the lab has no internet, so the
# lab carries a local apt repository with stand-in packages of those names. The real apt-get
# and dpkg install them; open-iscsi ships an iscsid unit the systemctl stand-in can run.
# The host's own apt sources are hidden inside the lab so apt never tries the network.
set -euo pipefail
repo=/srv/lab-apt
rm -rf "$repo"
mkdir -p "$repo"
build() { # name version description; files come from the staged tree
  local name=$1 version=$2 desc=$3 tree=/tmp/lab-apt-build/$1
  mkdir -p "$tree/DEBIAN"
  cat >"$tree/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: all
Maintainer: rebox lab <lab@rebox.invalid>
Description: $desc
 Stand-in package of the rebox lab: same name, no real function.
CONTROL
  dpkg-deb --root-owner-group --build "$tree" "$repo/${name}_${version}_all.deb" >/dev/null
}
rm -rf /tmp/lab-apt-build
mkdir -p /tmp/lab-apt-build/open-iscsi/lib/systemd/system /tmp/lab-apt-build/open-iscsi/usr/sbin
cat >/tmp/lab-apt-build/open-iscsi/usr/sbin/iscsid <<'ISCSID'
#!/bin/sh
# rebox lab stand-in for the iSCSI daemon: stays up like the real one.
exec sleep infinity
ISCSID
chmod 755 /tmp/lab-apt-build/open-iscsi/usr/sbin/iscsid
cat >/tmp/lab-apt-build/open-iscsi/lib/systemd/system/iscsid.service <<'UNIT'
[Unit]
Description=iSCSI initiator daemon (iscsid) — rebox lab stand-in
[Service]
ExecStart=/usr/sbin/iscsid
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
build open-iscsi 2.1.11-1ubuntu1 "iSCSI initiator tools (lab stand-in)"
mkdir -p /tmp/lab-apt-build/nfs-common/usr/share/doc/nfs-common /tmp/lab-apt-build/nfs-common/usr/sbin
echo "rebox lab stand-in" >/tmp/lab-apt-build/nfs-common/usr/share/doc/nfs-common/README.lab
# mount.nfs, the helper `mount -t nfs` runs. The lab's NAS is a directory on the server (the
# export path, as the Longhorn stand-in reads it), so the stand-in bind-mounts it; like the
# real client it first needs the NAS host to answer on the NFS port, and honours `ro`.
cat >/tmp/lab-apt-build/nfs-common/usr/sbin/mount.nfs <<'MOUNTNFS'
#!/bin/bash
spec=$1 dir=$2
shift 2
opts=
while [ $# -gt 0 ]; do
  case $1 in -o) opts=$2; shift 2 ;; *) shift ;; esac
done
host=${spec%%:*} export=${spec#*:}
if ! timeout 5 bash -c "exec 3<>/dev/tcp/$host/2049" 2>/dev/null; then
  echo "mount.nfs: Connection refused for $spec on $dir" >&2
  exit 32
fi
if [ ! -d "$export" ]; then
  echo "mount.nfs: access denied by server while mounting $spec" >&2
  exit 32
fi
mount --bind "$export" "$dir" || exit 32
case ",$opts," in *,ro,*) mount -o remount,bind,ro "$dir" || { umount "$dir"; exit 32; } ;; esac
MOUNTNFS
chmod 755 /tmp/lab-apt-build/nfs-common/usr/sbin/mount.nfs
build nfs-common 1:2.8.3-1ubuntu1 "NFS support files common to client and server (lab stand-in)"
rm -rf /tmp/lab-apt-build

# The index apt reads: one stanza per package, with the fields apt checks.
(
  cd "$repo"
  for deb in *.deb; do
    dpkg-deb -f "$deb"
    echo "Filename: ./$deb"
    echo "Size: $(stat -c %s "$deb")"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
  done
) >"$repo/Packages"

rm -f /etc/apt/sources.list
find /etc/apt/sources.list.d -mindepth 1 -delete 2>/dev/null || true
echo "deb [trusted=yes] file:$repo ./" >/etc/apt/sources.list.d/rebox-lab.list
rm -rf /var/lib/apt/lists/*
