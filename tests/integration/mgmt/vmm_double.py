#!/usr/bin/python3
"""A stand-in for vireo-vmm used to test vireod's supervision logic where there is no /dev/kvm.

It speaks the documented vireo-vmm contract (docs/vmm.md): the command line vireod builds, the control
socket (query-status, query-vm, pause, resume, shutdown, reset, stop), SIGTERM, and the exit codes
(0 power off, 1 start-up failure, 2 reset, 3 crash). The "guest" is chosen by the --kernel file's name:
  *fail*   -> start-up failure: one line on stderr, exit 1 (as vireo-vmm does without /dev/kvm)
  *crash*  -> runs 0.3 s, then "triple fault": exit 3
  *hello*  -> prints "Hello from the guest" and powers off: exit 0
  *deaf*   -> ignores shutdown requests (like a guest without ACPI)
  anything else -> prints "tick N" on the serial port (stdout) every 0.1 s until stopped
Real-VMM runs of the same scenarios are in test_kit.py (they need KVM).
"""
import json
import os
import selectors
import signal
import socket
import sys
import time


def start_vcpu_threads(n):
    """Threads named vcpu0..vcpuN-1 as vireo-vmm's are (vireod's vcpuinfo/domstats find them by name)."""
    import ctypes
    import threading
    libc = ctypes.CDLL(None)

    def idle(i):
        libc.prctl(15, f"vcpu{i}".encode(), 0, 0, 0)  # PR_SET_NAME
        threading.Event().wait()

    for i in range(n):
        threading.Thread(target=idle, args=(i,), daemon=True).start()


def main():
    args = sys.argv[1:]
    opts = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and a not in ("--rng", "--balloon"):
            opts.setdefault(a, []).append(args[i + 1] if i + 1 < len(args) else "")
            i += 2
        else:
            i += 1
    kernel = opts.get("--kernel", [""])[0]
    api = opts.get("--api-socket", [""])[0]
    base = os.path.basename(kernel)
    if not kernel or not os.path.exists(kernel):
        sys.stderr.write(f"vireo-vmm: --kernel {kernel}: no such file or directory\n")
        sys.exit(1)
    if "fail" in base:
        sys.stderr.write("vireo-vmm: open /dev/kvm: no such file or directory\n")
        sys.exit(1)
    # Record the argv for tests that check what vireod passed.
    with open(api + ".argv", "w") as f:
        json.dump(sys.argv, f)

    state = {"status": "running", "exit": None, "exit_at": None}
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(api)
    except FileNotFoundError:
        pass
    srv.bind(api)
    srv.listen(8)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    bufs = {}
    start = time.monotonic()
    tick = 0
    next_tick = start
    start_vcpu_threads(int(opts.get("--cpus", ["1"])[0] or 1))
    if "hello" in base:
        sys.stdout.write("Hello from the guest\r\n")
        sys.stdout.flush()
        time.sleep(0.2)
        sys.exit(0)

    def reply(conn, req, ret=None, err=None):
        r = {"id": req.get("id")}
        if err:
            r["error"] = {"class": err[0], "desc": err[1]}
        else:
            r["return"] = ret if ret is not None else {}
        conn.sendall((json.dumps(r) + "\n").encode())

    while True:
        now = time.monotonic()
        if state["exit_at"] is not None and now >= state["exit_at"]:
            sys.stdout.flush()
            os._exit(state["exit"])
        if "crash" in base and now - start > 0.3:
            sys.stderr.write("vireo-vmm: vCPU 0: triple fault (shutdown exit)\n")
            os._exit(3)
        if state["status"] == "running" and now >= next_tick:
            sys.stdout.write(f"tick {tick}\r\n")
            sys.stdout.flush()
            tick += 1
            next_tick = now + 0.1
        for key, _ in sel.select(timeout=0.05):
            if key.fileobj is srv:
                c, _ = srv.accept()
                sel.register(c, selectors.EVENT_READ)
                bufs[c] = b""
                continue
            c = key.fileobj
            data = c.recv(65536)
            if not data:
                sel.unregister(c)
                c.close()
                del bufs[c]
                continue
            bufs[c] += data
            while b"\n" in bufs[c]:
                line, bufs[c] = bufs[c].split(b"\n", 1)
                try:
                    req = json.loads(line)
                except ValueError:
                    continue
                cmd = req.get("command")
                if cmd == "query-status":
                    reply(c, req, {"status": state["status"], "reason": "booted"})
                elif cmd == "query-vm":
                    reply(c, req, {"name": opts.get("--name", [""])[0], "pid": os.getpid(), "status": state["status"]})
                elif cmd == "pause":
                    if state["status"] != "running":
                        reply(c, req, err=("InvalidState", "not running"))
                    else:
                        state["status"] = "paused"
                        reply(c, req)
                elif cmd == "resume":
                    if state["status"] != "paused":
                        reply(c, req, err=("InvalidState", "not paused"))
                    else:
                        state["status"] = "running"
                        reply(c, req)
                elif cmd == "shutdown":
                    reply(c, req)
                    if "deaf" not in base:
                        # The guest takes a moment to power off; meanwhile it is "shutting-down".
                        state["status"] = "shutting-down"
                        state["exit"], state["exit_at"] = 0, time.monotonic() + 1.0
                elif cmd == "reset":
                    reply(c, req)
                    state["exit"], state["exit_at"] = 2, time.monotonic() + 0.1
                elif cmd == "stop":
                    reply(c, req)
                    os._exit(0)
                else:
                    reply(c, req, err=("CommandNotFound", f"unknown command '{cmd}'"))


if __name__ == "__main__":
    main()
