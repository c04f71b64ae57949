"""Runs INSIDE the KVM environment (host or kit) for test_control.py: starts vireo-vmm with the spin guest and
a control socket, drives it, and writes a JSON transcript of what it saw to argv[3]. Assertions happen in the
test, on the transcript. Usage: ctl_driver.py VMM GUEST OUT.json WORKDIR"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

VMM, GUEST, OUT, WORK = sys.argv[1:5]
T = {"steps": []}
# Unix sockets cannot be bound on the kit's 9p shares: keep them on a local tmpfs.
SOCKDIR = tempfile.mkdtemp(prefix="vireo-ctl-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def log(name, value):
    T["steps"].append([name, value])


def wait_for(pred, timeout=30.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def ticks(path):
    try:
        with open(path) as f:
            return len(re.findall(r"^spin: tick \d+$", f.read(), re.M))
    except OSError:
        return 0


class Ctl:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""
        self.n = 0

    def cmd(self, command, raw=None):
        self.n += 1
        line = raw if raw is not None else json.dumps({"id": self.n, "command": command})
        self.s.sendall(line.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return json.loads(out)


def start(name, extra=()):
    sock = os.path.join(SOCKDIR, name + ".sock")
    serial = os.path.join(WORK, name + ".serial")
    err = open(os.path.join(WORK, name + ".err"), "wb")
    p = subprocess.Popen([VMM, "--kernel", GUEST, "--memory", "32M", "--cpus", "2", "--name", name,
                          "--serial", "file=" + serial, "--api-socket", sock, "--cmdline", "period=22", *extra],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    ok = wait_for(lambda: os.path.exists(sock) and ticks(serial) >= 2, timeout=60)
    log(name + ":started", bool(ok))
    return p, sock, serial


def finish(name, p, timeout=20):
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "hung"
    log(name + ":rc", rc)
    with open(os.path.join(WORK, name + ".err"), "rb") as f:
        log(name + ":stderr", f.read().decode(errors="replace"))


def main():
    # 1. query, pause/resume, shutdown request, errors, stop.
    p, sock, serial = start("vm1")
    c = Ctl(sock)
    c2 = Ctl(sock)  # a second client at the same time
    log("query-status", c.cmd("query-status"))
    log("query-vm", c2.cmd("query-vm"))
    log("pause", c.cmd("pause"))
    t0 = ticks(serial)
    time.sleep(1.0)
    log("ticks-while-paused", ticks(serial) - t0)
    log("status-paused", c.cmd("query-status"))
    log("pause-again", c.cmd("pause"))
    log("resume", c.cmd("resume"))
    t1 = ticks(serial)
    log("ticks-after-resume", bool(wait_for(lambda: ticks(serial) >= t1 + 2, timeout=30)))
    log("resume-again", c.cmd("resume"))
    log("unknown", c.cmd("frobnicate"))
    log("badjson", c.cmd(None, raw="{not json"))
    log("shutdown", c.cmd("shutdown"))
    log("status-shutting-down", c.cmd("query-status"))
    log("stop", c.cmd("stop"))
    finish("vm1", p)
    log("vm1:socket-removed", not os.path.exists(sock))

    # 2. SIGTERM stops cleanly with 0.
    p, sock, serial = start("vm2")
    p.send_signal(signal.SIGTERM)
    finish("vm2", p)

    # 3. reset command: exit 2.
    p, sock, serial = start("vm3")
    log("reset", Ctl(sock).cmd("reset"))
    finish("vm3", p)

    with open(OUT, "w") as f:
        json.dump(T, f)


main()
