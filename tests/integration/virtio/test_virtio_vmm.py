"""virtio devices of vireo-vmm, end to end with the test guests (tests/guests/virtio) under real KVM: on the
host when /dev/kvm works, else inside the KVM kit (tests/support/vireo_testing.py). Skips without KVM, or if
this vireo-vmm was built without src/virtio."""

import re
import shlex
import subprocess
import time

import pytest

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script, run_vmm

VMM = BUILD_DIR / "vireo-vmm"
GUESTS = BUILD_DIR / "tests" / "guests"


@pytest.fixture(autouse=True)
def _need_vmm_with_virtio():
    if not VMM.exists():
        pytest.skip(f"{VMM} not built")
    helptext = subprocess.run([str(VMM), "--help"], capture_output=True, timeout=10).stdout.decode()
    if "--disk" not in helptext:
        pytest.skip("vireo-vmm has no virtio options")
    r = subprocess.run([str(VMM), "--kernel", "/nonexistent", "--rng"], capture_output=True, timeout=10)
    if b"built without src/virtio" in r.stderr:
        pytest.skip("vireo-vmm was built without src/virtio")
    require_kvm()


def guest(name):
    p = GUESTS / f"{name}.elf"
    if not p.exists():
        pytest.skip(f"{p} not built")
    return str(p)


def lines(out: bytes):
    return out.decode(errors="replace").replace("\r", "").split("\n")


def pattern_ok(path, start, sectors, seed):
    data = open(path, "rb").read()
    return all(data[o] == (((o * 131 + seed) ^ (o >> 9)) & 0xFF) for o in range(start * 512, (start + sectors) * 512))


def make_disk(path, size=4 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_blk_pattern_lands_in_file(tmp_path, transport):
    disk = make_disk(tmp_path / "disk.img")
    r = run_vmm(["--kernel", guest("virtio_blk"), "--memory", "64M", "--transport", transport,
                 "--disk", f"path={disk},format=raw", "--cmdline", "mode=pattern sectors=64 start=16 seed=7"],
                timeout=180)
    out = lines(r.stdout)
    assert r.returncode == 0, (out, r.stderr)
    assert f"virtio_blk: capacity=8192 transport={transport}" in out
    assert "virtio_blk: readback ok" in out
    # After the VMM exited, the bytes are in the host file, exactly.
    assert pattern_ok(disk, 16, 64, 7)
    data = open(disk, "rb").read()
    assert data[:16 * 512] == bytes(16 * 512) and data[80 * 512:] == bytes(len(data) - 80 * 512)


def test_blk_errors_serial_flush_discard(tmp_path):
    disk = make_disk(tmp_path / "disk.img")
    r = run_vmm(["--kernel", guest("virtio_blk"), "--memory", "64M",
                 "--disk", f"path={disk},format=raw,serial=VIREO-SN-42", "--cmdline", "mode=errors"], timeout=180)
    out = lines(r.stdout)
    assert r.returncode == 0, (out, r.stderr)
    assert "virtio_blk: serial=VIREO-SN-42" in out and "virtio_blk: errors ok" in out


def test_blk_readonly(tmp_path):
    disk = make_disk(tmp_path / "disk.img")
    r = run_vmm(["--kernel", guest("virtio_blk"), "--memory", "64M",
                 "--disk", f"path={disk},format=raw,readonly=on", "--cmdline", "mode=readonly"], timeout=180)
    out = lines(r.stdout)
    assert r.returncode == 0, (out, r.stderr)
    assert "virtio_blk: readonly discard status=1" in out and "virtio_blk: readonly ok" in out
    assert open(disk, "rb").read() == bytes(4 << 20)


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_malformed_chain_breaks_only_that_device(tmp_path, transport):
    disk = make_disk(tmp_path / "disk.img")
    r = run_vmm(["--kernel", guest("virtio_blk"), "--memory", "64M", "--transport", transport,
                 "--disk", f"path={disk},format=raw", "--rng", "--cmdline", "mode=malformed"], timeout=180)
    out = lines(r.stdout)
    assert r.returncode == 0, (out, r.stderr)
    assert "virtio_blk: device needs reset" in out
    assert "virtio_blk: rng still works" in out
    assert "virtio_blk: reset recovers the device" in out
    err = r.stderr.decode(errors="replace")
    assert re.search(r"virtio-blk disk0: guest error, device needs reset: .*loop", err), err
    assert err.count("device needs reset") == 1  # logged once


def test_rng():
    # (virtio-rng over PCI is also exercised by the malformed-chain test.)
    r = run_vmm(["--kernel", guest("virtio_rng"), "--memory", "64M", "--transport", "mmio", "--rng"], timeout=180)
    out = lines(r.stdout)
    assert r.returncode == 0, (out, r.stderr)
    got = [l for l in out if l.startswith("virtio_rng: bytes=")]
    assert len(got) == 2 and got[0] != got[1]


def test_console_echo(tmp_path):
    serial = tmp_path / "serial.log"
    r = run_vmm(["--kernel", guest("virtio_console"), "--memory", "64M", "--serial", f"file={serial}",
                 "--console", "stdio"], input=b"ping vireo\n", timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr, serial.read_text() if serial.exists() else "")
    out = r.stdout.decode(errors="replace")
    assert "virtio_console: hello\n" in out
    assert "echo: ping vireo\n" in out
    assert "virtio_console: echoed 11 bytes" in serial.read_text()


def test_net_tap_in_netns(tmp_path):
    """A netns with a tap (10.0.2.2/24) created by the test; the guest ARPs and pings the host side."""
    script = f"""
set -u
ns=vireo-vt$$
ip netns add $ns || {{ echo "SKIP: cannot create a network namespace"; exit 0; }}
trap 'ip netns del $ns 2>/dev/null' EXIT
ip netns exec $ns sh -c '
  ip link set lo up
  ip tuntap add dev vtap0 mode tap || {{ echo "SKIP: cannot create a tap device"; exit 0; }}
  ip addr add 10.0.2.2/24 dev vtap0 && ip link set vtap0 up
  {shlex.quote(str(VMM))} --kernel {shlex.quote(guest("virtio_net"))} --memory 64M \\
      --net tap=vtap0,mac=52:54:00:12:34:77 --cmdline "ip=10.0.2.15 peer=10.0.2.2 count=3"
  echo "VMM-EXIT=$?"
'
"""
    r = run_kvm_script(script, timeout=240, files=[tmp_path])
    out = lines(r.stdout)
    if any(l.startswith("SKIP: ") for l in out):
        pytest.skip(next(l for l in out if l.startswith("SKIP: ")))
    assert "VMM-EXIT=0" in out, (out, r.stderr)
    assert "virtio_net: transport=pci mac=52:54:00:12:34:77" in out
    assert "virtio_net: echo reply seq=3" in out and "virtio_net: ok" in out


def test_balloon_returns_memory(tmp_path):
    """The guest touches 64 MiB, then inflates the balloon with it: the VMM's RSS drops accordingly."""
    serial = tmp_path / "serial.log"
    pages = 16384
    script = f"""
{shlex.quote(str(VMM))} --kernel {shlex.quote(guest("virtio_balloon"))} --memory 256M --balloon \\
    --serial file={serial} --cmdline "pages={pages} addr=0x4000000 hold_mcycles=4000" &
pid=$!
rss() {{ awk '/^VmRSS/ {{print $2}}' /proc/$pid/status; }}
wait_line() {{ for i in $(seq 1 600); do grep -q "$1" {serial} 2>/dev/null && return 0; sleep 0.05; done; return 1; }}
wait_line "virtio_balloon: touched" && echo "RSS-TOUCHED=$(rss)"
wait_line "virtio_balloon: inflated" && sleep 0.2 && echo "RSS-INFLATED=$(rss)"
wait $pid
echo "VMM-EXIT=$?"
"""
    r = run_kvm_script(script, timeout=240, files=[tmp_path])
    out = lines(r.stdout)
    assert "VMM-EXIT=0" in out, (out, r.stderr, serial.read_text() if serial.exists() else "")
    touched = int(next(l for l in out if l.startswith("RSS-TOUCHED=")).split("=")[1])
    inflated = int(next(l for l in out if l.startswith("RSS-INFLATED=")).split("=")[1])
    # 64 MiB were given back; allow for other allocations in between.
    assert touched - inflated >= 48 * 1024, (touched, inflated)
