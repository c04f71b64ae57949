"""Runs INSIDE the KVM environment (host or kit) for test_snapshot.py: boots the counter guest, saves it with
snapshot-save, restores it in new vireo-vmm processes, and writes a JSON transcript (serial texts, replies,
exit codes) to OUT. Assertions happen in the test. Usage: snap_driver.py VMM GUEST OUT.json WORKDIR"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

VMM, GUEST, OUT, WORK = sys.argv[1:5]
T = {}
# Unix sockets cannot be bound on the kit's 9p shares: keep them on a local tmpfs.
SOCKDIR = tempfile.mkdtemp(prefix="vireo-snap-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def wait_for(pred, timeout=60.0, step=0.02):
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


def last_tick(path):
    m = re.findall(r"^counter: tick (\d+)$", text(path), re.M)
    return int(m[-1]) if m else -1


class Ctl:
    def __init__(self, path):
        import socket
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(60)
        self.s.connect(path)
        self.buf = b""

    def cmd(self, command, args=None):
        req = {"command": command}
        if args is not None:
            req["arguments"] = args
        self.s.sendall(json.dumps(req).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return json.loads(out)


class Vm:
    def __init__(self, name, args):
        self.name = name
        self.sock = os.path.join(SOCKDIR, name + ".sock")
        self.serial = os.path.join(WORK, name + ".serial")
        self.errf = os.path.join(WORK, name + ".err")
        with open(self.errf, "wb") as err:
            self.p = subprocess.Popen([VMM, *args, "--serial", "file=" + self.serial, "--api-socket", self.sock],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        self.ok = bool(wait_for(lambda: os.path.exists(self.sock) or self.p.poll() is not None))
        self.ctl = Ctl(self.sock) if os.path.exists(self.sock) else None

    def finish(self, timeout=60):
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = "hung"
        T[self.name] = {"rc": rc, "serial": text(self.serial), "stderr": text(self.errf)}
        return rc

    def stop(self):
        if self.ctl and self.p.poll() is None:
            self.ctl.cmd("stop")
        return self.finish()


def boot(name, extra_cmdline="", extra=()):
    return Vm(name, ["--kernel", GUEST, "--memory", "64M", "--cmdline", "period=23 " + extra_cmdline, *extra])


def restore(name, snap, extra=()):
    return Vm(name, ["--restore", snap, *extra])


def main():
    # 1. Save mid-run (forever-counting guest), restore in a new process, twice from the same snapshot, then
    #    save the restored VM (its RAM is a private file mapping) and restore that.
    a = boot("a")
    T["a:ticking"] = bool(wait_for(lambda: last_tick(a.serial) >= 5))
    snap1 = os.path.join(WORK, "snap1")
    T["save1"] = a.ctl.cmd("snapshot-save", {"path": snap1})
    T["a:status-after-save"] = a.ctl.cmd("query-status")
    ticks_at_save = last_tick(a.serial)
    time.sleep(0.3)
    T["a:ticks-after-save"] = last_tick(a.serial) - ticks_at_save
    T["snap1:files"] = sorted(os.listdir(snap1))
    T["save-nonempty"] = a.ctl.cmd("snapshot-save", {"path": snap1})
    a.stop()

    b = restore("b", snap1)
    T["b:ticking"] = bool(wait_for(lambda: last_tick(b.serial) >= ticks_at_save + 10))
    T["b:query-status"] = b.ctl.cmd("query-status")
    snap2 = os.path.join(WORK, "snap2")
    T["save2"] = b.ctl.cmd("snapshot-save", {"path": snap2})
    b.stop()
    b2 = restore("b2", snap1)
    wait_for(lambda: last_tick(b2.serial) >= ticks_at_save + 3)
    b2.stop()
    c = restore("c", snap2)
    wait_for(lambda: last_tick(c.serial) >= last_tick(b.serial) + 5)
    c.stop()

    # 2. A guest that finishes: ticks=120, saved mid-run, the restore runs it to its memory check (exit 0);
    #    with virtio-rng on both transports (queue indexes and addresses carried over), and --paused.
    for transport in ("pci", "mmio"):
        n = "f-" + transport
        f = boot(n, "ticks=120 rng", ["--rng", "--transport", transport])
        T[n + ":ticking"] = bool(wait_for(lambda: last_tick(f.serial) >= 5))
        snap = os.path.join(WORK, "snap-" + transport)
        T[n + ":save"] = f.ctl.cmd("snapshot-save", {"path": snap})
        f.stop()
        g = restore("g-" + transport, snap, ["--paused"])
        T["g-" + transport + ":status"] = g.ctl.cmd("query-status") if g.ctl else None
        time.sleep(0.3)
        T["g-" + transport + ":serial-while-paused"] = text(g.serial)
        T["g-" + transport + ":resume"] = g.ctl.cmd("resume") if g.ctl else None
        g.finish(timeout=120)

    # 3. Damaged snapshots (copies of snap1 / snap-pci): each must be one line on stderr and exit 1.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import vireo_state

    def damaged(name, base, damage):
        d = os.path.join(WORK, "bad-" + name)
        shutil.copytree(base, d)
        damage(os.path.join(d, "state.bin"))
        r = subprocess.run([VMM, "--restore", d, "--serial", "none"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        T["bad:" + name] = {"rc": r.returncode, "stderr": r.stderr.decode(errors="replace")}

    def rewrite(edit):
        def f(path):
            body = vireo_state.load(path)
            edit(body)
            vireo_state.save(path, body)
        return f

    def set_rx(b):
        b["devices"]["serial0"]["state"]["rx"] = bytes(20)

    def drop_vcpu(b):
        b["vcpus"] = []

    def bad_used(b):
        b["devices"]["rng0"]["state"]["virtio"]["queues"][0]["ring"]["used_idx"] += 3

    def bad_msr_shape(b):
        b["vcpus"][0]["regs"] = b"\0" * 7

    def unknown_device(b):
        b["devices"]["floppy0"] = {"version": 1, "state": {}}

    def newer_device(b):
        b["devices"]["rtc"]["version"] = 9

    def flip(path):
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0x40
        open(path, "wb").write(bytes(data))

    def truncate(path):
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) - 100])

    def version(path):
        data = bytearray(open(path, "rb").read())
        data[8] = 7
        open(path, "wb").write(bytes(data))

    def nested(path):
        open(path, "wb").write(vireo_state.pack(b"\x81" * 100000 + b"\x00"))

    damaged("serial-rx", snap1, rewrite(set_rx))
    damaged("no-vcpus", snap1, rewrite(drop_vcpu))
    damaged("used-idx", os.path.join(WORK, "snap-pci"), rewrite(bad_used))
    damaged("regs-size", snap1, rewrite(bad_msr_shape))
    damaged("unknown-device", snap1, rewrite(unknown_device))
    damaged("newer-device", snap1, rewrite(newer_device))
    damaged("corrupt", snap1, flip)
    damaged("truncated", snap1, truncate)
    damaged("version", snap1, version)
    damaged("nested", snap1, nested)
    damaged("missing", snap1, os.remove)

    with open(OUT, "w") as f:
        json.dump(T, f)


main()
