"""Tests of the KVM kit: the run_vmm/run_kvm_script plumbing, and real KVM ioctls through it."""

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import vireo_testing as vt

HERE = Path(__file__).resolve().parent


# ---- no KVM needed: the pieces the kit is built from -------------------------------------------------------

def test_paths_are_absolute():
    assert vt.BUILD_DIR.is_absolute() and vt.SOURCE_DIR.is_absolute()
    assert (vt.SOURCE_DIR / "tests" / "support" / "vireo_testing.py").exists()


def test_route_is_well_formed():
    route, why = vt.kvm_route()
    assert route in ("host", "kit", "none")
    assert why


def test_forced_route_none(monkeypatch):
    monkeypatch.setenv("VIREO_KVM_ROUTE", "none")
    vt.kvm_route.cache_clear()
    try:
        assert vt.kvm_route() == ("none", "VIREO_KVM_ROUTE=none")
        with pytest.raises(pytest.skip.Exception, match="no /dev/kvm"):
            vt.require_kvm()
    finally:
        monkeypatch.delenv("VIREO_KVM_ROUTE")
        vt.kvm_route.cache_clear()


def test_unmodified_guests_avoid_a_pvm_dev_kvm():
    """A PVM /dev/kvm (kvm_pvm) runs only Vireo's own test guests: unmodified kernels/firmware take the kit."""
    route, _ = vt.kvm_route()
    uroute, uwhy = vt.kvm_route(unmodified=True)
    usable, _ = vt._host_kvm_status()
    # Independent oracle for the MSR probe: the kvm_pvm module serves /dev/kvm.
    assert vt.host_kvm_is_pvm() == (usable and os.path.isdir("/sys/module/kvm_pvm"))
    if vt.host_kvm_is_pvm() and not os.environ.get("VIREO_KVM_ROUTE"):
        assert route == "host"
        assert uroute in ("kit", "none") and "PVM" in uwhy, uwhy
    else:
        assert (uroute, uwhy) == (route, vt.kvm_route()[1])


def test_cpio_newc_round_trip(tmp_path):
    data = vt._cpio_newc([("bin", 0o40755, None), ("bin/x", 0o100755, b"hello"), ("odd", 0o100644, b"123")])
    assert len(data) % 4 == 0
    if shutil.which("cpio") is None:
        pytest.skip("cpio tool not installed")
    listing = subprocess.run(["cpio", "-it"], input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             check=True).stdout.decode().split()
    assert listing == ["bin", "bin/x", "odd"]
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "bin" / "x").read_bytes() == b"hello"
    assert os.access(tmp_path / "bin" / "x", os.X_OK)
    assert (tmp_path / "odd").read_bytes() == b"123"


def test_share_roots_dedupes_nested_and_refuses_root(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f.img").write_bytes(b"x")
    roots = vt._share_roots([tmp_path / "a" / "b", tmp_path / "a", tmp_path / "a" / "f.img",
                             tmp_path / "a" / "missing" / "deeper"])
    assert roots == [tmp_path / "a"]
    with pytest.raises(vt.KitError):
        vt._share_roots([Path("/")])


def test_paths_in_vmm_args(tmp_path):
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"")
    found = vt._paths_in_args(["--disk", f"path={disk},format=qcow2", "--memory", "64M",
                               "--kernel", str(tmp_path / "k.elf")])
    assert tmp_path in found
    assert all(p.exists() for p in found)


def test_modules_resolve_with_dependencies():
    inputs, why = vt._find_kit_inputs()
    if inputs is None:
        pytest.skip(f"kit inputs missing: {why}")
    order = vt._resolve_modules(inputs.moddir, ["kvm_amd"])
    names = [os.path.basename(m).split(".ko")[0] for m in order]
    assert names[-1] == "kvm-amd"
    assert names.index("kvm") < names.index("kvm-amd")
    assert names.index("irqbypass") < names.index("kvm")


def test_host_route_runner_plumbing(tmp_path):
    """The host route's runner (used where /dev/kvm works) with a plain shell: status, streams, stdin, env,
    a missing program, and a timeout that kills the whole process group (the grandchild too)."""
    env = vt._merged_env({"KIT_X": "y z"})
    r = vt._run_host(["/bin/sh", "-c", 'read a; echo "$a $KIT_X"; echo e >&2; exit 4'], 30, b"in\n", env)
    assert (r.returncode, r.stdout, r.stderr, r.route, r.timed_out) == (4, b"in y z\n", b"e\n", "host", False)
    assert vt._run_host([str(tmp_path / "missing")], 30, None, env).returncode == 127
    pidfile = tmp_path / "grandchild.pid"
    r = vt._run_host(["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; wait"], 2, None, env)
    assert r.returncode is None and r.timed_out and r.stdout == b"started\n"
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {pid} survived the timeout")


# ---- through /dev/kvm (host or kit) -------------------------------------------------------------------------

def test_realmode_guest_writes_port(tmp_path):
    """A C program opens /dev/kvm, checks API 12, creates a VM and vCPUs and runs real-mode code that writes
    3+4(+vCPU index) as an ASCII digit to port 0x3f8 and halts: the port bytes must come back exactly. Then
    the same with 4 vCPUs in parallel threads (an SMP guest)."""
    vt.require_kvm()
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "kvm_realmode"
    subprocess.run([cc, "-Wall", "-Wextra", "-Werror", "-O1", "-pthread", "-o", str(exe),
                    str(HERE / "kvm_realmode.c")], check=True)
    r = vt.run_kvm_script(f"{exe} 3 4 && echo --- && {exe} 3 4 4\n", timeout=120, files=[tmp_path])
    assert r.returncode == 0, r.text()
    single, smp = r.stdout.decode().split("---\n")
    assert single.splitlines() == [
        "api 12",
        "vcpu0 io out port=0x3f8 size=1 count=1 data=0x37",  # '7'
        "vcpu0 io out port=0x3f8 size=1 count=1 data=0x0a",  # '\n'
        "vcpu0 hlt rip=0x100c",
    ], r.text()
    expected = ["api 12"]
    for i in range(4):
        expected += [f"vcpu{i} io out port=0x3f8 size=1 count=1 data=0x{0x37 + i:02x}",
                     f"vcpu{i} io out port=0x3f8 size=1 count=1 data=0x0a",
                     f"vcpu{i} hlt rip=0x100c"]
    assert smp.splitlines() == expected, r.text()


def test_script_status_streams_stdin_env_and_files(tmp_path):
    vt.require_kvm()
    out_file = tmp_path / "sub" / "written.txt"
    out_file.parent.mkdir()
    script = f"""
set -e
echo "to stdout"
echo "to stderr" >&2
read line
echo "stdin said: $line"
echo "env: $KIT_TEST_VALUE"
echo "cwd: $(pwd)"
[ -c /dev/kvm ] && echo "kvm: char device"
printf 'from the script\\n' > {out_file}
printf '\\000\\001\\377' > {tmp_path}/binary.bin
exit 7
"""
    r = vt.run_kvm_script(script, timeout=120, files=[tmp_path], input=b"hello kit\n",
                          env={"KIT_TEST_VALUE": "it's $quoted \"value\""})
    assert r.returncode == 7, r.text()
    assert not r.timed_out
    out = r.stdout.decode().splitlines()
    assert out == ["to stdout", "stdin said: hello kit", "env: it's $quoted \"value\"", f"cwd: {os.getcwd()}",
                   "kvm: char device"], r.text()
    assert r.stderr == b"to stderr\n"
    assert out_file.read_text() == "from the script\n"
    assert (tmp_path / "binary.bin").read_bytes() == b"\x00\x01\xff"


def test_timeout_is_enforced(tmp_path):
    vt.require_kvm()
    marker = tmp_path / "started"
    start = time.monotonic()
    r = vt.run_kvm_script(f"touch {marker}; echo started; sleep 600; echo never", timeout=6, files=[tmp_path])
    elapsed = time.monotonic() - start
    assert r.returncode is None and r.timed_out, r.text()
    assert b"never" not in r.stdout
    assert elapsed < 6 + 20, f"timeout 6 s but the call took {elapsed:.1f} s"


def test_parallel_calls_are_isolated(tmp_path):
    vt.require_kvm()
    results = {}

    def one(i):
        results[i] = vt.run_kvm_script(f"cat; echo call{i} > {tmp_path}/out{i}; exit {10 + i}", timeout=120,
                                       files=[tmp_path], input=f"input{i}\n".encode())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert results[i].returncode == 10 + i, results[i].text()
        assert results[i].stdout == f"input{i}\n".encode()
        assert (tmp_path / f"out{i}").read_text() == f"call{i}\n"


def test_kit_vm_shape_and_networking():
    """Inside the kit: 2 vCPUs, ~2 GiB (by default), tap devices and bridges (module autoload through the host's modprobe)."""
    if vt.kvm_route()[0] != "kit":
        pytest.skip(f"kit-only test (route is {vt.kvm_route()[0]}): it would create taps on the host")
    script = """
set -e
nproc
awk '/MemTotal/ {print int($2 / 1024 / 1024 + 0.5) " GiB"}' /proc/meminfo
ip tuntap add dev kt0 mode tap
ip link add kbr0 type bridge
ip link set kt0 master kbr0
ip link set kt0 up
ip link set kbr0 up
ip -o link show kt0 | grep -o 'master kbr0'
ip netns add kns
ip netns exec kns ip link set lo up
ip netns exec kns ip -o link show lo | grep -o 'LOOPBACK,UP'
"""
    r = vt.run_kvm_script(script, timeout=120)
    assert r.returncode == 0, r.text()
    gib = round(vt.KIT_MEMORY_MIB / 1024)
    assert r.stdout.decode().splitlines() == [str(vt.KIT_CPUS), f"{gib} GiB", "master kbr0", "LOOPBACK,UP"], \
        r.text()


def test_run_vmm_reports_missing_kernel(tmp_path):
    """run_vmm runs BUILD_DIR/vireo-vmm (host or kit) with stdin and args; a missing kernel is a one-line
    error and exit status 1 (docs/vmm.md)."""
    vt.require_kvm()
    if not (vt.BUILD_DIR / "vireo-vmm").exists():
        pytest.skip(f"{vt.BUILD_DIR / 'vireo-vmm'} not built")
    missing = tmp_path / "no-such-kernel.elf"
    r = vt.run_vmm(["--kernel", str(missing)], timeout=60)
    assert r.returncode == 1, r.text()
    assert "no-such-kernel.elf" in r.stderr.decode(), r.text()


def test_kit_boot_failure_keeps_console(monkeypatch):
    """When the kit VM ends without running the script, run_kvm_script raises KitError naming a folder that
    keeps the console log (here: a boot stage that prints a marker and gives up)."""
    if vt.kvm_route()[0] != "kit":
        pytest.skip(f"kit-only test (route is {vt.kvm_route()[0]})")
    monkeypatch.setattr(vt, "_boot_script", lambda *a: "echo kit-test-marker-$((6 * 7)); exit 1\n")
    with pytest.raises(vt.KitError) as info:
        vt.run_kvm_script("echo unreachable", timeout=60)
    msg = str(info.value)
    assert "kit-test-marker-42" in msg
    kept = Path(msg.split("kept in ")[1].split("\n")[0])
    try:
        assert "kit-test-marker-42" in (kept / "console.log").read_text()
        assert (kept / "boot.sh").exists()
    finally:
        shutil.rmtree(kept, ignore_errors=True)


# ---- scripts/kvm-run ------------------------------------------------------------------------------------------

KVM_RUN = vt.SOURCE_DIR / "scripts" / "kvm-run"


def kvm_run(args, input=None, env=None):
    e = dict(os.environ, VIREO_BUILD_DIR=str(vt.BUILD_DIR), VIREO_SOURCE_DIR=str(vt.SOURCE_DIR))
    e.update(env or {})
    return subprocess.run(["/usr/bin/python3", str(KVM_RUN), *args], input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=e, timeout=300)


@pytest.mark.parametrize("args,needle", [
    ([], "no command given"),
    (["--timeout"], "--timeout needs a value"),
    (["--timeout", "soon", "true"], "--timeout: not a number"),
    (["--timeout", "-1", "true"], "--timeout must be positive"),
    (["--share", "/no/such/folder", "true"], "--share: no such file or folder"),
    (["--bogus", "true"], "unknown option --bogus"),
])
def test_kvm_run_bad_usage(args, needle):
    r = kvm_run(args)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("kvm-run: ") and needle in err, err
    assert r.stdout == b""


def test_kvm_run_route_and_kit_only():
    r = kvm_run(["--route"])
    route = vt.kvm_route()[0]
    assert r.stdout.decode().startswith(f"{route}: ")
    assert r.returncode == (125 if route == "none" else 0)
    r = kvm_run(["--kit-only", "true"], env={"VIREO_KVM_ROUTE": "none"})
    assert r.returncode == 125 and b"no /dev/kvm" in r.stderr


def test_kvm_run_runs_a_command():
    vt.require_kvm()
    r = kvm_run(["sh", "-c", 'echo out; echo err >&2; read x; echo "in=$x"; [ -c /dev/kvm ] && exit 3'],
                input=b"abc\n")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert r.stdout == b"out\nin=abc\n"
    assert r.stderr == b"err\n"
