"""The real Debian kernel with ACPI on (no acpi=off, no pci=noacpi) under vireo-vmm (docs/acpi.md), as on a
real machine: ACPICA loads our RSDP/XSDT/FADT/DSDT/MADT/MCFG without complaint; the MADT gives every vCPU;
the DSDT's \\_SB.PCI0 is the PCI root (MCFG ECAM reserved in e820 and by the PNP0C02 device), so Linux
enumerates the virtio-pci disk through ACPI, binds virtio_blk with MSI-X and reads the disk; then the initramfs
loads the ACPI button driver and waits for a key event from "Power Button"; the control socket's `shutdown`
presses it (PWRBTN_STS + SCI on IRQ 9 -> Linux's fixed-event handler -> input event); init runs `poweroff -f`,
which powers off through \\_S5 (PM1a_CNT), so the VMM exits 0.

1 and 2 vCPUs in every suite; 4 vCPUs and repeated rounds with VIREO_SLOW_TESTS=1. Unmodified Linux: on a PVM
host and without /dev/kvm this runs in the KVM kit (~30-90 s a boot)."""
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

import vireo_testing as vt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "virtio"))
from test_linux_vmm import _cpio_newc, _kernel, _static_busybox  # noqa: E402
from test_virtio_linux import read_module, resolve_modules  # noqa: E402

MODULES = ["virtio_pci", "virtio_blk", "evdev", "button"]
DISK_PATTERN = b"vireo-acpi-linux-disk-sector-7\n"
INIT = r"""#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
echo "VIREO-INIT: up nproc=$($B nproc)"
for m in $($B cat /modules.order); do $B insmod /modules/$m || echo "VIREO-INIT: insmod $m failed"; done
$B dmesg | $B grep -E "ACPI|smp: |Firmware Bug|MMCONFIG|PCI0|pci_bus 0000:00|PNP0A08|system 00:"
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; $B sleep 1; done
for d in /sys/bus/pci/devices/*; do
  echo "VIREO-INIT: pci ${d##*/} $($B cat $d/vendor) $($B cat $d/device) irq $($B cat $d/irq) driver $($B basename $($B readlink $d/driver) 2>/dev/null)"
done
$B grep -E "PCI-MSI" /proc/interrupts | while read l; do echo "VIREO-INIT: irq $l"; done
# MSI-X or MSI? (Linux 6.1 labels both "PCI-MSI" in /proc/interrupts.) Walk the disk's capability list in
# config space: MSI-X is id 0x11, its Message Control bit 15 = enabled.
cfg=/sys/bus/pci/devices/0000:00:01.0/config
rb() { $B od -An -tu1 -j $1 -N 1 $cfg | $B tr -d ' '; }
p=$(rb 52)
while [ -n "$p" ] && [ "$p" != 0 ]; do
  [ "$(rb $p)" = 17 ] && echo "VIREO-INIT: msix cap at $p enable=$(( $(rb $((p + 3))) >> 7 ))"
  p=$(rb $((p + 1)))
done
echo "VIREO-INIT: vda sector 7: $($B dd if=/dev/vda bs=512 skip=7 count=1 2>/dev/null | $B head -n 1)"
ev=
for e in /sys/class/input/event*; do
  if $B grep -q "Power Button" $e/device/name 2>/dev/null; then ev=/dev/input/${e##*/}; fi
done
echo "VIREO-INIT: power button at $ev"
if [ -n "$ev" ]; then
  $B head -c 24 $ev > /dev/null
  echo "VIREO-INIT: power button pressed"
fi
$B poweroff -f
"""
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "linux_driver.py")
SLOW = os.environ.get("VIREO_SLOW_TESTS") == "1"


def _initrd(tmp_path: Path, kernel: str) -> Path:
    busybox = _static_busybox()
    if busybox is None:
        pytest.skip("no static busybox (apt-get install busybox-static)")
    moddir = Path("/lib/modules") / os.path.basename(kernel)[len("vmlinuz-"):]
    if not (moddir / "modules.dep").exists():
        pytest.skip(f"{moddir}/modules.dep not found")
    mods = resolve_modules(moddir, MODULES)
    names = [Path(m).name.removesuffix(".xz") for m in mods]
    entries = [("bin", 0o040755, b""), ("proc", 0o040755, b""), ("sys", 0o040755, b""), ("dev", 0o040755, b""),
               ("modules", 0o040755, b""), ("bin/busybox", 0o100755, busybox), ("init", 0o100755, INIT.encode()),
               ("modules.order", 0o100644, "\n".join(names).encode() + b"\n")]
    entries += [("modules/" + n, 0o100644, read_module(moddir / m)) for n, m in zip(names, mods)]
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(_cpio_newc(entries))
    return initrd


@pytest.mark.parametrize("cpus,round", [(1, 1), (2, 1)] + ([(4, 1)] + [(c, r) for c in (1, 2, 4) for r in (2, 3)]
                                                           if SLOW else []))
def test_linux_with_acpi_finds_pci_and_powers_off_through_s5(tmp_path, cpus, round):
    vt.require_kvm(unmodified=True)
    kernel = _kernel()
    if not kernel or not os.access(kernel, os.R_OK):
        pytest.skip("no readable /boot/vmlinuz-* (apt-get install linux-image-cloud-amd64)")
    vmm = vt.BUILD_DIR / "vireo-vmm"
    if not vmm.exists():
        pytest.skip(f"{vmm} not built")
    initrd = _initrd(tmp_path, kernel)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
        f.seek(7 * 512)
        f.write(DISK_PATTERN)
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    script = " ".join(shlex.quote(str(x)) for x in [py, DRIVER, vmm, kernel, initrd, disk, tmp_path, cpus]) + "\n"
    r = vt.run_kvm_script(script, timeout=420, files=[tmp_path], unmodified=True)
    out = r.stdout.decode(errors="replace").replace("\r", "")
    log = f"{r.text()}\n{out[-10000:]}"
    assert not r.timed_out, log
    # ACPICA: every table found and loaded, no error or warning.
    for line in ["ACPI: RSDP 0x00000000000F8000 000024 (v02 VIREO )",
                 "ACPI: PM-Timer IO Port: 0x608",
                 "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
                 "ACPI: Using ACPI (MADT) for SMP configuration information",
                 "ACPI: 1 ACPI AML tables successfully acquired and loaded",
                 "ACPI: PM: (supports S0 S5)",
                 # the PCI root from the DSDT, with the windows of its _CRS
                 "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])",
                 "pci_bus 0000:00: root bus resource [io  0x0000-0x0cf7 window]",
                 "pci_bus 0000:00: root bus resource [io  0xc000-0xffff window]",
                 "pci_bus 0000:00: root bus resource [mem 0xc0000000-0xcfffffff window]",
                 "pci_bus 0000:00: root bus resource [bus 00]",
                 "reboot: Power down"]:
        assert line in out, f"missing {line!r}\n{log}"
    assert re.search(r"ACPI: MCFG 0x[0-9A-F]+ 00003C \(v01 VIREO  VIREOVMM", out), log
    # Linux uses the MCFG's ECAM only once it is reserved (e820, or the PNP0C02 device's _CRS; 6.1 checks e820
    # first and says "reserved in E820"), and the PNP0C02 device's range is claimed by the pnp system driver.
    assert re.search(r"PCI: MMCONFIG for domain 0000 \[bus 00-00\] at \[mem 0xe0000000-0xe00fffff\] \(base 0xe0000000\)",
                     out), log
    assert re.search(r"PCI: MMCONFIG at \[mem 0xe0000000-0xe00fffff\] reserved (in E820|as ACPI motherboard resource)",
                     out), log
    assert "system 00:00: [mem 0xe0000000-0xe00fffff] has been reserved" in out, log
    assert f"VIREO-INIT: up nproc={cpus}" in out, log
    assert f"smp: Brought up 1 node, {cpus} CPU{'s' if cpus > 1 else ''}" in out, log
    assert not re.search(r"VIREO-INIT: insmod .* failed", out), log
    # The virtio-blk disk at 00:01.0 (modern virtio-pci id 0x1042), driven with MSI-X.
    # INTA routed by the _PRT: the first device line of the pool (layout::kDeviceIrqLines) is 5.
    assert "VIREO-INIT: pci 0000:00:01.0 0x1af4 0x1042 irq 5 driver virtio-pci" in out, log
    # Its interrupts are message-signalled (virtio0-config, virtio0-req.0), through the MSI-X capability.
    irqs = [l for l in out.splitlines() if l.startswith("VIREO-INIT: irq ")]
    assert any(re.search(r"PCI-MSI(X-0000:00:01\.0)? \S+\s+virtio0-req\.0$", l) for l in irqs), log
    assert re.search(r"^VIREO-INIT: msix cap at \d+ enable=1$", out, re.M), log
    assert f"VIREO-INIT: vda sector 7: {DISK_PATTERN.decode().strip()}" in out, log
    # The power button through ACPI, then S5.
    assert re.search(r"^VIREO-INIT: power button at /dev/input/event\d+$", out, re.M), log
    assert 'SHUTDOWN-REPLY={"id":1,"return":{}}' in out.replace(" ", ""), log
    assert "VIREO-INIT: power button pressed" in out, log
    bad = [l for l in out.splitlines() if re.search(r"ACPI (BIOS )?(Error|Warning)|\[Firmware Bug\]", l)]
    assert not bad, f"{bad}\n{log}"
    assert "VMM-EXIT=0" in out, log
