#!/usr/bin/env python3
"""virtio-blk benchmark, one run, ratios printed: the virtio_blk test guest in bench mode (4 KiB random reads
at queue depth 8, then 1 MiB sequential writes and reads at depth 4) through vireo-vmm (virtio-blk-pci, thread
pool backend) vs the same guest on QEMU -accel kvm with virtio-blk-pci on the same file, vs host fio on that
file (the limit); and virtio-net: the virtio_net guest flooding UDP into a tap in a network namespace,
vireo-vmm vs QEMU (virtio-net-pci, tap, no vhost) on the same setup. Where this machine has no /dev/kvm it runs inside the KVM kit (nested KVM on QEMU TCG): the
figures are then nested-TCG figures, as the output says.
Usage: bench/virtio/run_bench.py [--build DIR] [--reqs N] [--mib M]"""
import argparse
import json
import os
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests" / "support"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("VIREO_BUILD_DIR", str(HERE.parent.parent / "build")))
    ap.add_argument("--reqs", type=int, default=4000)
    ap.add_argument("--mib", type=int, default=32)
    a = ap.parse_args()
    os.environ["VIREO_BUILD_DIR"] = str(Path(a.build).resolve())
    import vireo_testing as vt
    route, why = vt.kvm_route()
    if route == "none":
        print(f"virtio bench: skipped: no /dev/kvm: {why}")
        return 0
    inner = HERE / "bench_inner.py"
    script = f"/usr/bin/python3 {shlex.quote(str(inner))} {shlex.quote(str(vt.BUILD_DIR))} {a.reqs} {a.mib}\n"
    r = vt.run_kvm_script(script, timeout=3600, files=[HERE])
    if r.returncode != 0:
        print(r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
        return 1
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    where = "host KVM" if route == "host" else "KVM kit (nested KVM on QEMU TCG: absolute numbers are low)"
    print(f"virtio-blk benchmark ({where}); guest TSC {res['tsc_ghz']:.2f} GHz")

    def fig(kind, ns):
        if kind == "randread4k":
            return f"{res['reqs'] / (ns / 1e9):10.0f} IOPS"
        return f"{res['mib'] / (ns / 1e9):10.1f} MB/s"

    print(f"{'phase':12} {'vireo-vmm':>16} {'qemu':>16} {'host fio':>16} {'vireo/qemu':>11} {'vireo/fio':>10}")
    for k in ("randread4k", "seqwrite1m", "seqread1m"):
        v = res["vireo_ns"][k]
        q = res.get("qemu_ns", {}).get(k)
        f = res.get("fio_ns", {}).get(k)
        print(f"{k:12} {fig(k, v):>16} {fig(k, q) if q else 'n/a':>16} {fig(k, f) if f else 'n/a':>16} "
              f"{(q / v if q else float('nan')):11.2f} {(f / v if f else float('nan')):10.2f}")
    if "qemu_error" in res:
        print("qemu:", res["qemu_error"])
    nv, nq = res.get("net_vireo"), res.get("net_qemu")
    if nv:
        mbs = lambda n: n["bytes"] / (n["ns"] / 1e9) / 1e6
        pps = lambda n: n["packets"] / (n["ns"] / 1e9)
        line = f"virtio-net guest->netns UDP flood ({nv['packets']} x 1514-byte frames): vireo-vmm {mbs(nv):.1f} MB/s " \
               f"({pps(nv):.0f} pkt/s, {nv['delivered']} seen on the tap)"
        if nq:
            line += f"; qemu {mbs(nq):.1f} MB/s ({pps(nq):.0f} pkt/s, {nq['delivered']} seen); vireo/qemu {mbs(nv) / mbs(nq):.2f}"
        print(line)
    for k in ("net_error", "net_vireo_error", "net_qemu_error"):
        if k in res:
            print(f"{k}: {res[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
