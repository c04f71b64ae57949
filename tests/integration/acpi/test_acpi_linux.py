"""The real Debian kernel on our ACPI tables (docs/acpi.md): ACPICA parses RSDP/XSDT/FADT/DSDT/MADT without
complaint, finds the PM timer, the SCI override and \\_S5, finds the CPU in the MADT (one vCPU: see docs/acpi.md); the initramfs
loads the ACPI button driver and waits for a key event from "Power Button"; the control socket's `shutdown`
presses it (PWRBTN_STS + SCI on IRQ 9 -> Linux's fixed-event handler -> input event); init then runs
`poweroff -f`, which powers off through S5 (PM1a_CNT), so the VMM exits 0. One VM (~1-2 min in the kit).

Uses vireo-vmm when it has ACPI (probed with the acpi_poweroff guest's reset mode: exit 2), otherwise the
test-only vireo-vmm-acpi-wired; skipped when neither has ACPI, or without KVM."""
import os
import re
import shlex
import sys

import pytest

import vireo_testing as vt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "guests"))
from test_linux_vmm import _cpio_newc, _kernel, _static_busybox  # noqa: E402

INIT = """#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
echo "VIREO-INIT: up nproc=$($B nproc)"
$B dmesg | $B grep -E "ACPI|smp: |Firmware Bug"
$B insmod /evdev.ko
$B insmod /button.ko
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


def test_linux_powers_off_through_s5(tmp_path):
    vt.require_kvm(unmodified=True)
    kernel = _kernel()
    if not kernel or not os.access(kernel, os.R_OK):
        pytest.skip("no readable /boot/vmlinuz-*")
    busybox = _static_busybox()
    if busybox is None:
        pytest.skip("no static busybox (apt-get install busybox-static)")
    guest = vt.BUILD_DIR / "tests" / "guests" / "acpi_poweroff.elf"
    vmms = [p for p in (vt.BUILD_DIR / "vireo-vmm", vt.BUILD_DIR / "tests" / "vireo-vmm-acpi-wired") if p.exists()]
    if not guest.exists() or not vmms:
        pytest.skip("acpi_poweroff.elf or vireo-vmm not built")
    release = os.path.basename(kernel)[len("vmlinuz-"):]
    mods = {}
    for name, rel in (("button", "acpi/button.ko"), ("evdev", "input/evdev.ko")):
        path = f"/lib/modules/{release}/kernel/drivers/{rel}"
        if not os.path.exists(path):
            pytest.skip(f"{path} not found (uncompressed module needed)")
        with open(path, "rb") as f:
            mods[name] = f.read()
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(_cpio_newc([("bin", 0o040755, b""), ("proc", 0o040755, b""), ("sys", 0o040755, b""),
                                   ("dev", 0o040755, b""), ("bin/busybox", 0o100755, busybox),
                                   ("button.ko", 0o100644, mods["button"]),
                                   ("evdev.ko", 0o100644, mods["evdev"]), ("init", 0o100755, INIT.encode())]))
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    script = " ".join(shlex.quote(str(x)) for x in [py, DRIVER, guest, kernel, initrd, tmp_path, *vmms]) + "\n"
    r = vt.run_kvm_script(script, timeout=420, files=[tmp_path], unmodified=True)
    out = r.stdout.decode(errors="replace")
    if "NO-ACPI-VMM" in out:
        pytest.skip("vireo-vmm has no ACPI yet and vireo-vmm-acpi-wired is not built")
    log = f"{r.text()}\n{out[-8000:]}"
    assert not r.timed_out, log
    for line in ["ACPI: RSDP 0x00000000000F8000 000024 (v02 VIREO )",
                 "ACPI: PM-Timer IO Port: 0x608",
                 "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
                 "ACPI: Using ACPI (MADT) for SMP configuration information",
                 "ACPI: 1 ACPI AML tables successfully acquired and loaded",
                 "ACPI: PM: (supports S0 S5)",
                 "reboot: Power down"]:
        assert line in out, f"missing {line!r}\n{log}"
    assert "VIREO-INIT: up nproc=1" in out, log
    assert re.search(r"^VIREO-INIT: power button at /dev/input/event\d+$", out, re.M), log
    assert 'SHUTDOWN-REPLY={"id":1,"return":{}}' in out.replace(" ", ""), log
    assert "VIREO-INIT: power button pressed" in out, log
    bad = [l for l in out.splitlines() if re.search(r"ACPI (BIOS )?(Error|Warning)|\[Firmware Bug\]", l)]
    assert not bad, f"{bad}\n{log}"
    assert "VMM-EXIT=0" in out, log
