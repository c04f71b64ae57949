"""vireo-vmm argument validation: bad input fails with one line on stderr and exit 1, before /dev/kvm is
opened, so these run on any machine."""
import glob
import os
import subprocess

import pytest

from vireo_testing import BUILD_DIR

VMM = BUILD_DIR / "vireo-vmm"
GUEST = BUILD_DIR / "tests" / "guests" / "hello.elf"


def run(args, timeout=20):
    return subprocess.run([str(VMM)] + [str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def assert_one_line_error(r, fragment):
    err = r.stderr.decode()
    assert r.returncode == 1, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("vireo-vmm: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert r.stdout == b""


@pytest.fixture(scope="module")
def guest():
    if not GUEST.exists():
        pytest.skip(f"{GUEST} not built")
    return GUEST


def test_missing_kernel():
    r = run(["--kernel", "/nonexistent/vmlinuz"])
    assert_one_line_error(r, "kernel /nonexistent/vmlinuz: no such file or directory")


def test_kernel_is_required():
    assert_one_line_error(run([]), "--kernel")


def test_truncated_bzimage(tmp_path):
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        pytest.skip("no /boot/vmlinuz-* (apt-get install linux-image-cloud-amd64)")
    with open(kernels[0], "rb") as f:
        head = f.read(4096)
    t = tmp_path / "bzImage-truncated"
    t.write_bytes(head)
    r = run(["--kernel", t])
    assert_one_line_error(r, f"kernel {t}: truncated bzImage")


def test_garbage_kernel(tmp_path):
    t = tmp_path / "junk"
    t.write_bytes(b"\x00" * 8192)
    assert_one_line_error(run(["--kernel", t]), f"kernel {t}")


@pytest.mark.parametrize("mem,fragment", [("0", "--memory: size must be greater than 0"),
                                          ("size=0", "--memory: size must be greater than 0"),
                                          ("lots", "--memory"),
                                          ("64M,color=red", "--memory"),
                                          ("size=64M,hugepages=maybe", "expected on or off")])
def test_bad_memory(guest, mem, fragment):
    assert_one_line_error(run(["--kernel", guest, "--memory", mem]), fragment)


@pytest.mark.parametrize("cpus", ["0", "-1", "two"])
def test_bad_cpus(guest, cpus):
    assert_one_line_error(run(["--kernel", guest, "--cpus", cpus]), "--cpus")


def test_unknown_cpu_model(guest):
    assert_one_line_error(run(["--kernel", guest, "--cpu", "custom=pentium9"]), "pentium9")


def test_bad_serial(guest):
    assert_one_line_error(run(["--kernel", guest, "--serial", "carrier-pigeon"]), "serial: unknown backend")


def test_unknown_flag(guest):
    assert_one_line_error(run(["--kernel", guest, "--frobnicate"]), "frobnicate")


def test_missing_initrd(guest):
    assert_one_line_error(run(["--kernel", guest, "--initrd", "/nonexistent/initrd"]),
                          "initrd /nonexistent/initrd: no such file or directory")


def test_no_core_dump_and_clear_kvm_error(guest, tmp_path):
    """With valid input the next failure on a machine without KVM is /dev/kvm itself: one line, exit 1."""
    if os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("this machine has a usable /dev/kvm")
    r = subprocess.run([str(VMM), "--kernel", str(guest)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert_one_line_error(r, "/dev/kvm")
    assert not list(tmp_path.glob("core*"))


def test_help():
    r = run(["--help"])
    assert r.returncode == 0
    out = r.stdout.decode()
    for flag in ["--kernel", "--memory", "--cpus", "--cpu", "--serial", "--api-socket", "--native"]:
        assert flag in out
