"""Every test guest under QEMU TCG through its PVH entry: the same ELF files vireo-vmm boots.

QEMU's isa-debug-exit turns a guest status S into the exit code (S << 1) | 1."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BUILD_DIR = Path(os.environ.get("VIREO_BUILD_DIR", "build"))
GUESTS = BUILD_DIR / "tests" / "guests"
QEMU = shutil.which("qemu-system-x86_64")

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")


def guest(name: str) -> Path:
    p = GUESTS / f"{name}.elf"
    if not p.exists():
        pytest.fail(f"{p} not built (ninja vireo_test_guests)")
    return p


def qemu(name: str, machine="microvm", mem="64M", append="", extra=(), timeout=60, cpu="max", smp=1):
    args = [QEMU, "-accel", "tcg", "-M", machine, "-cpu", cpu, "-smp", str(smp), "-nodefaults", "-no-user-config", "-nographic",
            "-m", mem, "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-no-reboot",
            "-kernel", str(guest(name))]
    if append:
        args += ["-append", append]
    args += list(extra)
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    out = r.stdout.decode(errors="replace")
    # -M pc prints SeaBIOS banners/escape sequences before the guest: keep the guest's lines only.
    lines = [re.sub(r"^.*?(?=[a-zA-Z]+[:!]|Hello|e820\[)", "", l) if "Booting from ROM" in l else l
             for l in out.splitlines()]
    return r.returncode, lines, out + r.stderr.decode(errors="replace")


def debug_exit(status: int) -> int:
    return (status << 1) | 1


def test_hello():
    rc, lines, log = qemu("hello", append="foo=1 bar")
    assert rc == debug_exit(0), log
    assert lines[0] == "Hello from the Vireo test guest!", log
    assert lines[1] == 'hello: cpus=1 mem=63 MiB entry=pvh cmdline="foo=1 bar"', log


def test_hello_under_pc_machine_too():
    rc, lines, log = qemu("hello", machine="pc")
    assert rc == debug_exit(0), log
    assert "Hello from the Vireo test guest!" in lines, log


def test_hello32_under_qemu32_and_qemu64():
    # qemu32 is the model libvirt gives an i686 domain on an x86_64 host: no long mode, no SYSCALL.
    rc, lines, log = qemu("hello32", cpu="qemu32", append="a=1 b")
    assert rc == debug_exit(0), log
    assert lines == ["Hello from the Vireo 32-bit test guest!", 'hello32: entry=pvh32 mem=63 MiB cmdline="a=1 b"',
                     "hello32: cpuid 80000001: lm=0 syscall=0",
                     "hello32: 32-bit protected mode, paging off, no long mode"], log
    rc, lines, log = qemu("hello32", cpu="qemu64")
    assert rc == debug_exit(0x18), log
    assert lines[2:] == ["hello32: cpuid 80000001: lm=1 syscall=1", "hello32: long mode is visible"], log


def test_smp_single_cpu_under_pvh():
    rc, lines, log = qemu("smp")
    assert rc == debug_exit(0), log
    assert lines == ["smp: cpu 0 checked in", "smp: 1 of 1 vCPUs checked in"], log


@pytest.mark.parametrize("machine,n", [("microvm", 2), ("microvm", 4), ("pc", 3)])
def test_smp_runtime_starts_aps_under_pvh(machine, n):
    # PVH starts only the BSP: the runtime finds the APs (ACPI MADT, else MP table) and sends INIT-SIPI-SIPI.
    rc, lines, log = qemu("smp", machine=machine, smp=n)
    assert rc == debug_exit(0), log
    assert sorted(l for l in lines if l.startswith("smp: cpu")) == sorted(f"smp: cpu {i} checked in" for i in range(n)), log
    assert lines[-1] == f"smp: {n} of {n} vCPUs checked in", log


def test_smp_nosmp_keeps_one_cpu():
    rc, lines, log = qemu("smp", smp=2, append="nosmp")
    assert rc == debug_exit(0), log
    assert lines[-1] == "smp: 1 of 1 vCPUs checked in", log


def test_meminfo_reports_qemu_memory_map():
    rc, lines, log = qemu("meminfo", mem="128M")
    assert rc == debug_exit(0), log
    m = re.match(r"meminfo: mem_size=0x([0-9a-f]+) \((\d+) MiB\) e820_count=(\d+)$", lines[0])
    assert m, log
    entries = [re.match(r"e820\[(\d+)\]: addr=0x([0-9a-f]{16}) size=0x([0-9a-f]{16}) type=(\d+)$", l)
               for l in lines[1:1 + int(m.group(3))]]
    assert all(entries), log
    ram = sum(int(e.group(3), 16) for e in entries if e.group(4) == "1")
    assert ram == int(m.group(1), 16), log
    # 128 MiB minus what QEMU keeps below 1 MiB
    assert 127 << 20 <= ram <= 128 << 20, log
    assert any(int(e.group(2), 16) == 0x100000 and e.group(4) == "1" for e in entries), log
    assert lines[-1] == "meminfo: probe ok", log


def _cpuid_leaves(lines):
    leaves = {}
    for l in lines:
        m = re.match(r"cpuid ([0-9a-f]{8})\.(\d+): eax=([0-9a-f]{8}) ebx=([0-9a-f]{8}) ecx=([0-9a-f]{8}) edx=([0-9a-f]{8})$", l)
        if m:
            leaves[int(m.group(1), 16)] = tuple(int(m.group(i), 16) for i in range(3, 7))
    return leaves


def test_cpuid_shows_the_cpu_model():
    rc, lines, log = qemu("cpuid", cpu="qemu64")
    assert rc == debug_exit(0), log
    assert lines[0] == "cpuid: vendor=AuthenticAMD", log  # QEMU's qemu64 under TCG
    leaves = _cpuid_leaves(lines)
    assert {0, 1, 0x80000001} <= set(leaves), log
    ecx1, edx1 = leaves[1][2], leaves[1][3]
    assert edx1 & (1 << 26), "sse2"
    assert not ecx1 & (1 << 28), "qemu64 has no avx"
    assert leaves[0x80000001][3] & (1 << 29), "long mode"
    rc, lines, log = qemu("cpuid", cpu="max")
    assert rc == debug_exit(0), log
    assert "cpuid: hypervisor=TCGTCGTCGTCG" in lines, log


def test_irq_lapic_timer_and_serial():
    rc, lines, log = qemu("irq")
    assert rc == debug_exit(0), log
    assert "irq: lapic timer vector 0x40 received (count 1)" in lines, log
    assert "irq: serial thre vector 0x41 received (count 1)" in lines, log
    assert lines[-1] == "irq: ok", log


def test_irq_timeout_is_reported():
    # No LAPIC timer interrupt when the timer is masked by a zero count: expect the documented failure code.
    rc, lines, log = qemu("irq", append="lapic timer_count=0 timeout_mcycles=50")
    assert rc == debug_exit(0x13), log
    assert "irq: timeout waiting for lapic timer" in lines, log


@pytest.mark.parametrize("name", ["pio_loop", "mmio_loop"])
def test_exit_loops(name):
    rc, lines, log = qemu(name, append="n=1000")
    assert rc == debug_exit(0), log
    assert lines[0].startswith(f"{name}: n=1000"), log
    assert lines[-1] == f"{name}: done", log


def test_reset_stops_the_machine():
    # -M pc has the i8042; with -no-reboot QEMU exits (status 0) on the reset request.
    rc, lines, log = qemu("reset", machine="pc")
    assert "reset: pulsing i8042 reset line" in lines, log
    assert "reset: still running" not in log, log
    assert rc == 0, log


def test_triple_fault_stops_the_machine():
    rc, lines, log = qemu("triple")
    assert lines[-1] == "triple: faulting", log
    assert rc == 0, log


def test_spin_ticks_until_killed():
    p = subprocess.Popen([QEMU, "-accel", "tcg", "-M", "microvm", "-nodefaults", "-nographic", "-m", "64M",
                          "-serial", "stdio", "-kernel", str(guest("spin")), "-append", "period=20"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        got = []
        while len(got) < 5:
            line = p.stdout.readline().decode().rstrip("\n")
            if not line:
                break
            got.append(line)
    finally:
        p.kill()
        p.wait()
    assert got == ["spin: start", "spin: tick 0", "spin: tick 1", "spin: tick 2", "spin: tick 3"]


def test_bad_cmdline_number():
    rc, lines, log = qemu("pio_loop", append="n=12x")
    assert rc == debug_exit(0x17), log
    assert "guest: bad number in cmdline argument n" in lines, log
