"""Measurements for run_bench.py; runs where /dev/kvm runs unmodified kernels (hardware KVM, or the KVM kit).
Boots KERNEL + INITRD under vireo-vmm and under QEMU (-accel kvm -M microvm, the same direct boot), rounds
alternating so both see the same machine load, and prints one JSON object: per (vmm, cpus) the seconds from
process start to the init's first line and to exit, for each round.
Usage: bench_inner.py BUILD_DIR KERNEL INITRD CPUS_CSV ROUNDS"""
import json
import os
import select
import shutil
import subprocess
import sys
import time

BUILD, KERNEL, INITRD = sys.argv[1], sys.argv[2], sys.argv[3]
CPUS = [int(c) for c in sys.argv[4].split(",")]
ROUNDS = int(sys.argv[5])
VMM = os.path.join(BUILD, "vireo-vmm")
QEMU = shutil.which("qemu-system-x86_64")
CMDLINE = "console=ttyS0 panic=-1 quiet"
NEEDLE = b"VIREO-INIT: up"


def timed(argv, timeout=600):
    """Seconds from spawn to NEEDLE on stdout and to exit; (None, None, output) when it never got there."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf, t_up = b"", None
    while time.monotonic() - t0 < timeout:
        r, _, _ = select.select([p.stdout], [], [], 1)
        if not r:
            continue
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        if t_up is None and NEEDLE in buf:
            t_up = time.monotonic() - t0
    if p.poll() is None:
        p.kill()
        p.wait()
        return t_up, None, buf[-3000:].decode(errors="replace")
    p.wait()
    return t_up, time.monotonic() - t0, buf[-3000:].decode(errors="replace")


def vmm_argv(cpus):
    return [VMM, "--kernel", KERNEL, "--initrd", INITRD, "--memory", "256M", "--cpus", str(cpus),
            "--cmdline", CMDLINE]


def qemu_argv(cpus):
    return [QEMU, "-accel", "kvm", "-cpu", "host", "-M", "microvm", "-m", "256M", "-smp", str(cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-kernel", KERNEL, "-initrd", INITRD, "-append", CMDLINE]


def main():
    out = {"qemu": bool(QEMU), "runs": []}
    for cpus in CPUS:
        for rnd in range(ROUNDS):
            for name, argv in (("vireo", vmm_argv(cpus)), ("qemu", qemu_argv(cpus) if QEMU else None)):
                if argv is None:
                    continue
                up, end, tail = timed(argv)
                out["runs"].append({"vmm": name, "cpus": cpus, "round": rnd, "up_s": up, "exit_s": end,
                                    "tail": tail if up is None else ""})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
