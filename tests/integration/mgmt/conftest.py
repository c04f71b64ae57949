"""Fixtures for the management tests: a real vireod in a temporary state root, and the vireo CLI."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BUILD = Path(os.environ.get("VIREO_BUILD_DIR", "/work/main/build"))
SOURCE = Path(os.environ.get("VIREO_SOURCE_DIR", Path(__file__).resolve().parents[3]))
HERE = Path(__file__).resolve().parent
VMM_DOUBLE = HERE / "vmm_double.py"
sys.path.insert(0, str(SOURCE / "tests" / "support"))


class Daemon:
    def __init__(self, root, vmm, extra=(), prefix=()):
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NS]: run vireod in a network namespace
        self.root = Path(root)
        self.vmm = str(vmm)
        self.extra = list(extra)
        self.proc = None
        self.log = self.root / "vireod.log"

    @property
    def socket(self):
        return self.root / "run" / "vireo" / "vireod.sock"

    def env(self, **more):
        e = dict(os.environ)
        e["VIREO_ROOT"] = str(self.root)
        e["VIREO_VMM"] = self.vmm
        e.update(more)
        return e

    def start(self, *extra):
        self.root.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(BUILD / "vireod"), "--root", str(self.root), "--start-timeout", "15", "--stop-timeout", "3",
             *self.extra, *extra],
            env=self.env(), stdout=logf, stderr=logf, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.socket.exists():
                r = self.cli("version")
                if r.returncode == 0:
                    return self
            if self.proc.poll() is not None:
                raise AssertionError("vireod exited: " + self.log.read_text())
            time.sleep(0.05)
        raise AssertionError("vireod did not come up: " + self.log.read_text())

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def cli(self, *args, input=None, env=None, timeout=60):
        e = self.env(**(env or {}))
        return subprocess.run([str(BUILD / "vireo"), *args], input=input, env=e, capture_output=True,
                              timeout=timeout, text=True)

    def ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        assert r.returncode == 0, f"vireo {' '.join(args)} failed: {r.stderr}\n--- vireod log:\n{self.log.read_text()}"
        return r.stdout

    def wait_state(self, name, state, timeout=15):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = self.cli("domstate", "--reason", name)
            last = r.stdout.strip()
            if r.returncode == 0 and last == state:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name}: state {last!r}, wanted {state!r}\n--- vireod log:\n{self.log.read_text()}")

    def cleanup(self):
        # Stop any VMM/monitor left running in this root (only processes started for this root).
        self.stop(kill=True)
        rd = self.root / "run" / "vireo" / "domains"
        for f in rd.glob("*.json") if rd.exists() else []:
            try:
                import json
                st = json.loads(f.read_text())
                for key in ("vmm_pid", "monitor_pid"):
                    pid = st.get(key) or 0
                    if pid > 0 and "vireo" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                        os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


@pytest.fixture
def short_root():
    # Unix socket paths are limited to 107 bytes: keep the state root short.
    d = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def guests(short_root):
    """Kernel files for the VMM double (it picks a behaviour from the file name)."""
    g = short_root / "g"
    g.mkdir()
    for n in ("spin.elf", "hello.elf", "crash.elf", "fail.elf", "deaf.elf"):
        (g / n).write_bytes(b"\x7fELF")
    return g


@pytest.fixture
def daemon(short_root):
    d = Daemon(short_root / "root", VMM_DOUBLE)
    d.start()
    yield d
    d.cleanup()


def domain_xml(name, kernel, extra="", devices="<serial type='pty'/>", uuid=None):
    u = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (f"<domain type='kvm'>\n  <name>{name}</name>\n  {u}\n  <memory unit='MiB'>64</memory>\n"
            f"  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64'>hvm</type>\n    <kernel>{kernel}</kernel>\n  </os>\n"
            f"  {extra}\n  <devices>{devices}</devices>\n</domain>\n")
