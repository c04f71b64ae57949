#!/usr/bin/python3
"""Linux boot benchmark, one run, ratios printed: Debian's kernel with a busybox initramfs, direct boot, from
process start to the init's first line ("up") and to exit (init runs `reboot -f`), vireo-vmm vs QEMU
(-accel kvm -M microvm) booting the same kernel and initramfs with the same memory and vCPUs, rounds
alternating. Unmodified kernels need hardware-KVM semantics: on a machine without /dev/kvm or with a PVM one
this runs inside the KVM kit (nested KVM on QEMU TCG), so absolute times are TCG-slow; the ratios compare the
two VMMs on the same nested machine. A boot that never reaches init counts as a failure and is listed.
Usage: bench/linux/run_bench.py [--build DIR] [--cpus 1,2,4] [--rounds N]"""
import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]

INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "VIREO-INIT: up nproc=$(/bin/busybox nproc)"
/bin/busybox reboot -f
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("VIREO_BUILD_DIR", str(SRC / "build")))
    ap.add_argument("--cpus", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.environ["VIREO_BUILD_DIR"] = str(Path(a.build).resolve())
    os.environ.setdefault("VIREO_SOURCE_DIR", str(SRC))
    sys.path.insert(0, str(SRC / "tests" / "support"))
    sys.path.insert(0, str(SRC / "tests" / "integration" / "guests"))
    import vireo_testing as vt
    from test_linux_vmm import _cpio_newc, _kernel, _static_busybox

    build = Path(os.environ["VIREO_BUILD_DIR"])
    kernel, busybox = _kernel(), _static_busybox()
    if not (build / "vireo-vmm").exists() or not kernel or busybox is None:
        print("linux bench: FAILED: needs build/vireo-vmm, a readable /boot/vmlinuz-* and busybox-static")
        return 1
    route, why = vt.kvm_route(unmodified=True)
    if route == "none":
        print(f"linux bench: SKIP: no KVM for unmodified kernels: {why}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="vireo-linux-bench-"))
    initrd = tmp / "initrd.cpio"
    initrd.write_bytes(_cpio_newc([("bin", 0o040755, b""), ("proc", 0o040755, b""),
                                   ("bin/busybox", 0o100755, busybox), ("init", 0o100755, INIT.encode())]))
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    cmd = " ".join(shlex.quote(str(x)) for x in [py, HERE / "bench_inner.py", build, kernel, initrd, a.cpus, a.rounds])
    r = vt.run_kvm_script(cmd + "\n", timeout=3600, files=[tmp], unmodified=True)
    if r.returncode != 0:
        print(f"linux bench: FAILED (rc {r.returncode}):\n{r.text()}")
        return 1
    R = json.loads(r.stdout.decode().strip().splitlines()[-1])
    where = ("host /dev/kvm" if r.route == "host" else
             "KVM kit: nested KVM under QEMU TCG -- absolute times are TCG-slow; ratios compare the two VMMs there")
    print(f"Linux direct boot to init ({where}); {a.rounds} rounds, alternating; kernel {kernel}")
    failed = [x for x in R["runs"] if x["up_s"] is None]
    for cpus in sorted({x["cpus"] for x in R["runs"]}):
        med = {}
        for vmm in ("vireo", "qemu"):
            ok = [x for x in R["runs"] if x["vmm"] == vmm and x["cpus"] == cpus and x["up_s"] is not None]
            n = len([x for x in R["runs"] if x["vmm"] == vmm and x["cpus"] == cpus])
            if ok:
                med[vmm] = statistics.median(x["up_s"] for x in ok)
                print(f"  {cpus} vCPU {vmm:6s}: reached init {len(ok)}/{n}, median {med[vmm]:.2f} s to init")
            elif n:
                print(f"  {cpus} vCPU {vmm:6s}: reached init 0/{n}")
        if "vireo" in med and "qemu" in med:
            print(f"  {cpus} vCPU ratio vireo/QEMU microvm time to init: {med['vireo'] / med['qemu']:.2f}x")
    for x in failed:
        print(f"  FAILED: {x['vmm']} {x['cpus']} vCPU round {x['round']}: ...{x['tail'][-600:]}")
    return 1 if any(x["vmm"] == "vireo" for x in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
