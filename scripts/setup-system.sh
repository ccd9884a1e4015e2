#!/usr/bin/env bash
# Installs the Debian packages ployz needs on a fresh Debian 12 machine: the ZFS userland and
# headers, the ZFS kernel module built by dkms for the backports kernel that the test VM boots,
# qemu for that VM, and the tools that the tests and benchmarks drive. Idempotent: a machine that
# already has everything returns in about a second.
set -euo pipefail

PACKAGES_BACKPORTS=(zfs-dkms zfsutils-linux libzfslinux-dev linux-image-amd64 linux-headers-amd64
  qemu-system-x86)
PACKAGES_MAIN=(build-essential pkg-config python3-dev iproute2 busybox-static docker.io
  nats-server wireguard-tools wireguard-go mbuffer netcat-openbsd socat zstd iperf3
  openssh-server openssh-client sanoid kmod libzstd-dev libxxhash-dev libssl-dev haproxy)

sources=/etc/apt/sources.list.d/ployz-backports.sources
need_update=0
if [ ! -f "$sources" ]; then
  cat >"$sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_update=1
fi

missing=()
for p in "${PACKAGES_MAIN[@]}" "${PACKAGES_BACKPORTS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

zfs_module_present() {
  find /lib/modules -path '*/updates/dkms/zfs.ko*' 2>/dev/null | grep -q .
}

if [ ${#missing[@]} -eq 0 ] && zfs_module_present; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if [ "$need_update" = 1 ] || [ ! -d /var/lib/apt/lists ] || \
   ! ls /var/lib/apt/lists/*bookworm-backports* >/dev/null 2>&1; then
  apt-get update -q
fi
# The backports kernel first, so that zfs-dkms builds its module for it.
apt-get install -y -q -t bookworm-backports linux-image-amd64 linux-headers-amd64
apt-get install -y -q -t bookworm-backports "${PACKAGES_BACKPORTS[@]}"
apt-get install -y -q --no-install-recommends "${PACKAGES_MAIN[@]}"
if ! zfs_module_present; then
  echo "setup: zfs-dkms did not build zfs.ko for any installed kernel (see /var/lib/dkms)" >&2
  exit 1
fi
