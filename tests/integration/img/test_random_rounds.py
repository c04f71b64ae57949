"""Randomized rounds (seeded, time-bounded): qemu-io writes / zero-writes / discards interleaved with vireo-img
snapshot, convert, rebase and commit. After every round the image must equal a raw model file (qemu-img
compare) and pass qemu-img check with no corruption and no leak.

VIREO_IMG_SEED picks the seed (default: fixed, so CI is reproducible); VIREO_IMG_ROUNDS the number of rounds.
"""
import os
import random
import shutil
import time

from conftest import apply_model, assert_clean, assert_same_content, qimg, qio, qio_commands, random_ops, vimg

SIZE = 8 * 1024 * 1024
TIME_BUDGET = 45   # seconds per seed; rounds stop early when exceeded


def _round_robin_options(rng):
    return rng.choice(["", "cluster_size=4k", "cluster_size=512", "refcount_bits=1", "compat=0.10",
                       "lazy_refcounts=on", "compression_type=zstd", "cluster_size=2M", "refcount_bits=64"])


def _run_seed(tmp_path, seed, rounds):
    rng = random.Random(seed)
    d = tmp_path / f"seed{seed}"
    d.mkdir()
    model = d / "model.raw"
    with open(model, "wb") as f:
        f.truncate(SIZE)
    img = d / "img0.qcow2"
    opts = _round_robin_options(rng)
    vimg("create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), img, "8M", check=0)
    gen = 0
    snapshots = {}       # name -> model bytes (for the current image file only)
    chain = []           # backing files below img (paths), oldest first
    log = [f"seed={seed} opts={opts!r}"]
    start = time.monotonic()
    for rnd in range(rounds):
        if time.monotonic() - start > TIME_BUDGET:
            break
        ops = random_ops(rng, SIZE, rng.randrange(1, 8))
        if chain:   # discards over a backing file expose the backing data: keep the model exact
            ops = [("zero", o, n, p) if k == "discard" else (k, o, n, p) for k, o, n, p in ops]
        qio(img, qio_commands(ops))
        apply_model(model, ops)
        action = rng.choice(["snapshot", "apply", "delete", "convert", "convert_c", "overlay", "rebase_safe",
                             "rebase_flatten", "commit", "none"])
        log.append(f"round {rnd}: {len(ops)} ops, {action}")
        if action == "snapshot" and not chain:
            name = f"s{rnd}"
            r = vimg("snapshot", "-c", name, img)
            if r.returncode == 0:
                snapshots[name] = model.read_bytes()
            else:   # narrow refcounts (refcount_bits=1/2) legitimately overflow, as in qemu-img
                assert "refcount overflow" in r.stderr or "out of range" in r.stderr, r.stderr
                log.append("  snapshot refused: refcount overflow")
        elif action == "apply" and snapshots:
            name = rng.choice(sorted(snapshots))
            vimg("snapshot", "-a", name, img, check=0)
            model.write_bytes(snapshots[name])
        elif action == "delete" and snapshots:
            name = rng.choice(sorted(snapshots))
            vimg("snapshot", "-d", name, img, check=0)
            del snapshots[name]
        elif action in ("convert", "convert_c"):
            gen += 1
            out = d / f"img{gen}.qcow2"
            extra = ["-c"] if action == "convert_c" else []
            o = _round_robin_options(rng)
            vimg("convert", *extra, "-O", "qcow2", *(["-o", o] if o else []), img, out, check=0)
            img, snapshots, chain = out, {}, []
        elif action == "overlay" and len(chain) < 3:
            gen += 1
            top = d / f"img{gen}.qcow2"
            vimg("create", "-q", "-f", "qcow2", "-b", img.name, "-F", "qcow2", top, check=0)
            chain.append(img)
            img, snapshots = top, {}
        elif action == "rebase_safe" and chain:
            # a fresh base with other content; safe rebase must keep what img shows
            gen += 1
            nb = d / f"img{gen}.qcow2"
            vimg("create", "-q", "-f", "qcow2", nb, "8M", check=0)
            qio(nb, qio_commands([o for o in random_ops(rng, SIZE, 4) if o[0] == "write"]))
            vimg("rebase", "-b", nb.name, "-F", "qcow2", img, check=0)
            chain = [nb]
        elif action == "rebase_flatten" and chain:
            vimg("rebase", "-b", "", img, check=0)
            chain = []
        elif action == "commit" and chain:
            vimg("commit", img, check=0)
            assert_same_content(chain[-1], model)
            assert_clean(chain[-1])
            if rng.random() < 0.5:      # continue on the base
                img = chain.pop()
                snapshots = {}
        assert_same_content(img, model), "\n".join(log)
        assert_clean(img)
        for b in chain:
            assert_clean(b)
    return log


def test_random_rounds(tmp_path):
    seed = int(os.environ.get("VIREO_IMG_SEED", "20261122"))
    rounds = int(os.environ.get("VIREO_IMG_ROUNDS", "30"))
    for s in (seed, seed + 1):
        try:
            _run_seed(tmp_path, s, rounds)
        except AssertionError as e:
            raise AssertionError(f"seed {s}: {e}") from e
    shutil.rmtree(tmp_path, ignore_errors=True)
