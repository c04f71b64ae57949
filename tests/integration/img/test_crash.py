"""Crash safety: SIGKILL allocation-heavy vireo-img writers at random points, then `qemu-img check` must find no
corruption (leaked clusters are allowed) and the image must still open. At least 100 kills per run.

Writers (all into a pre-created qcow2, so every kill lands in the data/metadata-writing phase):
  - vireo-img convert -n (8 threads, in order or -W, sometimes -c) from a scattered random raw source;
  - vireo-img bench -w (sequential allocating writes through the block layer, with/without --flush-interval).
Small clusters (512 B - 64 KiB) and narrow/wide refcounts make allocation and refcount-block growth frequent.
"""
import json
import os
import random
import signal
import subprocess
import time

from conftest import QIMG, VIMG, make_random_raw, qimg

KILLS = int(os.environ.get("VIREO_IMG_CRASH_KILLS", "104"))
SIZE = 16 * 1024 * 1024

CONFIGS = [
    # (create options, writer kind, extra writer args)
    ("cluster_size=4k", "convert", ["-m", "8"]),
    ("cluster_size=4k,refcount_bits=1", "convert", ["-m", "8", "-W"]),
    ("cluster_size=512", "convert", ["-m", "4"]),
    ("cluster_size=64k,refcount_bits=64", "convert", ["-m", "8", "-W"]),
    ("cluster_size=4k", "convert", ["-c", "-m", "8"]),
    ("cluster_size=4k", "bench", ["-c", "6000", "-s", "4k", "-S", "8k", "-d", "8"]),
    ("cluster_size=512,refcount_bits=8", "bench", ["-c", "8000", "-s", "512", "-S", "2048", "-d", "4",
                                                     "--flush-interval=500"]),
    ("compat=0.10,cluster_size=4k", "bench", ["-c", "4000", "-s", "8k", "-S", "16k", "-d", "8"]),
]


def _writer_cmd(kind, extra, src, img):
    if kind == "convert":
        return [str(VIMG), "convert", "-n", "-O", "qcow2", *extra, str(src), str(img)]
    return [str(VIMG), "bench", "-w", "-q", "-f", "qcow2", "--pattern=165", *extra, str(img)]


def _fresh(img, opts):
    if img.exists():
        img.unlink()
    qimg("create", "-q", "-f", "qcow2", "-o", opts, img, str(SIZE), check=0)


def _full_run_seconds(kind, extra, src, img, opts):
    _fresh(img, opts)
    t0 = time.monotonic()
    subprocess.run(_writer_cmd(kind, extra, src, img), check=True, capture_output=True, timeout=120)
    dt = time.monotonic() - t0
    r = qimg("check", "--output=json", img)
    assert r.returncode == 0, f"uninterrupted {kind} {extra} on {opts}: {r.stdout}{r.stderr}"
    return dt


def test_sigkill_writers_leave_no_corruption(tmp_path):
    rng = random.Random(int(os.environ.get("VIREO_IMG_SEED", "4242")))
    src = make_random_raw(tmp_path / "src.raw", SIZE, seed=99, chunks=40, max_len=1024 * 1024)
    img = tmp_path / "crash.qcow2"
    durations = {i: _full_run_seconds(k, e, src, img, o) for i, (o, k, e) in enumerate(CONFIGS)}
    print("uninterrupted run times (s):", {i: round(d, 3) for i, d in durations.items()})
    kills = 0
    killed_midway = 0
    leaks_seen = 0
    i = 0
    while kills < KILLS:
        ci = i % len(CONFIGS)
        i += 1
        opts, kind, extra = CONFIGS[ci]
        _fresh(img, opts)
        delay = rng.uniform(0.0, durations[ci] * 0.95)
        p = subprocess.Popen(_writer_cmd(kind, extra, src, img), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        kills += 1
        if p.returncode == -signal.SIGKILL:
            killed_midway += 1
        else:
            assert p.returncode == 0, f"writer failed on its own: {err.decode()}"
        r = subprocess.run([QIMG, "check", "--output=json", str(img)], capture_output=True, text=True, timeout=60)
        where = f"kill {kills}: {kind} {extra} opts={opts} after {delay * 1000:.1f} ms"
        assert r.returncode in (0, 3), f"{where}: qemu-img check rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        j = json.loads(r.stdout)
        assert j.get("corruptions", 0) == 0 and j.get("check-errors", 0) == 0, f"{where}: {j}\n{r.stderr}"
        leaks_seen += 1 if j.get("leaks", 0) else 0
        if kills % 4:
            continue
        # vireo-img opens it too and reads it back entirely (every 4th kill, to keep the run short)
        v = subprocess.run([VIMG, "convert", "-O", "raw", str(img), str(tmp_path / "back.raw")],
                           capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, f"{where}: vireo-img cannot read the image back: {v.stderr}"
    assert kills >= 100
    # The kill points must really hit running writers most of the time, or the test proves nothing.
    assert killed_midway >= kills * 0.6, f"only {killed_midway}/{kills} kills hit a running writer"
    print(f"{kills} kills, {killed_midway} mid-write, {leaks_seen} left leaks")
