#!/usr/bin/env bash
# One-command setup on a fresh Debian 12 machine: install every dependency with apt, configure, build.
# Usage: ./scripts/setup.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  # libraries
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libfmt-dev libspdlog-dev
  libpugixml-dev libcli11-dev zlib1g-dev libzstd-dev liburing-dev libseccomp-dev
  # crypto for LUKS and qcow2 encryption (ciphers, hashes, PBKDF2)
  libgcrypt20-dev
  # tests: python runner, the real qemu-img/qemu-io as the interop oracle, QEMU for side-by-side runs,
  # a real Debian kernel (bzImage parser tests), network namespaces and taps
  python3 python3-pytest qemu-utils qemu-system-x86 linux-image-cloud-amd64 iproute2 fio procps
  # ACPI: iasl disassembles the DSDT/MCFG in acpi_test (an independent AML parser)
  acpica-tools
  # management: virtual networks (netlink, nftables, dnsmasq, Open vSwitch), storage pools (LVM, NFS,
  # iSCSI, partitions), and virsh's test driver as the oracle for texts and XML
  libmnl-dev libnftables-dev nftables dnsmasq-base openvswitch-switch lvm2 nfs-kernel-server tgt open-iscsi
  parted libvirt-clients
  # img_formats: encrypts a test secret for --object secret,keyid=,iv=
  openssl
  # img_encryption: cryptsetup makes LUKS2 (and LUKS1) volumes in plain files, as Linux hosts have them
  cryptsetup-bin
  # the KVM kit (tests/support, docs/kvm-kit.md): a kernel with 9p + kvm_amd modules, a static busybox
  linux-image-amd64 busybox-static
  # remote access and the shell (docs/remote.md): GnuTLS, libedit; tests: a real sshd, certtool,
  # virsh/libvirt-python as the oracles for texts and the Python API, bash-completion, systemd-analyze
  libgnutls28-dev libedit-dev openssh-server openssh-client gnutls-bin libvirt-clients python3-libvirt
  bash-completion systemd
)

if [ "${VIREO_SKIP_APT:-0}" != "1" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
fi

cmake -S . -B build -G Ninja "$@"
cmake --build build -j"$(nproc)"
echo "setup: build complete in build/"
# As libvirt's packaging does: the network "default" (NAT 192.168.122.0/24 + DHCP) and the pool "default"
# (/var/lib/vireo/images) are defined with autostart; vireod starts them. Only the definitions are written.
if [ "$(id -u)" -eq 0 ] && [ "${VIREO_SKIP_DEFAULTS:-0}" != "1" ]; then
  build/vireod --define-defaults || echo "setup: default network/pool not defined (is a vireod already running?)" >&2
fi
