"""Measurements for run_bench.py; runs where /dev/kvm works (the host, or inside the KVM kit).
Prints one JSON object on stdout. Usage: bench_inner.py BUILD_DIR N_EXITS"""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1]
N = int(sys.argv[2])
VMM = os.path.join(BUILD, "vireo-vmm")
RAW = os.path.join(BUILD, "bench", "vmm_raw_kvm_loop")
G = os.path.join(BUILD, "tests", "guests")
QEMU = shutil.which("qemu-system-x86_64")
TMP = tempfile.mkdtemp(prefix="vireo-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
R = {}


def vmm_exit_cost(guest):
    log = os.path.join(TMP, guest + ".markers")
    p = subprocess.run([VMM, "--kernel", os.path.join(G, guest + ".elf"), "--memory", "64M", "--serial", "none",
                        "--cmdline", f"n={N}", "--boot-log", log], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"vireo-vmm {guest}: exit {p.returncode}: {p.stderr.decode()}")
    marks = dict(re.findall(r"^boot-marker (\d+) at (\d+)$", open(log).read(), re.M))
    return (int(marks["17"]) - int(marks["16"])) * 1000.0 / N


def raw_exit_cost(mode):
    p = subprocess.run([RAW, mode, str(N)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"raw_kvm_loop {mode}: {p.stderr.decode()}")
    out = p.stdout.decode()
    R["pvm_" + mode] = re.search(r"pvm=(\S+)", out).group(1)
    return float(re.search(r"ns_per_exit=([\d.]+)", out).group(1))


def first_line_and_exit(argv, needle):
    """Spawn argv; seconds until `needle` appears on stdout, and until the process exits."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    buf = b""
    t_line = None
    while True:
        r, _, _ = select.select([p.stdout], [], [], 30)
        if not r:
            p.kill()
            raise SystemExit(f"{argv[0]}: no output within 30 s")
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        if t_line is None and needle in buf:
            t_line = time.monotonic() - t0
    rc = p.wait(timeout=30)
    t_exit = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    if t_line is None:
        raise SystemExit(f"{argv[0]}: '{needle.decode()}' never printed (rc {rc}): {err}")
    return t_line, t_exit, rc, err


def qemu_argv(guest, extra=()):
    return [QEMU, "-accel", "kvm", "-cpu", "host", "-M", "microvm,x-option-roms=off,rtc=off,memory-backend=ram",
            "-object", "memory-backend-memfd,id=ram,size=64M", "-m", "64M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-kernel", os.path.join(G, guest),
            *extra]


def rss_while_running(argv, serial_needle):
    """Starts argv, waits for serial_needle on stdout, returns (RssAnon+RssFile, RssShmem) in KiB, kills it."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    buf = b""
    deadline = time.monotonic() + 60
    while serial_needle not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 1)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
    status = open(f"/proc/{p.pid}/status").read()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    if serial_needle not in buf:
        raise SystemExit(f"{argv[0]}: '{serial_needle.decode()}' never printed")
    kb = {k: int(v) for k, v in re.findall(r"^(Rss\w+):\s+(\d+) kB", status, re.M)}
    return kb.get("RssAnon", 0) + kb.get("RssFile", 0), kb.get("RssShmem", 0)


def main():
    R["n"] = N
    R["vmm_pio_ns"] = vmm_exit_cost("pio_loop")
    R["vmm_mmio_ns"] = vmm_exit_cost("mmio_loop")
    R["raw_pio_ns"] = raw_exit_cost("pio")
    R["raw_mmio_ns"] = raw_exit_cost("mmio")

    hello = os.path.join(G, "hello.elf")
    runs = []
    for _ in range(3):
        t_line, t_exit, rc, err = first_line_and_exit([VMM, "--kernel", hello, "--memory", "64M"], b"Hello from")
        m = re.search(r"^boot-marker 1 at (\d+)$", err, re.M)
        runs.append((t_line, t_exit, int(m.group(1)) if m else None, rc))
    runs.sort()
    R["vmm_first_line_s"], R["vmm_exit_s"], R["vmm_marker1_us"], R["vmm_rc"] = runs[1]
    R["vmm_rss_kb"], R["vmm_guest_shmem_kb"] = rss_while_running(
        [VMM, "--kernel", os.path.join(G, "spin.elf"), "--memory", "64M"], b"spin: tick 2")

    if QEMU:
        qruns = []
        for _ in range(3):
            t_line, t_exit, rc, err = first_line_and_exit(qemu_argv("hello.elf"), b"Hello from")
            qruns.append((t_line, t_exit, rc))
        qruns.sort()
        R["qemu_first_line_s"], R["qemu_exit_s"], R["qemu_rc"] = qruns[1]
        R["qemu_rss_kb"], R["qemu_guest_shmem_kb"] = rss_while_running(qemu_argv("spin.elf"), b"spin: tick 2")
    print(json.dumps(R))


main()
