#!/usr/bin/env python3
"""vireo-vmm benchmarks, one run, ratios printed:
  exit dispatch: ns per guest PIO / MMIO exit through vireo-vmm (pio_loop/mmio_loop test guests, timed by their
                 boot markers) vs bench/vmm_raw_kvm_loop, a minimal KVM_RUN loop (the limit);
  startup:       process start -> first guest serial line and -> exit, for the hello guest, vireo-vmm vs
                 QEMU (-accel kvm -M microvm, booting the same ELF through its PVH note);
  RSS:           VMM resident memory excluding guest RAM (RssAnon+RssFile; guest RAM is a memfd in both,
                 i.e. RssShmem) while the spin guest runs.
Where this machine has no /dev/kvm the measurements run inside the KVM kit (nested KVM on QEMU TCG): the
ratios are then nested-TCG figures, as the output says. Usage: bench/vmm/run_bench.py [--build DIR] [--n N]"""
import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("VIREO_BUILD_DIR", str(HERE.parents[1] / "build")))
    ap.add_argument("--n", type=int, default=None, help="exits per loop (default 100000 on host, 5000 in the kit)")
    a = ap.parse_args()
    os.environ["VIREO_BUILD_DIR"] = str(Path(a.build).resolve())
    os.environ.setdefault("VIREO_SOURCE_DIR", str(HERE.parents[1]))
    sys.path.insert(0, str(HERE.parents[1] / "tests" / "support"))
    import vireo_testing as vt

    build = Path(os.environ["VIREO_BUILD_DIR"])
    for f in [build / "vireo-vmm", build / "bench" / "vmm_raw_kvm_loop", build / "tests/guests/pio_loop.elf"]:
        if not f.exists():
            print(f"vmm bench: SKIP: {f} not built (ninja -C {build} vireo-vmm vmm_raw_kvm_loop vireo_test_guests)")
            return 0
    route, why = vt.kvm_route()
    if route == "none":
        print(f"vmm bench: SKIP: no /dev/kvm and no KVM kit: {why}")
        return 0
    n = a.n or (100000 if route == "host" else 5000)
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    cmd = " ".join(shlex.quote(str(x)) for x in [py, HERE / "bench_inner.py", build, n])
    if route == "host":
        p = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=1800)
        rc, out, err = p.returncode, p.stdout, p.stderr
    else:
        r = vt.run_kvm_script(cmd + "\n", timeout=1800)
        rc, out, err = r.returncode, r.stdout, r.stderr
    if rc != 0:
        print(f"vmm bench: FAILED (rc {rc}):\n{err.decode(errors='replace')}")
        return 1
    R = json.loads(out.decode().strip().splitlines()[-1])
    where = ("host /dev/kvm" if route == "host" else
             "KVM kit: nested KVM under QEMU TCG -- absolute numbers are TCG-slow; ratios are nested-TCG figures")
    print(f"vireo-vmm benchmarks ({where}); n={R['n']} exits per loop")
    print(f"exit dispatch  PIO : vireo-vmm {R['vmm_pio_ns'] / 1000:9.2f} us/exit   raw KVM_RUN loop "
          f"{R['raw_pio_ns'] / 1000:9.2f} us/exit   ratio {R['vmm_pio_ns'] / R['raw_pio_ns']:.2f}x  "
          f"(PVM: {R.get('pvm_pio')})")
    print(f"exit dispatch  MMIO: vireo-vmm {R['vmm_mmio_ns'] / 1000:9.2f} us/exit   raw KVM_RUN loop "
          f"{R['raw_mmio_ns'] / 1000:9.2f} us/exit   ratio {R['vmm_mmio_ns'] / R['raw_mmio_ns']:.2f}x")
    print(f"startup (median of 3, hello guest, 64M): vireo-vmm first line {R['vmm_first_line_s'] * 1000:.1f} ms, "
          f"exit {R['vmm_exit_s'] * 1000:.1f} ms (rc {R['vmm_rc']}), boot-marker 1 at "
          f"{(R['vmm_marker1_us'] or 0) / 1000:.1f} ms after process start")
    if "qemu_first_line_s" in R:
        print(f"startup QEMU microvm: first line {R['qemu_first_line_s'] * 1000:.1f} ms, exit "
              f"{R['qemu_exit_s'] * 1000:.1f} ms (rc {R['qemu_rc']}); ratio vireo/QEMU first line "
              f"{R['vmm_first_line_s'] / R['qemu_first_line_s']:.2f}x, exit {R['vmm_exit_s'] / R['qemu_exit_s']:.2f}x")
        print(f"RSS excluding guest RAM: vireo-vmm {R['vmm_rss_kb'] / 1024:.1f} MiB, QEMU {R['qemu_rss_kb'] / 1024:.1f}"
              f" MiB, ratio {R['vmm_rss_kb'] / R['qemu_rss_kb']:.2f}x (guest RAM resident: vireo "
              f"{R['vmm_guest_shmem_kb'] / 1024:.1f} MiB, QEMU {R['qemu_guest_shmem_kb'] / 1024:.1f} MiB)")
    else:
        print(f"RSS excluding guest RAM: vireo-vmm {R['vmm_rss_kb'] / 1024:.1f} MiB; QEMU not installed: no comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
