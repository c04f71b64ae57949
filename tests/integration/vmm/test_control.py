"""The control socket and process lifecycle of vireo-vmm, with the spin guest printing ticks: query-status,
query-vm, pause/resume (ticks stop and restart), shutdown request, errors, stop, reset, SIGTERM.
Driven by ctl_driver.py inside one KVM session (host or kit); skipped without KVM."""
import json
import shlex
import sys
from pathlib import Path

import pytest

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script

GUEST = BUILD_DIR / "tests" / "guests" / "spin.elf"
DRIVER = Path(__file__).with_name("ctl_driver.py")


@pytest.fixture(scope="module")
def t(tmp_path_factory):
    require_kvm()
    if not GUEST.exists():
        pytest.skip(f"{GUEST} not built")
    work = tmp_path_factory.mktemp("vmm-ctl")
    out = work / "transcript.json"
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    script = " ".join(shlex.quote(str(x)) for x in [py, DRIVER, BUILD_DIR / "vireo-vmm", GUEST, out, work])
    r = run_kvm_script(script + "\n", timeout=400, files=[work])
    assert not r.timed_out and out.exists(), r.text()
    steps = json.loads(out.read_text())["steps"]
    return {k: v for k, v in steps}


def test_started(t):
    assert t["vm1:started"] and t["vm2:started"] and t["vm3:started"], t


def test_query_status_running(t):
    r = t["query-status"]
    assert r["id"] == 1
    assert r["return"]["status"] == "running"
    assert r["return"]["reason"] == "booted"


def test_query_vm(t):
    r = t["query-vm"]["return"]
    assert r["name"] == "vm1"
    assert r["vcpus"] == 2
    assert r["memory_bytes"] == 32 << 20
    assert r["status"] == "running"
    assert r["cpu_mode"] == "host-model"
    assert r["kernel"].endswith("spin.elf")
    assert isinstance(r["pid"], int) and r["pid"] > 1
    types = {d["type"] for d in r["devices"]}
    assert {"serial", "i8042", "rtc", "debug-exit", "boot-marker"} <= types
    serial = [d for d in r["devices"] if d["type"] == "serial"][0]
    assert serial["id"] == "serial0" and "file=" in serial["details"]


def test_pause_stops_the_guest(t):
    assert t["pause"]["return"] == {}
    assert t["ticks-while-paused"] == 0
    assert t["status-paused"]["return"]["status"] == "paused"
    assert t["pause-again"]["error"]["class"] == "InvalidState"


def test_resume_restarts_the_guest(t):
    assert t["resume"]["return"] == {}
    assert t["ticks-after-resume"] is True
    assert t["resume-again"]["error"]["class"] == "InvalidState"


def test_errors(t):
    assert t["unknown"]["error"]["class"] == "CommandNotFound"
    assert "frobnicate" in t["unknown"]["error"]["desc"]
    assert t["badjson"]["error"]["class"] == "InvalidArgument"


def test_shutdown_request_is_recorded(t):
    assert t["shutdown"]["return"] == {}
    assert t["status-shutting-down"]["return"]["status"] == "shutting-down"


def test_stop_exits_0_after_replying(t):
    assert t["stop"]["return"] == {}
    assert t["vm1:rc"] == 0, t["vm1:stderr"]
    assert t["vm1:socket-removed"]


def test_sigterm_exits_0(t):
    assert t["vm2:rc"] == 0, t["vm2:stderr"]


def test_reset_command_exits_2(t):
    assert t["reset"]["return"] == {}
    assert t["vm3:rc"] == 2, t["vm3:stderr"]
