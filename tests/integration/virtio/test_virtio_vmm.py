"""virtio devices of vireo-vmm, end to end with the test guests (tests/guests/virtio) under real KVM: on the
host when /dev/kvm works, else inside the KVM kit (tests/support/vireo_testing.py). Skips without KVM, or if
this vireo-vmm was built without src/virtio."""

import json
import re
import shlex
import subprocess

import pytest
from pathlib import Path

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script

VMM = BUILD_DIR / "vireo-vmm"
GUESTS = BUILD_DIR / "tests" / "guests"


@pytest.fixture(scope="module", autouse=True)
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


# All single-VM runs share one KVM session (one kit boot instead of one per test): the fixture runs every
# vireo-vmm invocation in one script, each writing NAME.out/.err/.rc into a folder; tests assert on them.
RUNS = {
    "pattern_pci": (["--transport", "pci", "--disk", "path={d}/pattern_pci.img,format=raw"],
                    "mode=pattern sectors=64 start=16 seed=7"),
    "pattern_mmio": (["--transport", "mmio", "--disk", "path={d}/pattern_mmio.img,format=raw"],
                     "mode=pattern sectors=64 start=16 seed=7"),
    "pattern_threads": (["--transport", "pci", "--disk", "path={d}/pattern_threads.img,format=raw,engine=threads"],
                        "mode=pattern sectors=64 start=16 seed=7"),
    "pattern_qcow2": (["--transport", "pci", "--disk", "path={d}/pattern_qcow2.img,format=qcow2"],
                      "mode=pattern sectors=64 start=16 seed=7"),
    "errors": (["--disk", "path={d}/errors.img,format=raw,serial=VIREO-SN-42"], "mode=errors"),
    "readonly": (["--disk", "path={d}/readonly.img,format=raw,readonly=on"], "mode=readonly"),
    "malformed": (["--disk", "path={d}/malformed.img,format=raw", "--rng"], "mode=malformed"),
    "rng": (["--transport", "mmio", "--rng"], ""),
}
GUEST_OF = {"rng": "virtio_rng"}
BALLOON_PAGES = 16384


@pytest.fixture(scope="module")
def session(_need_vmm_with_virtio, tmp_path_factory):
    d = tmp_path_factory.mktemp("virtio-vmm")
    lines_ = ["cd /"]
    for name, (args, cmd) in RUNS.items():
        if name == "pattern_qcow2":
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / f"{name}.img"), str(4 << 20)],
                           check=True)
        elif name != "rng":
            make_disk(d / f"{name}.img")
        argv = [str(VMM), "--kernel", guest(GUEST_OF.get(name, "virtio_blk")), "--memory", "64M"]
        argv += [a.format(d=d) for a in args]
        if cmd:
            argv += ["--cmdline", cmd]
        q = " ".join(shlex.quote(a) for a in argv)
        lines_.append(f"{q} </dev/null >{d}/{name}.out 2>{d}/{name}.err; echo $? >{d}/{name}.rc")
    # Console: host input on stdin, guest serial to a file.
    q = " ".join(shlex.quote(a) for a in [str(VMM), "--kernel", guest("virtio_console"), "--memory", "64M",
                                          "--serial", f"file={d}/console.serial", "--console", "stdio"])
    lines_.append(f"printf 'ping vireo\\n' | {q} >{d}/console.out 2>{d}/console.err; echo $? >{d}/console.rc")
    # Balloon: sample the VMM's RSS after the guest touched its memory and after it inflated the balloon.
    q = " ".join(shlex.quote(a) for a in [str(VMM), "--kernel", guest("virtio_balloon"), "--memory", "256M",
                                          "--balloon", "--serial", f"file={d}/balloon.serial",
                                          "--api-socket", "$sockdir/api", "--cmdline",
                                          f"pages={BALLOON_PAGES} addr=0x4000000 hold_mcycles=4000"])
    q = q.replace("'$sockdir/api'", '"$sockdir/api"')
    ctl = " ".join(shlex.quote(a) for a in ["/usr/bin/python3", str(Path(__file__).parent / "ctl_requests.py")])
    reqs = " ".join(shlex.quote(json.dumps(r)) for r in [
        {"id": 1, "command": "query-balloon"},
        {"id": 2, "command": "balloon", "arguments": {"value": 0}},
        {"id": 3, "command": "balloon", "arguments": {"value": 128 << 20}},
        {"id": 4, "command": "query-vm"}])
    lines_.append(f"""sockdir=$(mktemp -d /dev/shm/vb.XXXXXX)
{q} >{d}/balloon.out 2>{d}/balloon.err &
pid=$!
rss() {{ awk '/^VmRSS/ {{print $2}}' /proc/$pid/status; }}
wait_line() {{ for i in $(seq 1 600); do grep -q "$1" {d}/balloon.serial 2>/dev/null && return 0; sleep 0.05; done; return 1; }}
wait_line "virtio_balloon: touched" && echo "$(rss)" >{d}/balloon.rss_touched
wait_line "virtio_balloon: inflated" && sleep 0.2 && echo "$(rss)" >{d}/balloon.rss_inflated
{ctl} "$sockdir/api" {reqs} >{d}/balloon.ctl 2>&1
wait $pid; echo $? >{d}/balloon.rc""")
    r = run_kvm_script("\n".join(lines_) + "\n", timeout=600, files=[d])
    return d, r


def result(session, name):
    d, r = session
    rc_file = d / f"{name}.rc"
    if not rc_file.exists():
        pytest.fail(f"{name}: no result (kit run: rc={r.returncode} stderr={r.stderr[-2000:]!r})")
    return (int(rc_file.read_text().strip()), lines((d / f"{name}.out").read_bytes()),
            (d / f"{name}.err").read_text(errors="replace"))


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_blk_pattern_lands_in_file(session, transport):
    rc, out, err = result(session, f"pattern_{transport}")
    assert rc == 0, (out, err)
    assert f"virtio_blk: capacity=8192 transport={transport}" in out
    assert "virtio_blk: readback ok" in out
    # After the VMM exited, the bytes are in the host file, exactly, and nothing else changed.
    disk = session[0] / f"pattern_{transport}.img"
    assert pattern_ok(disk, 16, 64, 7)
    data = open(disk, "rb").read()
    assert data[:16 * 512] == bytes(16 * 512) and data[80 * 512:] == bytes(len(data) - 80 * 512)


@pytest.mark.parametrize("engine", ["threads", "qcow2"])
def test_blk_pattern_other_engines(session, engine, tmp_path):
    # The default engine for raw files is io_uring (the runs above); the thread pool and the qcow2 driver
    # behind the same device must land the same bytes.
    rc, out, err = result(session, f"pattern_{engine}")
    assert rc == 0, (out, err)
    assert "virtio_blk: readback ok" in out
    disk = session[0] / f"pattern_{engine}.img"
    if engine == "qcow2":
        chk = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True, text=True)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        raw = tmp_path / "qcow2.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
        disk = raw
    assert pattern_ok(disk, 16, 64, 7)
    data = open(disk, "rb").read()
    assert data[:16 * 512] == bytes(16 * 512) and data[80 * 512:] == bytes(len(data) - 80 * 512)


def test_blk_errors_serial_flush_discard(session):
    rc, out, err = result(session, "errors")
    assert rc == 0, (out, err)
    assert "virtio_blk: serial=VIREO-SN-42" in out and "virtio_blk: errors ok" in out


def test_blk_readonly(session):
    rc, out, err = result(session, "readonly")
    assert rc == 0, (out, err)
    assert "virtio_blk: readonly discard status=1" in out and "virtio_blk: readonly ok" in out
    assert open(session[0] / "readonly.img", "rb").read() == bytes(4 << 20)


def test_malformed_chain_breaks_only_that_device(session):
    rc, out, err = result(session, "malformed")
    assert rc == 0, (out, err)
    assert "virtio_blk: device needs reset" in out
    assert "virtio_blk: rng still works" in out
    assert "virtio_blk: reset recovers the device" in out
    assert re.search(r"virtio-blk disk0: guest error, device needs reset: .*loop", err), err
    assert err.count("device needs reset") == 1  # logged once


def test_rng(session):
    rc, out, err = result(session, "rng")
    assert rc == 0, (out, err)
    assert "virtio_rng: transport=mmio" in out
    got = [l for l in out if l.startswith("virtio_rng: bytes=")]
    assert len(got) == 2 and got[0] != got[1]


def test_console_echo(session):
    rc, out, err = result(session, "console")
    serial = (session[0] / "console.serial").read_text(errors="replace")
    assert rc == 0, (out, err, serial)
    text = "\n".join(out)
    assert "virtio_console: hello\n" in text
    assert "echo: ping vireo\n" in text
    assert "virtio_console: echoed 11 bytes" in serial


def test_balloon_control_commands(session):
    """query-balloon reports what the guest returned; balloon validates its value and sets a target."""
    d, _ = session
    replies = [json.loads(line) for line in (d / "balloon.ctl").read_text().splitlines() if line.startswith("{")]
    assert [r.get("id") for r in replies] == [1, 2, 3, 4], replies
    q = replies[0]["return"]
    assert q["discarded_bytes"] >= BALLOON_PAGES * 4096, q
    assert 0 < q["actual"] <= 256 << 20 and isinstance(q["stats"], dict), q
    assert replies[1]["error"]["class"] == "InvalidArgument", replies[1]
    assert replies[2]["return"] == {}, replies[2]
    assert any(dev["type"] == "virtio-balloon" for dev in replies[3]["return"]["devices"]), replies[3]


def test_balloon_returns_memory(session):
    """The guest touches 64 MiB, then inflates the balloon with it: the VMM's RSS drops accordingly."""
    d = session[0]
    rc, out, err = result(session, "balloon")
    serial = (d / "balloon.serial").read_text(errors="replace")
    assert rc == 0, (out, err, serial)
    assert f"virtio_balloon: inflated {BALLOON_PAGES} pages" in serial
    touched = int((d / "balloon.rss_touched").read_text())
    inflated = int((d / "balloon.rss_inflated").read_text())
    # 64 MiB were given back; allow for other allocations in between.
    assert touched - inflated >= 48 * 1024, (touched, inflated)


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
