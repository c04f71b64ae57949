"""vireo-vmm booting test guests on KVM (host /dev/kvm, else the KVM kit; skipped when neither exists).

All guest runs happen in ONE kit session (each kit boot costs seconds): the module fixture runs a shell script
that starts vireo-vmm once per case (each under `timeout`), storing stdout/stderr/exit status per case in a
shared temporary folder; the tests then assert on those files."""
import re
import shlex

import pytest

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script

GUESTS = BUILD_DIR / "tests" / "guests"
EXIT_GUEST = BUILD_DIR / "tests" / "integration" / "vmm" / "exit_guest.elf"

CASES = {
    "hello": ["--kernel", GUESTS / "hello.elf", "--memory", "64M", "--cpus", "2"],
    "hello_cmdline": ["--kernel", GUESTS / "hello.elf", "--memory", "64M", "--cmdline", "answer=42 quiet"],
    "smp2": ["--kernel", GUESTS / "smp.elf", "--memory", "64M", "--cpus", "2"],
    "smp4": ["--kernel", GUESTS / "smp.elf", "--memory", "64M", "--cpus", "4"],
    "exit": ["--kernel", EXIT_GUEST, "--memory", "16M"],
    "reset": ["--kernel", GUESTS / "reset.elf", "--memory", "32M"],
    "triple": ["--kernel", GUESTS / "triple.elf", "--memory", "32M"],
    "toomany": ["--kernel", GUESTS / "hello.elf", "--memory", "32M", "--cpus", "4000"],
    "native_off": ["--kernel", GUESTS / "hello.elf", "--memory", "32M", "--native", "off"],
    "highmem": ["--kernel", GUESTS / "hello.elf", "--memory", "3584M"],
    # Interrupts: the UART's THR-empty IRQ 4 (KVM_IRQ_LINE -> IOAPIC) and the in-kernel LAPIC timer.
    "irq": ["--kernel", GUESTS / "irq.elf", "--memory", "32M", "--native", "off"],
    "pty": ["--kernel", GUESTS / "hello.elf", "--memory", "32M", "--serial", "pty"],
    "hugepages": ["--kernel", GUESTS / "hello.elf", "--memory", "size=64M,hugepages=on"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_kvm()
    for g in [GUESTS / "hello.elf", GUESTS / "smp.elf", EXIT_GUEST]:
        if not g.exists():
            pytest.skip(f"{g} not built")
    out = tmp_path_factory.mktemp("vmm-guests")
    lines = ["VMM=" + shlex.quote(str(BUILD_DIR / "vireo-vmm")),
             "run() { n=$1; shift; timeout 60 \"$VMM\" \"$@\" >" + shlex.quote(str(out)) + "/$n.out 2>"
             + shlex.quote(str(out)) + "/$n.err </dev/null; echo $? >" + shlex.quote(str(out)) + "/$n.rc; }"]
    for name, args in CASES.items():
        lines.append("run " + name + " " + " ".join(shlex.quote(str(a)) for a in args))
    # Serial to a file and boot markers to a log file.
    lines.append("run serialfile --kernel " + shlex.quote(str(GUESTS / "hello.elf")) + " --memory 32M --serial file="
                 + shlex.quote(str(out / "serial.log")) + " --boot-log " + shlex.quote(str(out / "boot.log")))
    r = run_kvm_script("\n".join(lines) + "\n", timeout=600, files=[out])
    assert not r.timed_out, r.text()
    results = {}
    for name in list(CASES) + ["serialfile"]:
        rc = (out / f"{name}.rc").read_text().strip() if (out / f"{name}.rc").exists() else "missing"
        results[name] = (int(rc) if rc.lstrip("-").isdigit() else None,
                         (out / f"{name}.out").read_bytes().decode(errors="replace") if (out / f"{name}.out").exists() else "",
                         (out / f"{name}.err").read_bytes().decode(errors="replace") if (out / f"{name}.err").exists() else "")
    results["_dir"] = out
    return results


def show(res):
    rc, out, err = res
    return f"rc={rc}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


def test_hello_prints_greeting_and_exits_0(runs):
    res = runs["hello"]
    assert res[0] == 0, show(res)
    assert "Hello from the Vireo test guest!" in res[1]
    assert "hello: cpus=2 mem=64 MiB entry=vireo64" in res[1]


def test_cmdline_reaches_the_guest(runs):
    res = runs["hello_cmdline"]
    assert res[0] == 0, show(res)
    assert 'cmdline="answer=42 quiet"' in res[1], show(res)


def test_boot_markers_logged_with_timestamps(runs):
    rc, out, err = runs["hello"]
    marks = re.findall(r"^boot-marker (\d+) at (\d+)$", err, re.M)
    assert [m[0] for m in marks][:2] == ["1", "2"], err
    assert int(marks[0][1]) <= int(marks[1][1])


@pytest.mark.parametrize("name,n", [("smp2", 2), ("smp4", 4)])
def test_smp_every_vcpu_checks_in(runs, name, n):
    res = runs[name]
    assert res[0] == 0, show(res)
    assert f"smp: {n} of {n} vCPUs checked in" in res[1]
    for cpu in range(n):
        assert f"smp: cpu {cpu} checked in" in res[1]


def test_debug_exit_status_becomes_exit_code(runs):
    res = runs["exit"]
    assert "exit-guest: vCPU 0" in res[1], show(res)
    assert res[0] == 0x5a, show(res)


def test_i8042_reset_exits_2(runs):
    res = runs["reset"]
    assert "reset: pulsing i8042 reset line" in res[1], show(res)
    assert "still running" not in res[1]
    assert res[0] == 2, show(res)


def test_triple_fault_is_a_crash_with_registers(runs):
    res = runs["triple"]
    assert res[0] == 3, show(res)
    assert "triple: faulting" in res[1]
    assert "still running" not in res[1]
    err = res[2]
    assert "guest crashed: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)" in err, err
    for reg in ["RIP=", "RSP=", "RFLAGS=", "CR0=", "CR3=", "EFER=", "CS "]:
        assert reg in err, err


def test_more_vcpus_than_kvm_allows(runs):
    rc, out, err = runs["toomany"]
    assert rc == 1, show(runs["toomany"])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vireo-vmm: error: --cpus 4000"), err
    assert "vCPUs" in lines[0]


def test_native_off_still_boots(runs):
    res = runs["native_off"]
    assert res[0] == 0, show(res)
    assert "Hello from the Vireo test guest!" in res[1]


def test_ram_above_the_mmio_hole(runs):
    res = runs["highmem"]
    assert res[0] == 0, show(res)
    assert "hello: cpus=1 mem=3584 MiB" in res[1], show(res)


def test_serial_file_and_boot_log(runs):
    res = runs["serialfile"]
    assert res[0] == 0, show(res)
    assert res[1] == ""  # nothing on stdout: serial went to the file
    d = runs["_dir"]
    assert "Hello from the Vireo test guest!" in (d / "serial.log").read_text()
    assert re.search(r"^boot-marker 1 at \d+$", (d / "boot.log").read_text(), re.M)
    assert "boot-marker" not in res[2]


def test_serial_and_lapic_interrupts_are_delivered(runs):
    res = runs["irq"]
    assert res[0] == 0, show(res)
    assert "irq: serial thre vector 0x41 received" in res[1], show(res)
    assert "irq: lapic timer vector 0x40 received" in res[1], show(res)
    assert "irq: ok" in res[1]


def test_pty_serial_prints_its_path(runs):
    rc, out, err = runs["pty"]
    assert rc == 0, show(runs["pty"])
    assert re.search(r"^vireo-vmm: serial0: /dev/pts/\d+$", err, re.M), err
    assert out == ""  # guest output went to the pty, not stdout


def test_hugepages_boot_or_fail_clearly(runs):
    rc, out, err = runs["hugepages"]
    if rc == 0:  # this KVM host has 2 MiB hugepages reserved
        assert "Hello from the Vireo test guest!" in out
    else:
        assert rc == 1, show(runs["hugepages"])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "guest memory" in lines[0] and "huge" in lines[0], err
