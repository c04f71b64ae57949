"""Measurements for run_bench.py; runs where /dev/kvm works (the host, or inside the KVM kit).
Prints one JSON object on stdout. Usage: bench_inner.py BUILD_DIR IOPS_REQS SEQ_MIB"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

BUILD, REQS, MIB = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
VMM = os.path.join(BUILD, "vireo-vmm")
GUEST = os.path.join(BUILD, "tests", "guests", "virtio_blk.elf")
QEMU = shutil.which("qemu-system-x86_64")
FIO = shutil.which("fio")
TMP = tempfile.mkdtemp(prefix="vireo-vbench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
DISK = os.path.join(TMP, "disk.img")
SIZE_MIB = max(2 * MIB, 64)
R = {"reqs": REQS, "mib": MIB, "disk_mib": SIZE_MIB}
CMD = f"mode=bench iops_reqs={REQS} seq_mib={MIB} depth=8"

# A fully written file (sparse reads would be unrealistically cheap).
with open(DISK, "wb") as f:
    chunk = os.urandom(1 << 20)
    for _ in range(SIZE_MIB):
        f.write(chunk)


def cycles(out):
    c = dict((k, int(v)) for k, v in re.findall(r"bench (\w+) \S+ cycles=(\d+)", out))
    if len(c) != 3:
        raise SystemExit(f"bench guest output incomplete: {out!r}")
    return c


# vireo-vmm: phases timed by boot markers (ns), cycles printed by the guest (gives the TSC rate).
log = os.path.join(TMP, "markers")
p = subprocess.run([VMM, "--kernel", GUEST, "--memory", "128M", "--disk", f"path={DISK},format=raw",
                    "--cmdline", CMD, "--boot-log", log], capture_output=True, timeout=1800)
if p.returncode != 0:
    raise SystemExit(f"vireo-vmm: exit {p.returncode}: {p.stdout.decode()} {p.stderr.decode()}")
marks = dict((int(k), int(v)) for k, v in re.findall(r"^boot-marker (\d+) at (\d+)$", open(log).read(), re.M))
vc = cycles(p.stdout.decode())
# boot-marker timestamps are microseconds.
ns = {"randread4k": (marks[0x21] - marks[0x20]) * 1000, "seqwrite1m": (marks[0x23] - marks[0x22]) * 1000,
      "seqread1m": (marks[0x25] - marks[0x24]) * 1000}
tsc_per_ns = vc["randread4k"] / ns["randread4k"]
R["vireo_ns"] = ns
R["tsc_ghz"] = tsc_per_ns  # cycles per ns = GHz

# QEMU with KVM and virtio-blk-pci on the same file; same guest, phases from its TSC cycle counts.
if QEMU and os.path.exists("/dev/kvm"):
    q = subprocess.run([QEMU, "-accel", "kvm", "-M", "pc", "-cpu", "host", "-m", "128M", "-nodefaults",
                        "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
                        "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-kernel", GUEST, "-append", CMD,
                        "-drive", f"file={DISK},format=raw,if=none,id=d0,cache=writeback,aio=threads",
                        "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"], capture_output=True, timeout=1800)
    try:
        qc = cycles(q.stdout.decode(errors="replace"))
        R["qemu_ns"] = {k: v / tsc_per_ns for k, v in qc.items()}
    except SystemExit as e:
        R["qemu_error"] = str(e)[:300]

# Host fio on the same file (the limit): the same patterns, page cache like the VMMs (no O_DIRECT).
if FIO:
    def fio(rw, bs, size_or_n, depth):
        args = [FIO, "--name=b", f"--filename={DISK}", f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}",
                "--ioengine=io_uring", "--direct=0", "--output-format=json", f"--size={SIZE_MIB}m"]
        args += [f"--number_ios={size_or_n}"] if rw == "randread" else [f"--io_size={size_or_n}m"]
        j = json.loads(subprocess.run(args, capture_output=True, timeout=600).stdout)
        job = j["jobs"][0]
        part = job["read"] if "read" in rw else job["write"]
        return part["runtime"] * 1e6  # ms -> ns
    R["fio_ns"] = {"randread4k": fio("randread", "4k", REQS, 8), "seqwrite1m": fio("write", "1m", MIB, 4),
                   "seqread1m": fio("read", "1m", MIB, 4)}

# virtio-net: guest -> host UDP flood (1514-byte frames) into a tap in a network namespace.
NET_GUEST = os.path.join(BUILD, "tests", "guests", "virtio_net.elf")
NS = f"vireo-vb{os.getpid()}"
FLOOD = int(os.environ.get("VIREO_BENCH_FLOOD", "20000"))


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, timeout=1800)


def rx_packets():
    return int(sh(f"ip netns exec {NS} cat /sys/class/net/vtap0/statistics/rx_packets").stdout or 0)


if sh(f"ip netns add {NS}").returncode == 0:
    try:
        ok = sh(f"ip -n {NS} link set lo up && ip -n {NS} tuntap add dev vtap0 mode tap && "
                f"ip -n {NS} addr add 10.0.2.2/24 dev vtap0 && ip -n {NS} link set vtap0 up").returncode == 0
        if ok:
            log = os.path.join(TMP, "net-markers")
            before = rx_packets()
            p = sh(f"ip netns exec {NS} {VMM} --kernel {NET_GUEST} --memory 64M --net tap=vtap0 "
                   f"--cmdline 'flood={FLOOD}' --boot-log {log}")
            after = rx_packets()
            m = re.search(r"flood packets=(\d+) bytes=(\d+) cycles=(\d+)", p.stdout.decode(errors="replace"))
            marks = dict((int(k), int(v)) for k, v in re.findall(r"^boot-marker (\d+) at (\d+)$",
                                                                   open(log).read() if os.path.exists(log) else "", re.M))
            if p.returncode == 0 and m and 0x30 in marks:
                R["net_vireo"] = {"bytes": int(m.group(2)), "ns": (marks[0x31] - marks[0x30]) * 1000,
                                  "delivered": after - before, "packets": FLOOD}
            else:
                R["net_vireo_error"] = (p.stdout + p.stderr).decode(errors="replace")[-300:]
            if QEMU and os.path.exists("/dev/kvm"):
                before = rx_packets()
                q = sh(f"ip netns exec {NS} {QEMU} -accel kvm -M pc -cpu host -m 64M -nodefaults -no-user-config "
                       f"-nographic -serial stdio -no-reboot -device isa-debug-exit,iobase=0x501,iosize=1 "
                       f"-kernel {NET_GUEST} -append 'flood={FLOOD}' "
                       f"-netdev tap,id=n0,ifname=vtap0,script=no,downscript=no "
                       f"-device virtio-net-pci,netdev=n0,disable-legacy=on")
                after = rx_packets()
                m = re.search(r"flood packets=(\d+) bytes=(\d+) cycles=(\d+)", q.stdout.decode(errors="replace"))
                if m:
                    R["net_qemu"] = {"bytes": int(m.group(2)), "ns": int(m.group(3)) / tsc_per_ns,
                                     "delivered": after - before, "packets": FLOOD}
                else:
                    R["net_qemu_error"] = (q.stdout + q.stderr).decode(errors="replace")[-300:]
        else:
            R["net_error"] = "cannot create the tap in the namespace"
    finally:
        sh(f"ip netns del {NS}")
else:
    R["net_error"] = "cannot create a network namespace"
shutil.rmtree(TMP, ignore_errors=True)
print(json.dumps(R))
