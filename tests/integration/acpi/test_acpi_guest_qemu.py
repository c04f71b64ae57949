"""The acpi_poweroff test guest under QEMU TCG (q35, QEMU's own ACPI tables and PM device), no KVM needed: checks
the guest's side on its own (RSDP scan, RSDT/XSDT walk, FADT PM1 blocks, \\_S5 from real firmware AML, the
power-button poll, the S5 write, the reset register), driven through QMP `system_powerdown`."""
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from vireo_testing import BUILD_DIR

GUEST = BUILD_DIR / "tests" / "guests" / "acpi_poweroff_pvh.elf"
QEMU = shutil.which("qemu-system-x86_64")


class Qemu:
    def __init__(self, tmp, cmdline=""):
        if not QEMU:
            pytest.skip("qemu-system-x86_64 not installed")
        if not GUEST.exists():
            pytest.skip(f"{GUEST} not built")
        self.qmp_path = str(tmp / "qmp.sock")
        self.out_path = tmp / "serial.txt"
        args = [QEMU, "-M", "q35", "-accel", "tcg", "-m", "64", "-display", "none", "-nodefaults", "-no-reboot",
                "-serial", f"file:{self.out_path}", "-device", "isa-debug-exit,iobase=0x501",
                "-kernel", str(GUEST), "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if cmdline:
            args += ["-append", cmdline]
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events = []
        end = time.monotonic() + 30
        while not os.path.exists(self.qmp_path):
            assert self.p.poll() is None and time.monotonic() < end, self.p.communicate()
            time.sleep(0.05)
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(self.qmp_path)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name):
        self.f.write(json.dumps({"execute": name}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def serial(self):
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def wait_line(self, line, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if line in self.serial().splitlines():
                return True
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        return line in self.serial().splitlines()

    def wait_exit(self, timeout=60):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return "hung"

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.s.close()


@pytest.fixture
def qemu(tmp_path):
    started = []

    def start(cmdline=""):
        q = Qemu(tmp_path, cmdline)
        started.append(q)
        return q

    yield start
    for q in started:
        q.close()


def test_walks_tables_and_powers_off(qemu):
    q = qemu()
    assert q.wait_line("acpi: waiting for the power button"), q.serial()
    out = q.serial().splitlines()
    assert out[0].startswith("acpi: rsdp=0x"), out
    assert any(l.startswith("acpi: madt lapics=1 ") and "sci_override=9/0xd" in l for l in out), out
    fadt = [l for l in out if l.startswith("acpi: fadt ")]
    assert fadt and "pm1a_evt=0x600 pm1a_cnt=0x604" in fadt[0] and "sci=9" in fadt[0], out  # q35's ICH9 PM block
    assert any(l.startswith("acpi: dsdt=0x") and " s5 slp_typ=" in l for l in out), out
    assert q.cmd("system_powerdown") == {"return": {}}
    rc = q.wait_exit()
    out = q.serial().splitlines()
    assert out[-2:] == ["acpi: power button", "acpi: entering S5"], out
    assert rc == 0, (rc, out)


def test_ignore_mode_keeps_running(qemu):
    q = qemu("ignore")
    assert q.wait_line("acpi: waiting for the power button (ignore mode)"), q.serial()
    q.cmd("system_powerdown")
    assert q.wait_line("acpi: power button ignored (1)"), q.serial()
    q.cmd("system_powerdown")
    assert q.wait_line("acpi: power button ignored (2)"), q.serial()
    time.sleep(0.5)
    assert q.p.poll() is None, q.serial()
    assert q.cmd("query-status")["return"]["status"] == "running"
    assert "acpi: entering S5" not in q.serial()


def test_reset_register(qemu):
    q = qemu("reset")
    rc = q.wait_exit()
    out = q.serial().splitlines()
    assert "acpi: resetting via the reset register" in out, out
    assert "acpi: still running after reset" not in out, out
    assert rc == 0, (rc, out)  # -no-reboot: QEMU exits on the guest's reset (debug-exit would give an odd code)
