"""Runs INSIDE the KVM environment (host or kit) for test_acpi_vmm.py. For each VMM binary given, boots the
acpi_poweroff guest in three ways and writes a JSON transcript (assertions happen in the test):
  poweroff: --api-socket, wait for "waiting for the power button", query-vm, `shutdown` -> guest S5 -> exit code
  pvh:      the same with acpi_poweroff_pvh.elf (vireo-vmm's PVH entry)
  ignore:   --cmdline ignore: two `shutdown`s are seen and ignored, the VM keeps running, then `stop` -> exit code
  reset:    --cmdline reset -> exit code
Usage: acpi_driver.py OUT.json GUEST_DIR WORKDIR VMM..."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

OUT, GUEST_DIR, WORK = sys.argv[1:4]
VMMS = sys.argv[4:]
SOCKDIR = tempfile.mkdtemp(prefix="vireo-acpi-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
T = {}


def wait_for(pred, timeout=60.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Ctl:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""
        self.n = 0

    def cmd(self, command):
        self.n += 1
        try:
            self.s.sendall(json.dumps({"id": self.n, "command": command}).encode() + b"\n")
            while b"\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    return None
                self.buf += chunk
        except OSError as e:  # the VMM is gone (e.g. the guest exited early): recorded, asserted by the test
            return {"transport-error": str(e)}
        out, self.buf = self.buf.split(b"\n", 1)
        return json.loads(out)


def run(tag, vmm, guest, cmdline, steps):
    """Starts the VMM, lets `steps(ctl, serial_path, rec)` drive it, then collects the exit code."""
    rec = {}
    sock = os.path.join(SOCKDIR, tag + ".sock")
    serial = os.path.join(WORK, tag + ".serial")
    errp = os.path.join(WORK, tag + ".err")
    args = [vmm, "--kernel", os.path.join(GUEST_DIR, guest), "--memory", "32M", "--cpus", "2", "--name", tag,
            "--serial", "file=" + serial, "--api-socket", sock]
    if cmdline:
        args += ["--cmdline", cmdline]
    with open(errp, "wb") as err:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        if steps:
            rec["socket"] = bool(wait_for(lambda: os.path.exists(sock) or p.poll() is not None))
            if os.path.exists(sock):
                ctl = Ctl(sock)
                rec["query-vm"] = ctl.cmd("query-vm")
                steps(ctl, serial, rec, p)
        try:
            rec["rc"] = p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rec["rc"] = "hung"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    rec["serial"] = text(serial)
    rec["stderr"] = text(errp)
    return rec


def has_acpi(rec):
    devs = ((rec.get("query-vm") or {}).get("return") or {}).get("devices") or []
    return any(d.get("type") == "acpi" for d in devs)


def waiting(serial, p):
    return bool(wait_for(lambda: "acpi: waiting for the power button" in text(serial) or p.poll() is not None)
                and "acpi: waiting for the power button" in text(serial))


def poweroff_steps(ctl, serial, rec, p):
    rec["waiting"] = waiting(serial, p)
    if not has_acpi(rec):
        rec["stop"] = ctl.cmd("stop")
        return
    rec["shutdown"] = ctl.cmd("shutdown")


def ignore_steps(ctl, serial, rec, p):
    rec["waiting"] = waiting(serial, p)
    if not has_acpi(rec):
        rec["stop"] = ctl.cmd("stop")
        return
    rec["shutdown1"] = ctl.cmd("shutdown")
    rec["ignored1"] = bool(wait_for(lambda: "acpi: power button ignored (1)" in text(serial), timeout=30))
    rec["shutdown2"] = ctl.cmd("shutdown")
    rec["ignored2"] = bool(wait_for(lambda: "acpi: power button ignored (2)" in text(serial), timeout=30))
    time.sleep(1.0)
    rec["alive"] = p.poll() is None
    rec["status"] = ctl.cmd("query-status")
    rec["stop"] = ctl.cmd("stop")


for i, vmm in enumerate(VMMS):
    name = os.path.basename(vmm)
    T[name] = {
        "poweroff": run(f"p{i}", vmm, "acpi_poweroff.elf", "", poweroff_steps),
        "pvh": run(f"v{i}", vmm, "acpi_poweroff_pvh.elf", "", poweroff_steps),
        "ignore": run(f"i{i}", vmm, "acpi_poweroff.elf", "ignore", ignore_steps),
        "reset": run(f"r{i}", vmm, "acpi_poweroff.elf", "reset", None),
    }
    with open(OUT, "w") as f:
        json.dump(T, f, indent=1)
