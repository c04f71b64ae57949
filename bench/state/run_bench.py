#!/usr/bin/env python3
"""bench/state: snapshot-save time and --restore time to first guest progress for the counter guest with
`--memory` (default 256M) on the host's /dev/kvm. Prints the medians of --runs runs. Save time is what
snapshot-save reports (pause + state + memory file + fsyncs); restore time is process start of
`vireo-vmm --restore` to the first new tick line on its serial file (exec, config/state parsing, KVM set-up,
lazy RAM mapping, first guest output). No QEMU comparison yet (savevm/loadvm over QMP: not implemented)."""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--build", default="build")
ap.add_argument("--memory", default="256M")
ap.add_argument("--runs", type=int, default=5)
a = ap.parse_args()
VMM = os.path.join(a.build, "vireo-vmm")
GUEST = os.path.join(a.build, "tests/guests/counter.elf")
TICK = re.compile(rb"counter: tick (\d+)\n")


def cmd(sock, command, args=None):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(json.dumps({"command": command, "arguments": args or {}}).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        buf += s.recv(65536)
    s.close()
    return json.loads(buf)


def wait(pred, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.0005)
    return False


saves, restores = [], []
for run in range(a.runs):
    w = tempfile.mkdtemp(prefix="vireo-bench-state-")
    sock, serial = os.path.join(w, "a.sock"), os.path.join(w, "a.serial")
    p = subprocess.Popen([VMM, "--kernel", GUEST, "--memory", a.memory, "--serial", "file=" + serial,
                          "--api-socket", sock, "--cmdline", "period=18"], stderr=subprocess.DEVNULL)
    wait(lambda: os.path.exists(serial) and len(TICK.findall(open(serial, "rb").read())) > 20)
    r = cmd(sock, "snapshot-save", {"path": os.path.join(w, "snap")})
    saves.append(r["return"]["time_us"] / 1000)
    cmd(sock, "stop")
    p.wait()
    serial2, sock2 = os.path.join(w, "b.serial"), os.path.join(w, "b.sock")
    t0 = time.monotonic()
    q = subprocess.Popen([VMM, "--restore", os.path.join(w, "snap"), "--serial", "file=" + serial2,
                          "--api-socket", sock2], stderr=subprocess.DEVNULL)
    wait(lambda: os.path.exists(serial2) and TICK.search(open(serial2, "rb").read()) is not None)
    restores.append((time.monotonic() - t0) * 1000)
    cmd(sock2, "stop")
    q.wait()
    shutil.rmtree(w)
print(f"guest {a.memory}, {a.runs} runs (median): snapshot-save {statistics.median(saves):.1f} ms, "
      f"--restore to first tick {statistics.median(restores):.1f} ms")
print("saves ms:", " ".join(f"{x:.1f}" for x in saves))
print("restores ms:", " ".join(f"{x:.1f}" for x in restores))
print("QEMU savevm/loadvm: not measured (not implemented in this script)")
