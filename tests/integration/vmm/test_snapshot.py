"""snapshot-save and --restore (docs/vmm.md, "Snapshots") with the counter guest: saved mid-run, restored in
new processes, it continues exactly where it was (no lost or repeated tick, its memory pattern intact), also
from a snapshot of a restored VM, with virtio-rng on both transports, and with --paused. Damaged state files
are one-line errors. Driven by snap_driver.py inside one KVM session (host or kit); the errors that need no
/dev/kvm are checked here directly."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import vireo_state  # noqa: E402
from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script  # noqa: E402

GUEST = BUILD_DIR / "tests" / "guests" / "counter.elf"
VMM = BUILD_DIR / "vireo-vmm"
DRIVER = Path(__file__).with_name("snap_driver.py")
TICK = re.compile(r"^counter: tick (\d+)$", re.M)


@pytest.fixture(scope="module")
def t(tmp_path_factory):
    require_kvm()
    assert GUEST.exists(), f"{GUEST} not built"
    work = tmp_path_factory.mktemp("vmm-snap")
    out = work / "transcript.json"
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    script = " ".join(shlex.quote(str(x)) for x in [py, DRIVER, VMM, GUEST, out, work])
    r = run_kvm_script(script + "\n", timeout=500, files=[work])
    assert not r.timed_out and out.exists(), r.text()
    return json.loads(out.read_text())


def ticks(text):
    return [int(n) for n in TICK.findall(text)]


def assert_continues(before, after):
    """`after` (a restored VM's serial) continues `before` exactly: joined they are one unbroken count."""
    joined = ticks(before + after)
    assert joined == list(range(len(joined))), (before[-200:], after[:200])
    assert "corrupt" not in before + after


def test_save_pauses_and_writes_the_folder(t):
    assert t["a:ticking"]
    assert "time_us" in t["save1"]["return"]
    assert t["a:status-after-save"]["return"] == {"status": "paused", "reason": "save"}
    assert t["a:ticks-after-save"] == 0
    assert t["snap1:files"] == ["config.json", "memory", "state.bin"]


def test_save_refuses_a_non_empty_folder(t):
    err = t["save-nonempty"]["error"]
    assert err["desc"].endswith("snap1 is not empty")


def test_restore_continues_exactly(t):
    assert t["b:ticking"]
    assert t["b:query-status"]["return"] == {"status": "running", "reason": "restored"}
    assert t["a"]["rc"] == 0 and t["b"]["rc"] == 0, (t["a"]["stderr"], t["b"]["stderr"])
    assert_continues(t["a"]["serial"], t["b"]["serial"])
    assert t["b"]["stderr"] == ""


def test_second_restore_of_the_same_snapshot(t):
    # MAP_PRIVATE: the first restore did not change the memory file; the second starts from the same point.
    assert_continues(t["a"]["serial"], t["b2"]["serial"])
    assert ticks(t["b2"]["serial"])[0] == ticks(t["b"]["serial"])[0]


def test_snapshot_of_a_restored_vm(t):
    assert "time_us" in t["save2"]["return"]
    assert_continues(t["a"]["serial"] + t["b"]["serial"], t["c"]["serial"])


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_virtio_rng_guest_runs_to_its_memory_check(t, transport):
    f, g = t["f-" + transport], t["g-" + transport]
    assert t[f"f-{transport}:ticking"] and "time_us" in t[f"f-{transport}:save"]["return"]
    assert "rng=1" in f["serial"]
    assert_continues(f["serial"], g["serial"])
    assert ticks(f["serial"] + g["serial"]) == list(range(120))
    assert g["serial"].endswith("counter: memory ok ticks=120\n")
    assert g["rc"] == 0, g["stderr"]


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_restore_paused(t, transport):
    assert t[f"g-{transport}:status"]["return"] == {"status": "paused", "reason": "restored"}
    assert t[f"g-{transport}:serial-while-paused"] == ""
    assert t[f"g-{transport}:resume"]["return"] == {}


BAD = {
    "serial-rx": "state: devices.serial0.state.rx: 20 bytes in the receive FIFO, it holds 16",
    "no-vcpus": "state: 0 vCPUs saved, config.json has 1",
    "used-idx": "state: devices.rng0.state.virtio.queues[0]: virtqueue: used idx {n} saved, the used ring in memory says {m}",
    "regs-size": "state: vcpus[0].regs: 7 bytes, expected 144",
    "unknown-device": "state: device floppy0 is saved but this VM has no such device",
    "newer-device": "state: device rtc: state version 9 is newer than this vireo-vmm's (1)",
    "corrupt": "{dir}/state.bin: checksum mismatch (the file is corrupt)",
    "truncated": "{dir}/state.bin: truncated ({n} of {m} bytes)",
    "version": "{dir}/state.bin: state format version 7, this vireo-vmm reads version 1",
    "nested": "{dir}/state.bin: CBOR nesting deeper than 32",
    "missing": "--restore {dir}: not a snapshot (no state.bin: the save did not complete)",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_damaged_state_is_one_line(t, name):
    r = t["bad:" + name]
    assert r["rc"] == 1
    lines = r["stderr"].splitlines()
    assert len(lines) == 1, r["stderr"]
    pattern = re.escape("vireo-vmm: error: " + BAD[name]).replace(r"\{dir\}", r"/\S+/bad-" + re.escape(name))
    pattern = pattern.replace(r"\{n\}", r"\d+").replace(r"\{m\}", r"\d+")
    assert re.fullmatch(pattern, lines[0]), lines[0]


# ---- no /dev/kvm needed: checked before KVM is opened

def fake_snapshot(tmp_path, state: bytes | None):
    d = tmp_path / "snap"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"boot": {"kernel": str(GUEST)}, "memory": {"size": 4 << 20}}))
    with open(d / "memory", "wb") as f:
        f.truncate(4 << 20)
    if state is not None:
        (d / "state.bin").write_bytes(state)
    return d


def restore_error(d, *extra):
    r = subprocess.run([str(VMM), "--restore", str(d), *extra], capture_output=True, timeout=30)
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_cli_wrong_version(tmp_path):
    d = fake_snapshot(tmp_path, vireo_state.pack(vireo_state.cbor_dumps({}), version=2))
    assert restore_error(d) == f"vireo-vmm: error: {d}/state.bin: state format version 2, this vireo-vmm reads version 1"


def test_cli_truncated_header(tmp_path):
    d = fake_snapshot(tmp_path, b"VIREOSNP\x01\x00")
    assert restore_error(d) == f"vireo-vmm: error: {d}/state.bin: truncated (10 bytes, the header alone is 24)"


def test_cli_not_a_state_file(tmp_path):
    d = fake_snapshot(tmp_path, b"x" * 64)
    assert restore_error(d) == f"vireo-vmm: error: {d}/state.bin: not a vireo state file (bad magic)"


def test_cli_indefinite_cbor(tmp_path):
    d = fake_snapshot(tmp_path, vireo_state.pack(b"\xbf\xff"))
    assert restore_error(d).startswith(f"vireo-vmm: error: {d}/state.bin: CBOR item 0xbf at byte 0 (indefinite length")


def test_cli_memory_size_mismatch(tmp_path):
    d = fake_snapshot(tmp_path, vireo_state.pack(vireo_state.cbor_dumps({})))
    with open(d / "memory", "wb") as f:
        f.truncate(1 << 20)
    assert restore_error(d) == f"vireo-vmm: error: --restore: {d}/memory: 1048576 bytes, the VM has 4194304 of RAM"


def test_cli_guest_flags_refused_with_restore(tmp_path):
    d = fake_snapshot(tmp_path, None)
    assert restore_error(d, "--memory", "1G") == (
        "vireo-vmm: error: --memory cannot be combined with --restore (the snapshot holds the VM's configuration)")


def test_cli_paused_needs_restore():
    r = subprocess.run([str(VMM), "--kernel", str(GUEST), "--paused"], capture_output=True, timeout=30)
    assert r.returncode == 1 and r.stderr.decode() == "vireo-vmm: error: --paused needs --restore DIR\n"
