"""Linux's own virtio drivers against vireo-vmm's devices: the Debian kernel from /boot with a tiny initramfs
(busybox + virtio modules from /lib/modules) boots under real KVM (host or kit) and uses virtio-blk (write +
read back, serial), virtio-rng (/dev/hwrng), virtio-net (MAC), virtio-console (/dev/hvc0) and virtio-balloon.

The kernel boots with acpi=off: Vireo's ACPI tables do not describe a PCI root bridge yet, so with ACPI on
Linux does not scan PCI; without ACPI it probes config mechanism #1 (CF8/CFC) and finds our devices (INTx).
The Debian kernel lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so only the PCI transport is tested here."""

import glob
import os
import shlex
import shutil
from pathlib import Path

import pytest

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script

VMM = BUILD_DIR / "vireo-vmm"
MODULES = ["virtio_pci", "virtio_blk", "virtio-rng", "virtio_net", "virtio_console", "virtio_balloon"]
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m 2>/dev/null || echo "LINUX: insmod $m failed"; done
sleep 1
for d in /sys/bus/virtio/devices/*; do echo "LINUX: virtio device $(cat $d/device) driver $(basename $(readlink $d/driver))"; done
if [ -b /dev/vda ]; then
  echo "LINUX: vda sectors $(cat /sys/block/vda/size) serial $(cat /sys/block/vda/serial)"
  printf 'written-by-linux' | dd of=/dev/vda bs=512 seek=100 conv=notrunc,fsync 2>/dev/null
  echo 3 > /proc/sys/vm/drop_caches
  echo "LINUX: vda readback $(dd if=/dev/vda bs=512 skip=100 count=1 iflag=direct 2>/dev/null | head -c 16)"
fi
echo "LINUX: hwrng $(cat /sys/class/misc/hw_random/rng_current) $(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')"
for n in /sys/class/net/eth*; do [ -e "$n" ] && echo "LINUX: net $(basename $n) $(cat $n/address)"; done
[ -c /dev/hvc0 ] && echo "hello from linux on hvc0" > /dev/hvc0 && echo "LINUX: hvc0 written"
echo "LINUX: done"
sync
reboot -f
"""


def cpio_newc(entries) -> bytes:
    out = bytearray()

    def put(ino, name, mode, data):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.extend(b"070701" + b"".join(b"%08X" % v for v in fields) + nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for i, (name, mode, data) in enumerate(entries, 1):
        put(i, name, mode, data or b"")
    put(len(entries) + 1, "TRAILER!!!", 0, b"")
    return bytes(out)


def resolve_modules(moddir: Path, names):
    dep = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        key, _, rest = line.partition(":")
        dep[key] = rest.split()
    by_name = {Path(k).name.split(".ko")[0].replace("-", "_"): k for k in dep}
    order = []

    def add(key):
        if key in order:
            return
        for d in reversed(dep.get(key, [])):
            add(d)
        order.append(key)

    for n in names:
        key = by_name.get(n.replace("-", "_"))
        if key is None:
            pytest.skip(f"module {n} not in {moddir}")
        add(key)
    return order


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma
        return lzma.decompress(data)
    if path.suffix == ".zst":
        pytest.skip("zstd-compressed modules")
    return data


def test_linux_drivers_on_vireo_devices(tmp_path):
    if not VMM.exists():
        pytest.skip(f"{VMM} not built")
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        pytest.skip("no kernel in /boot (apt-get install linux-image-cloud-amd64)")
    kernel = Path(kernels[-1])
    moddir = Path("/lib/modules") / kernel.name[len("vmlinuz-"):]
    busybox = shutil.which("busybox")
    if not moddir.exists() or not busybox or b"ld-linux" in Path(busybox).read_bytes()[:8192]:
        pytest.skip(f"need {moddir} and a static busybox (apt-get install busybox-static)")
    require_kvm(unmodified=True)
    mods = resolve_modules(moddir, MODULES)
    entries = [("bin", 0o40755, None), ("dev", 0o40755, None), ("proc", 0o40755, None), ("sys", 0o40755, None),
               ("modules", 0o40755, None), ("bin/busybox", 0o100755, Path(busybox).read_bytes()),
               ("init", 0o100755, INIT.encode()),
               ("modules.order", 0o100644, "\n".join(Path(m).name.removesuffix(".xz") for m in mods).encode() + b"\n")]
    for m in mods:
        entries.append(("modules/" + Path(m).name.removesuffix(".xz"), 0o100644, read_module(moddir / m)))
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(cpio_newc(entries))
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    argv = [str(VMM), "--kernel", str(kernel), "--initrd", str(initrd), "--memory", "256M",
            "--cmdline", "console=ttyS0 panic=-1 loglevel=3 acpi=off",
            "--disk", f"path={disk},format=raw,serial=LINUX-SN-7", "--rng", "--console", "stdio",
            "--net", "tap=vlx0,mac=52:54:00:ab:cd:ef", "--balloon"]
    script = ("ip tuntap add dev vlx0 mode tap 2>/dev/null || { echo 'SKIP: cannot create a tap device'; exit 0; }\n"
              + " ".join(shlex.quote(a) for a in argv) + " </dev/null\necho VMM-EXIT=$?\nip link del vlx0\n")
    r = run_kvm_script(script, timeout=420, files=[tmp_path], unmodified=True)
    out = r.stdout.decode(errors="replace").replace("\r", "")
    if "SKIP: cannot create a tap device" in out:
        pytest.skip("tap creation not permitted")
    assert "VMM-EXIT=2" in out, (out[-3000:], r.stderr[-2000:])  # reboot -f -> i8042 reset -> exit 2
    lines = out.split("\n")
    assert "LINUX: done" in lines, out[-3000:]
    assert not [l for l in lines if "insmod" in l and "failed" in l], out[-3000:]
    drivers = {l.split()[3]: l.split()[5] for l in lines if l.startswith("LINUX: virtio device ")}
    assert drivers == {"0x0002": "virtio_blk", "0x0004": "virtio_rng", "0x0001": "virtio_net",
                       "0x0003": "virtio_console", "0x0005": "virtio_balloon"}, drivers
    assert "LINUX: vda sectors 32768 serial LINUX-SN-7" in lines
    assert "LINUX: vda readback written-by-linux" in lines
    rng = next(l for l in lines if l.startswith("LINUX: hwrng "))
    assert rng.split()[2] == "virtio_rng.0" and len(rng.split()[3]) == 32
    assert "LINUX: net eth0 52:54:00:ab:cd:ef" in lines
    assert "hello from linux on hvc0" in lines  # virtio-console port 0 -> the VMM's stdout
    data = disk.read_bytes()
    assert data[100 * 512:100 * 512 + 16] == b"written-by-linux"
