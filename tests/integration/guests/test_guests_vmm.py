"""The test guests through vireo-vmm on real KVM (here: the KVM kit, QEMU TCG with nested SVM).

Acceptance of issue 2: hello with --memory 64M --cpus 2 prints the greeting and exits 0; the smp guest sees 2
and 4 vCPUs; the debug-exit status becomes the exit code; CPUID per mode (custom=qemu64 hides what
host-passthrough shows). To keep kit boots few, most cases run in one kit VM (one script, one vireo-vmm per
case, each under `timeout`); hello also runs alone through run_vmm."""
import os
import re
import shlex

import pytest

import vireo_testing as vt

GUESTS = vt.BUILD_DIR / "tests" / "guests"
VMM = vt.BUILD_DIR / "vireo-vmm"

# name -> (guest, vireo-vmm arguments)
CASES = {
    "hello2": ("hello", ["--memory", "64M", "--cpus", "2", "--cmdline", "a=1 b"]),
    "hello_pvh": ("hello_pvh", ["--memory", "64M"]),
    "smp2": ("smp", ["--memory", "64M", "--cpus", "2"]),
    "smp4": ("smp", ["--memory", "64M", "--cpus", "4"]),
    "smp_pvh2": ("smp_pvh", ["--memory", "64M", "--cpus", "2"]),
    "smp_pvh4": ("smp_pvh", ["--memory", "64M", "--cpus", "4"]),
    "meminfo": ("meminfo", ["--memory", "128M"]),
    "status": ("pio_loop", ["--memory", "64M", "--cmdline", "n=12x"]),
    "pio": ("pio_loop", ["--memory", "64M", "--cmdline", "n=2000"]),
    "mmio": ("mmio_loop", ["--memory", "64M", "--cmdline", "n=2000"]),
    "qemu64": ("hello", ["--memory", "64M", "--cpu", "custom=qemu64"]),
    "qemu64_enforce": ("hello", ["--memory", "64M", "--cpu", "custom=qemu64,enforce"]),
    "irq": ("irq", ["--memory", "64M", "--native", "off", "--cmdline", "lapic"]),
    "reset": ("reset", ["--memory", "64M"]),
    "triple": ("triple", ["--memory", "64M"]),
}
# CPUID as the VMM sets it: PVM (kvm_pvm) shows the guest its own leaf 1/7 feature bits whatever KVM_SET_CPUID2
# said, so these run where KVM has hardware semantics (the kit on a PVM host: unmodified=True).
HW_CASES = {
    "cpuid_pass": ("cpuid", ["--memory", "64M", "--cpu", "host-passthrough", "--native", "off"]),
    "cpuid_qemu64": ("cpuid", ["--memory", "64M", "--cpu", "custom=qemu64", "--native", "off"]),
}
SUPPORTED_CPUID = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kvm_supported_cpuid.py")


def _require_built():
    missing = [p for p in [VMM] + [GUESTS / f"{g}.elf" for g, _ in list(CASES.values()) + list(HW_CASES.values())] if not p.exists()]
    if missing:
        pytest.fail(f"not built: {', '.join(map(str, missing))}")


def _run_cases(cases, out, unmodified=False, extra=""):
    lines = ["cd /"]
    for name, (g, args) in cases.items():
        cmd = " ".join(shlex.quote(str(x)) for x in [VMM, "--kernel", GUESTS / f"{g}.elf", *args])
        lines.append(f"timeout -s KILL 90 {cmd} </dev/null >{out}/{name}.out 2>{out}/{name}.err; "
                     f"echo $? >{out}/{name}.rc")
    r = vt.run_kvm_script("\n".join(lines) + "\n" + extra, timeout=600, files=[out], unmodified=unmodified)
    assert not r.timed_out, r.text() if hasattr(r, "text") else r.stderr
    res = {}
    for name in cases:
        rc_file = out / f"{name}.rc"
        rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
        res[name] = (rc, (out / f"{name}.out").read_text(errors="replace") if (out / f"{name}.out").exists() else "",
                     (out / f"{name}.err").read_text(errors="replace") if (out / f"{name}.err").exists() else "")
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    vt.require_kvm()
    _require_built()
    out = tmp_path_factory.mktemp("vmm-guests")
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    res = _run_cases(CASES, out, extra=f"{py} {SUPPORTED_CPUID} >{out}/supported.txt\n")
    res["supported"] = (out / "supported.txt").read_text()
    return res


@pytest.fixture(scope="module")
def hw_runs(tmp_path_factory):
    vt.require_kvm(unmodified=True)
    _require_built()
    return _run_cases(HW_CASES, tmp_path_factory.mktemp("vmm-guests-hw"), unmodified=True)


def _get(runs, name):
    rc, out, err = runs[name]
    return rc, out.splitlines(), f"exit {rc}\n--- stdout\n{out}\n--- stderr\n{err}"


def test_hello_acceptance_via_run_vmm():
    vt.require_kvm()
    _require_built()
    r = vt.run_vmm(["--kernel", str(GUESTS / "hello.elf"), "--memory", "64M", "--cpus", "2"], timeout=120)
    out = r.stdout.decode(errors="replace")
    log = f"exit {r.returncode} route {r.route}\n{out}\n{r.stderr.decode(errors='replace')}"
    assert r.returncode == 0, log
    assert out.splitlines()[:2] == ["Hello from the Vireo test guest!",
                                    'hello: cpus=2 mem=64 MiB entry=vireo64 cmdline=""'], log


def test_hello_cmdline_and_cpus(runs):
    rc, lines, log = _get(runs, "hello2")
    assert rc == 0, log
    assert lines[:2] == ["Hello from the Vireo test guest!", 'hello: cpus=2 mem=64 MiB entry=vireo64 cmdline="a=1 b"'], log


PVM_NOTE = ("vireo-vmm: note: /dev/kvm is PVM (kvm_pvm, no hardware virtualization): this guest does not start in "
            "64-bit mode with vireo's page tables, so it runs in PVM's instruction emulator (very slow; unmodified "
            "kernels and firmware stop on instructions it lacks)")


def test_pvm_note_once_for_guests_that_cannot_run_natively(runs):
    """On a PVM host a guest entered the way unmodified kernels are (here: PVH, 32-bit) runs emulated: one note
    on stderr says so. Test guests entered in long mode run natively and get none; hardware KVM never does."""
    on_pvm = vt.kvm_route()[0] == "host" and vt.host_kvm_is_pvm()
    for name, want in (("hello_pvh", [PVM_NOTE] if on_pvm else []), ("hello2", []), ("smp_pvh4", [PVM_NOTE] if on_pvm else [])):
        rc, _, log = _get(runs, name)
        assert rc == 0, log
        assert [l for l in runs[name][2].splitlines() if "note" in l] == want, log


def test_hello_through_vmm_pvh_path(runs):
    rc, lines, log = _get(runs, "hello_pvh")
    assert rc == 0, log
    assert lines[0] == "Hello from the Vireo test guest!", log
    m = re.match(r'hello: cpus=1 mem=(\d+) MiB entry=pvh cmdline=""$', lines[1])
    assert m and 62 <= int(m.group(1)) <= 64, log


# smp_pvh: vireo-vmm's PVH path starts only the BSP; the guest runtime reads the MP table vireo wrote and
# starts the APs with INIT-SIPI-SIPI through the in-kernel LAPIC.
@pytest.mark.parametrize("name,n", [("smp2", 2), ("smp4", 4), ("smp_pvh2", 2), ("smp_pvh4", 4)])
def test_smp_every_vcpu_checks_in(runs, name, n):
    rc, lines, log = _get(runs, name)
    assert rc == 0, log
    assert sorted(l for l in lines if l.endswith("checked in") and l.startswith("smp: cpu")) == \
        sorted(f"smp: cpu {i} checked in" for i in range(n)), log
    assert lines[-1] == f"smp: {n} of {n} vCPUs checked in", log


def test_meminfo_matches_the_vmm_e820(runs):
    rc, lines, log = _get(runs, "meminfo")
    assert rc == 0, log
    assert lines[0] == "meminfo: mem_size=0x8000000 (128 MiB) e820_count=5", log
    assert lines[1:6] == [
        "e820[0]: addr=0x0000000000000000 size=0x000000000009fc00 type=1",
        "e820[1]: addr=0x000000000009fc00 size=0x0000000000000400 type=2",
        "e820[2]: addr=0x00000000000f0000 size=0x0000000000010000 type=2",
        "e820[3]: addr=0x0000000000100000 size=0x0000000007f00000 type=1",
        # the PCI root's ECAM (default --transport pci), reserved so Linux uses the MCFG (docs/acpi.md)
        "e820[4]: addr=0x00000000e0000000 size=0x0000000000100000 type=2",
    ], log
    assert lines[-1] == "meminfo: probe ok", log


def test_debug_exit_status_becomes_exit_code(runs):
    rc, lines, log = _get(runs, "status")
    assert rc == 0x17, log
    assert "guest: bad number in cmdline argument n" in lines, log


@pytest.mark.parametrize("name", ["pio", "mmio"])
def test_exit_loops_complete(runs, name):
    rc, lines, log = _get(runs, name)
    assert rc == 0, log
    assert lines[-1].endswith("_loop: done"), log


def _leaves(lines):
    d = {}
    for l in lines:
        m = re.match(r"cpuid ([0-9a-f]{8})\.(\d+): eax=([0-9a-f]{8}) ebx=([0-9a-f]{8}) ecx=([0-9a-f]{8}) edx=([0-9a-f]{8})$", l)
        if m:
            d[int(m.group(1), 16)] = [int(m.group(i), 16) for i in range(3, 7)]
    return d


def test_cpuid_custom_qemu64_hides_what_passthrough_shows(hw_runs):
    rc, plines, plog = _get(hw_runs, "cpuid_pass")
    assert rc == 0, plog
    rc, qlines, qlog = _get(hw_runs, "cpuid_qemu64")
    assert rc == 0, qlog
    p, q = _leaves(plines), _leaves(qlines)
    for lines, log in ((plines, plog), (qlines, qlog)):
        assert "cpuid: hypervisor=KVMKVMKVM" in lines, log
    # (leaf, register index, bit, name): features qemu64 lacks
    modern = [(1, 2, 28, "avx"), (1, 2, 25, "aes"), (1, 2, 19, "sse4.1"), (1, 2, 23, "popcnt"), (7, 1, 5, "avx2"),
              (7, 1, 3, "bmi1"), (0x80000001, 3, 27, "rdtscp")]
    shown = [n for l, r, b, n in modern if l in p and p[l][r] >> b & 1]
    assert shown, f"host-passthrough shows none of the modern features:\n{plog}"
    for l, r, b, n in modern:
        if l in q:
            assert not q[l][r] >> b & 1, f"{n} visible with custom=qemu64\n{qlog}"
    assert q[1][3] >> 26 & 1 and q[0x80000001][3] >> 29 & 1, "qemu64 keeps sse2 and lm\n" + qlog
    assert q[0][0] <= 0xd, qlog
    assert q[1][0] == 0x00060fb1, qlog  # family 15 model 107 stepping 1


# qemu64's features as (name, leaf, register index eax=0..edx=3, bit), in the model's order (src/cpu).
QEMU64 = [(n, 1, 3, b) for n, b in [("fpu", 0), ("de", 2), ("pse", 3), ("tsc", 4), ("msr", 5), ("pae", 6),
                                     ("mce", 7), ("cx8", 8), ("apic", 9), ("sep", 11), ("pge", 13), ("cmov", 15),
                                     ("pat", 16), ("mmx", 23), ("fxsr", 24), ("sse", 25), ("sse2", 26),
                                     ("mtrr", 12), ("clflush", 19), ("mca", 14), ("pse36", 17)]] + \
    [("sse3", 1, 2, 0), ("cx16", 1, 2, 13), ("lm", 0x80000001, 3, 29), ("syscall", 0x80000001, 3, 11),
     ("nx", 0x80000001, 3, 20), ("lahf_lm", 0x80000001, 2, 0)]


def test_cpuid_custom_model_drops_what_kvm_lacks_with_one_warning(runs):
    """QEMU's behaviour without enforce: the model's features KVM cannot offer (e.g. sse3 on a PVM host) are
    dropped with one warning naming them; with enforce (libvirt's check='full') the VMM refuses to start.
    The oracle is KVM_GET_SUPPORTED_CPUID, read independently (kvm_supported_cpuid.py) on the same machine."""
    sup = {}
    for line in runs["supported"].splitlines():
        key, *regs = line.split()
        fn, idx = key.split(".")
        sup[(int(fn, 16), int(idx))] = [int(x, 16) for x in regs]
    assert (1, 0) in sup, runs["supported"]
    missing = [n for n, leaf, r, b in QEMU64 if not ((leaf, 0) in sup and sup[(leaf, 0)][r] >> b & 1)]
    rc, lines, log = _get(runs, "qemu64")
    assert rc == 0 and lines[0] == "Hello from the Vireo test guest!", log
    warnings = [l for l in runs["qemu64"][2].splitlines() if "warning" in l]
    erc, elines, elog = _get(runs, "qemu64_enforce")
    if missing:
        it = "it" if len(missing) == 1 else "them"
        assert warnings == [f"vireo-vmm: warning: cpu: model qemu64: the host (KVM) lacks {', '.join(missing)}; "
                            f"running without {it}"], log
        assert erc == 1, elog
        assert [l for l in runs["qemu64_enforce"][2].splitlines() if "error" in l] == [
            f"vireo-vmm: error: cpu: model qemu64 needs features the host (KVM) lacks: {', '.join(missing)} (enforce)"], elog
        assert elines == [], elog
    else:
        assert warnings == [], log
        assert erc == 0 and elines[0] == "Hello from the Vireo test guest!", elog


def test_irq_lapic_timer_emulated(runs):
    rc, lines, log = _get(runs, "irq")
    assert rc == 0, log
    assert "irq: lapic timer vector 0x40 received (count 1)" in lines, log
    assert lines[-1] == "irq: ok", log


def test_reset_exits_2(runs):
    rc, lines, log = _get(runs, "reset")
    assert rc == 2, log
    assert lines == ["reset: pulsing i8042 reset line"], log


def test_triple_fault_exits_3(runs):
    rc, lines, log = _get(runs, "triple")
    assert rc == 3, log
    assert lines == ["triple: faulting"], log
