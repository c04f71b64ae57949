"""Shared helpers for the vireo-img interop suites: run vireo-img and the real qemu-img/qemu-io side by side."""
import json
import os
import pathlib
import random
import shutil
import subprocess

import pytest

BUILD_DIR = pathlib.Path(os.environ.get("VIREO_BUILD_DIR", pathlib.Path(__file__).resolve().parents[3] / "build"))
VIMG = BUILD_DIR / "vireo-img"
QIMG = shutil.which("qemu-img", path="/usr/bin:/bin:/usr/local/bin")
QIO = shutil.which("qemu-io", path="/usr/bin:/bin:/usr/local/bin")


def _need_tools():
    if not VIMG.exists():
        pytest.fail(f"{VIMG} is not built")
    if not QIMG or not QIO:
        pytest.skip("qemu-img/qemu-io (qemu-utils) not installed: the interop oracle is missing")


@pytest.fixture(autouse=True)
def tools():
    _need_tools()


def run(args, cwd=None, check=None, input=None, timeout=120):
    """Runs a command list; returns CompletedProcess with text output. check=rc asserts the exit code."""
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, input=input,
                       timeout=timeout)
    if check is not None:
        assert r.returncode == check, f"{args}: rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    return r


def vimg(*args, **kw):
    return run([VIMG, *args], **kw)


def qimg(*args, **kw):
    return run([QIMG, *args], **kw)


def qio(path, cmds, fmt="qcow2", **kw):
    args = [QIO, "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    args.append(path)
    return run(args, check=kw.pop("check", 0), **kw)


def qemu_check_json(path, fmt="qcow2"):
    r = qimg("check", "-f", fmt, "--output=json", path)
    assert r.returncode in (0, 2, 3), r.stderr
    return r.returncode, json.loads(r.stdout)


def assert_clean(path):
    """qemu-img check reports no corruption and no leak."""
    r = qimg("check", "--output=json", path)
    assert r.returncode == 0, f"qemu-img check {path}: rc={r.returncode}\n{r.stdout}{r.stderr}"
    j = json.loads(r.stdout)
    assert j.get("corruptions", 0) == 0 and j.get("leaks", 0) == 0, j


def assert_same_content(img, raw, fmt=None):
    args = ["compare"]
    if fmt:
        args += ["-f", fmt]
    args += ["-F", "raw", img, raw]
    r = qimg(*args)
    assert r.returncode == 0, f"qemu-img compare {img} {raw}: {r.stdout}{r.stderr}"


def random_ops(rng, size, n, align=512, max_len=256 * 1024):
    """A list of (kind, offset, length, pattern) with kind in write/zero/discard, aligned to `align`."""
    ops = []
    for _ in range(n):
        kind = rng.choices(["write", "zero", "discard"], [6, 2, 1])[0]
        if kind == "discard":
            # qcow2 ignores the parts of a discard that do not cover whole clusters; discards aligned to
            # 2 MiB (the largest cluster size) are whole-cluster everywhere and read back as zeroes.
            big = 2 * 1024 * 1024
            if size < 2 * big:
                kind = "zero"
            else:
                length = rng.randrange(1, 3) * big
                off = rng.randrange(0, (size - length) // big + 1) * big
                ops.append((kind, off, length, 0))
                continue
        length = rng.randrange(1, max_len // align + 1) * align
        off = rng.randrange(0, (size - length) // align + 1) * align
        ops.append((kind, off, length, rng.randrange(1, 256)))
    return ops


def qio_commands(ops):
    cmds = []
    for kind, off, length, pat in ops:
        if kind == "write":
            cmds.append(f"write -P {pat} {off} {length}")
        elif kind == "zero":
            cmds.append(f"write -z {off} {length}")
        else:
            cmds.append(f"discard {off} {length}")
    return cmds


def apply_model(model_path, ops):
    """Applies ops to a raw model file (discard reads back as zeroes on images without a backing file)."""
    with open(model_path, "r+b") as f:
        for kind, off, length, pat in ops:
            f.seek(off)
            f.write(bytes([pat]) * length if kind == "write" else bytes(length))


def make_random_raw(path, size, seed, chunks=24, max_len=512 * 1024):
    """A raw file of `size` with random bytes in scattered extents (the rest sparse zeroes)."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(chunks):
            length = rng.randrange(1, max_len // 512 + 1) * 512
            off = rng.randrange(0, (size - length) // 512 + 1) * 512
            f.seek(off)
            f.write(rng.randbytes(length))
    return path


# Known block-layer deviations from qemu-img 7.2 (see docs/img.md, "Engine issues"). Each has a dedicated
# strict-xfail test in test_engine_issues.py; the general comparisons leave just these fields out.
KNOWN_CHECK_FIELD_DEVIATIONS = ()


def check_counts(j):
    """A check JSON dict without the fields with known engine deviations."""
    return {k: v for k, v in j.items() if k not in KNOWN_CHECK_FIELD_DEVIATIONS}


def human_check_lines(text):
    """Human check output without the fragmentation figures."""
    out = []
    for line in text.splitlines():
        if "fragmented-clusters" in KNOWN_CHECK_FIELD_DEVIATIONS and "% fragmented" in line:
            line = line.split(" allocated, ")[0]
        out.append(line)
    return out
