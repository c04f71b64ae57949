"""vireo-img <-> qemu-img interoperability, with qemu-img/qemu-io 7.2 as the oracle.

A. Images written by vireo-img (every create option, convert outputs incl. -c zlib/zstd, snapshots,
   rebase/commit results) pass `qemu-img check` (exit 0, no leaks) and `qemu-img compare` with a raw reference.
B. Images written by qemu-img/qemu-io with every option convert with vireo-img to raw byte-identical to
   qemu-img's own conversion; `vireo-img check --output=json` and `info --output=json` equal qemu-img's.
"""
import json
import random
import shutil

import pytest

from conftest import (apply_model, assert_clean, assert_same_content, check_counts, human_check_lines,
                      make_random_raw, qimg, qio, qio_commands, random_ops, vimg)

SIZE = 8 * 1024 * 1024

CREATE_OPTIONS = [
    "",
    "compat=0.10",
    "cluster_size=512",
    "cluster_size=2M",
    "cluster_size=4k,refcount_bits=1",
    "refcount_bits=64",
    "refcount_bits=8",
    "lazy_refcounts=on",
    "compression_type=zstd",
    "extended_l2=on",
    "extended_l2=on,cluster_size=16k",
    "preallocation=metadata",
    "preallocation=falloc",
    "preallocation=full",
]


def ids(opts):
    return [o or "default" for o in opts]


# ------------------------------------------------------------------------------------------- A: vireo writes

@pytest.mark.parametrize("opts", CREATE_OPTIONS, ids=ids(CREATE_OPTIONS))
def test_vireo_create_then_qemu_writes(tmp_path, opts):
    img = tmp_path / "v.qcow2"
    args = ["create", "-q", "-f", "qcow2"] + (["-o", opts] if opts else []) + [img, "8M"]
    vimg(*args, check=0)
    assert_clean(img)
    # The image qemu sees has the options we were asked for.
    info = json.loads(qimg("info", "--output=json", img, check=0).stdout)
    assert info["virtual-size"] == SIZE
    data = info["format-specific"]["data"]
    o = dict(kv.split("=") for kv in opts.split(",")) if opts else {}
    assert data["compat"] == o.get("compat", "1.1")
    if "refcount_bits" in o:
        assert data["refcount-bits"] == int(o["refcount_bits"])
    if "cluster_size" in o:
        assert info["cluster-size"] == {"512": 512, "2M": 2 << 20, "4k": 4096, "16k": 16384}[o["cluster_size"]]
    if "compression_type" in o:
        assert data["compression-type"] == o["compression_type"]
    if o.get("lazy_refcounts") == "on":
        assert data["lazy-refcounts"] is True
    if o.get("extended_l2") == "on":
        assert data["extended-l2"] is True
    # qemu-io writes into it, and the content matches a raw model.
    model = tmp_path / "model.raw"
    model.write_bytes(b"")
    with open(model, "wb") as f:
        f.truncate(SIZE)
    ops = random_ops(random.Random(opts), SIZE, 25)
    qio(img, qio_commands(ops))
    apply_model(model, ops)
    assert_clean(img)
    assert_same_content(img, model)
    # and vireo-img agrees with qemu-img on info and check for it.
    assert json.loads(vimg("info", "--output=json", img, check=0).stdout) == \
        json.loads(qimg("info", "--output=json", img, check=0).stdout)
    assert check_counts(json.loads(vimg("check", "--output=json", img, check=0).stdout)) == \
        check_counts(json.loads(qimg("check", "--output=json", img, check=0).stdout))


@pytest.mark.parametrize("opts", CREATE_OPTIONS, ids=ids(CREATE_OPTIONS))
def test_vireo_convert_into_qcow2(tmp_path, opts):
    src = make_random_raw(tmp_path / "src.raw", SIZE, seed=hash(opts) & 0xffff)
    out = tmp_path / "out.qcow2"
    vimg("convert", "-O", "qcow2", *(["-o", opts] if opts else []), src, out, check=0)
    assert_clean(out)
    assert_same_content(out, src)


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
@pytest.mark.parametrize("cluster", ["64k", "4k", "2M"])
def test_vireo_convert_compressed(tmp_path, ctype, cluster):
    src = make_random_raw(tmp_path / "src.raw", SIZE, seed=7)
    # Add compressible content too (random bytes do not compress: those clusters are stored as-is).
    with open(src, "r+b") as f:
        f.seek(3 * 1024 * 1024)
        f.write(b"vireo compresses this " * 20000)
    out = tmp_path / "c.qcow2"
    vimg("convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype},cluster_size={cluster}", src, out, check=0)
    assert_clean(out)
    assert_same_content(out, src)
    chk = json.loads(qimg("check", "--output=json", out, check=0).stdout)
    assert chk.get("compressed-clusters", 0) > 0, chk
    info = json.loads(qimg("info", "--output=json", out, check=0).stdout)
    assert info["format-specific"]["data"]["compression-type"] == ctype
    # qemu-img reads back what vireo compressed, and vireo reads it back too.
    qraw, vraw = tmp_path / "q.raw", tmp_path / "v.raw"
    qimg("convert", "-O", "raw", out, qraw, check=0)
    vimg("convert", "-O", "raw", out, vraw, check=0)
    assert qraw.read_bytes() == src.read_bytes() == vraw.read_bytes()


def test_vireo_convert_to_raw_and_sparse_options(tmp_path):
    src = tmp_path / "src.qcow2"
    qimg("create", "-q", "-f", "qcow2", src, "8M", check=0)
    model = tmp_path / "model.raw"
    with open(model, "wb") as f:
        f.truncate(SIZE)
    ops = random_ops(random.Random(3), SIZE, 30)
    qio(src, qio_commands(ops))
    apply_model(model, ops)
    for extra in ([], ["-S", "0"], ["-S", "64k"], ["-m", "1"], ["-m", "16", "-W"], ["-p"]):
        out = tmp_path / "o.raw"
        r = vimg("convert", *extra, "-O", "raw", src, out, check=0)
        assert out.read_bytes() == model.read_bytes(), extra
        if extra == ["-p"]:
            assert "(100.00/100%)" in r.stdout
    # -S 0 fully allocates a qcow2 target; the default leaves zero areas unallocated.
    full, sparse = tmp_path / "full.qcow2", tmp_path / "sparse.qcow2"
    vimg("convert", "-S", "0", "-O", "qcow2", src, full, check=0)
    vimg("convert", "-O", "qcow2", src, sparse, check=0)
    cf = json.loads(qimg("check", "--output=json", full, check=0).stdout)
    cs = json.loads(qimg("check", "--output=json", sparse, check=0).stdout)
    assert cf["allocated-clusters"] == SIZE // 65536
    assert cs["allocated-clusters"] < cf["allocated-clusters"]
    assert_same_content(full, model)
    assert_same_content(sparse, model)


def test_vireo_convert_n_and_target_is_zero(tmp_path):
    src = make_random_raw(tmp_path / "src.raw", SIZE, seed=11)
    # An existing target full of junk: -n must overwrite data AND zero the holes.
    tgt = tmp_path / "t.qcow2"
    qimg("create", "-q", "-f", "qcow2", tgt, "8M", check=0)
    qio(tgt, ["write -P 0xee 0 8M"])
    vimg("convert", "-n", "-O", "qcow2", src, tgt, check=0)
    assert_same_content(tgt, src)
    assert_clean(tgt)
    # --target-is-zero on a fresh target.
    tz = tmp_path / "tz.qcow2"
    qimg("create", "-q", "-f", "qcow2", tz, "8M", check=0)
    vimg("convert", "-n", "--target-is-zero", "-O", "qcow2", src, tz, check=0)
    assert_same_content(tz, src)
    r = vimg("convert", "--target-is-zero", "-O", "qcow2", src, tmp_path / "x.qcow2")
    assert r.returncode == 1 and "--target-is-zero requires use of -n flag" in r.stderr


def test_vireo_convert_concatenates_sources(tmp_path):
    a = make_random_raw(tmp_path / "a.raw", 3 * 1024 * 1024 + 512, seed=1, chunks=4)
    b = make_random_raw(tmp_path / "b.raw", 2 * 1024 * 1024, seed=2, chunks=4)
    out, ref = tmp_path / "o.qcow2", tmp_path / "ref.raw"
    vimg("convert", "-O", "qcow2", a, b, out, check=0)
    ref.write_bytes(a.read_bytes() + b.read_bytes())
    assert_clean(out)
    assert_same_content(out, ref)


def test_vireo_convert_with_backing_B(tmp_path):
    base = make_random_raw(tmp_path / "base.raw", SIZE, seed=5)
    basec = tmp_path / "base.qcow2"
    qimg("convert", "-O", "qcow2", base, basec, check=0)
    top = tmp_path / "top.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, check=0)
    ops = random_ops(random.Random(9), SIZE, 20)
    qio(top, qio_commands([o for o in ops if o[0] != "discard"]))
    ref = tmp_path / "ref.raw"
    qimg("convert", "-O", "raw", top, ref, check=0)
    out = tmp_path / "out.qcow2"
    vimg("convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", top, out, check=0)
    assert_clean(out)
    assert_same_content(out, ref)
    info = json.loads(qimg("info", "--output=json", out, check=0).stdout)
    assert info["backing-filename"] == "base.qcow2"
    # Only what the overlay changed was copied: far less than the full image.
    chk = json.loads(qimg("check", "--output=json", out, check=0).stdout)
    full = json.loads(qimg("check", "--output=json", basec, check=0).stdout)
    assert chk["allocated-clusters"] <= json.loads(qimg("check", "--output=json", top, check=0).stdout)[
        "allocated-clusters"]
    assert full["allocated-clusters"] > 0


def test_vireo_snapshots_pass_qemu_check(tmp_path):
    img = tmp_path / "s.qcow2"
    vimg("create", "-q", "-f", "qcow2", img, "8M", check=0)
    model = tmp_path / "m.raw"
    with open(model, "wb") as f:
        f.truncate(SIZE)
    rng = random.Random(21)
    saved = {}
    for i in range(4):
        ops = random_ops(rng, SIZE, 10)
        qio(img, qio_commands(ops))
        apply_model(model, ops)
        vimg("snapshot", "-c", f"snap{i}", img, check=0)
        saved[f"snap{i}"] = model.read_bytes()
        assert_clean(img)
    listing = qimg("snapshot", "-l", img, check=0).stdout
    for name in saved:
        assert name in listing
    assert vimg("snapshot", "-l", img, check=0).stdout.splitlines()[2:] != []
    # convert -l reads a snapshot without touching the image
    out = tmp_path / "snap1.raw"
    vimg("convert", "-l", "snapshot.name=snap1", "-O", "raw", img, out, check=0)
    assert out.read_bytes() == saved["snap1"]
    qout = tmp_path / "q1.raw"
    qimg("convert", "-l", "snapshot.name=snap1", "-O", "raw", img, qout, check=0)
    assert qout.read_bytes() == saved["snap1"]
    # apply / delete
    vimg("snapshot", "-a", "snap2", img, check=0)
    model.write_bytes(saved["snap2"])
    assert_clean(img)
    assert_same_content(img, model)
    vimg("snapshot", "-d", "snap0", img, check=0)
    vimg("snapshot", "-d", "snap2", img, check=0)
    assert_clean(img)
    listing = qimg("snapshot", "-l", img, check=0).stdout
    assert "snap0" not in listing and "snap1" in listing and "snap3" in listing
    vimg("snapshot", "-a", "snap1", img, check=0)
    assert_same_content(img, tmp_path / "snap1.raw")
    r = vimg("snapshot", "-a", "nope", img)
    assert r.returncode == 1 and "Could not apply snapshot 'nope'" in r.stderr


def test_vireo_rebase_and_commit_results(tmp_path):
    base1 = tmp_path / "b1.qcow2"
    base2 = tmp_path / "b2.qcow2"
    top = tmp_path / "top.qcow2"
    vimg("create", "-q", "-f", "qcow2", base1, "16M", check=0)
    vimg("create", "-q", "-f", "qcow2", base2, "16M", check=0)
    qio(base1, ["write -P 1 0 8M"])
    qio(base2, ["write -P 2 4M 8M"])
    vimg("create", "-q", "-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", top, check=0)
    qio(top, ["write -P 3 2M 1M", "write -z 6M 64k"])
    ref = tmp_path / "ref.raw"
    qimg("convert", "-O", "raw", top, ref, check=0)
    # safe rebase keeps the content
    vimg("rebase", "-b", "b2.qcow2", "-F", "qcow2", top, check=0)
    assert json.loads(qimg("info", "--output=json", top, check=0).stdout)["backing-filename"] == "b2.qcow2"
    assert_clean(top)
    assert_same_content(top, ref)
    # commit into the new base: base == former content, top is emptied
    vimg("commit", top, check=0)
    assert_clean(base2)
    assert_same_content(base2, ref)
    assert_same_content(top, ref)
    chk = json.loads(qimg("check", "--output=json", top, check=0).stdout)
    assert chk.get("allocated-clusters", 0) == 0, chk
    # rebase -b '' flattens
    qio(top, ["write -P 4 0 64k"])
    qimg("convert", "-O", "raw", top, ref, check=0)
    vimg("rebase", "-b", "", top, check=0)
    assert "backing-filename" not in json.loads(qimg("info", "--output=json", top, check=0).stdout)
    assert_clean(top)
    assert_same_content(top, ref)
    # unsafe rebase only rewrites the header
    vimg("rebase", "-u", "-b", "b1.qcow2", "-F", "qcow2", top, check=0)
    assert json.loads(qimg("info", "--output=json", top, check=0).stdout)["backing-filename"] == "b1.qcow2"
    assert_clean(top)


def test_vireo_commit_d_and_b(tmp_path):
    a, b, c = tmp_path / "a.qcow2", tmp_path / "b.qcow2", tmp_path / "c.qcow2"
    vimg("create", "-q", "-f", "qcow2", a, "8M", check=0)
    qio(a, ["write -P 1 0 8M"])
    vimg("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b, check=0)
    qio(b, ["write -P 2 1M 1M"])
    vimg("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", c, check=0)
    qio(c, ["write -P 3 3M 1M", "write -z 5M 512k"])
    ref = tmp_path / "ref.raw"
    qimg("convert", "-O", "raw", c, ref, check=0)
    # -b a.qcow2 commits both c and b into a (and implies -d: c keeps its data)
    vimg("commit", "-b", str(a), c, check=0)
    assert_clean(a)
    assert_same_content(a, ref)
    assert_same_content(c, ref)
    cc = json.loads(qimg("check", "--output=json", c, check=0).stdout)
    assert cc.get("allocated-clusters", 0) > 0


def test_vireo_resize_and_amend(tmp_path):
    img = tmp_path / "r.qcow2"
    vimg("create", "-q", "-f", "qcow2", img, "8M", check=0)
    qio(img, ["write -P 7 0 8M"])
    assert vimg("resize", img, "+8M", check=0).stdout == "Image resized.\n"
    assert_clean(img)
    assert json.loads(qimg("info", "--output=json", img, check=0).stdout)["virtual-size"] == 16 << 20
    r = vimg("resize", img, "-4M")
    assert r.returncode == 1 and "Use the --shrink option" in r.stderr
    vimg("resize", "--shrink", img, "-12M", check=0)
    assert_clean(img)
    ref = tmp_path / "ref.raw"
    ref.write_bytes(bytes([7]) * (4 << 20))
    assert_same_content(img, ref)
    vimg("amend", "-o", "compat=0.10", img, check=0)
    assert json.loads(qimg("info", "--output=json", img, check=0).stdout)["format-specific"]["data"]["compat"] == "0.10"
    assert_clean(img)
    vimg("amend", "-o", "compat=1.1,lazy_refcounts=on", img, check=0)
    d = json.loads(qimg("info", "--output=json", img, check=0).stdout)["format-specific"]["data"]
    assert d["compat"] == "1.1" and d["lazy-refcounts"] is True
    assert_clean(img)
    assert_same_content(img, ref)
    raw = tmp_path / "r.raw"
    vimg("create", "-q", "-f", "raw", raw, "1M", check=0)
    vimg("resize", "-f", "raw", raw, "2M", check=0)
    assert raw.stat().st_size == 2 << 20


# ------------------------------------------------------------------------------------------- B: qemu writes

def _qemu_image(tmp_path, name, opts, ops_seed, compressed=False, snapshots=0, size="8M"):
    """Creates an image with qemu-img/qemu-io; returns its path."""
    img = tmp_path / name
    qimg("create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), img, size, check=0)
    rng = random.Random(ops_seed)
    nbytes = int(size[:-1]) << 20
    for s in range(snapshots):
        qio(img, qio_commands(random_ops(rng, nbytes, 8)))
        qimg("snapshot", "-c", f"s{s}", img, check=0)
    qio(img, qio_commands(random_ops(rng, nbytes, 20)))
    if compressed:
        tmp = tmp_path / (name + ".tmp")
        shutil.move(img, tmp)
        qimg("convert", "-c", "-O", "qcow2", *(["-o", opts] if opts else []), tmp, img, check=0)
        tmp.unlink()
        # and some uncompressed writes on top of compressed clusters
        qio(img, qio_commands(random_ops(rng, nbytes, 5)))
    return img


QEMU_VARIANTS = [
    ("default", "", {}),
    ("compat010", "compat=0.10", {}),
    ("cluster512", "cluster_size=512", {"size": "4M"}),
    ("cluster2M", "cluster_size=2M", {}),
    ("refcount1", "refcount_bits=1", {}),
    ("refcount64", "refcount_bits=64", {}),
    ("lazy", "lazy_refcounts=on", {}),
    ("zstd_compressed", "compression_type=zstd", {"compressed": True}),
    ("zlib_compressed", "", {"compressed": True}),
    ("zlib_compressed_4k", "cluster_size=4k", {"compressed": True}),
    ("extended_l2", "extended_l2=on", {}),
    ("extended_l2_compressed", "extended_l2=on,cluster_size=32k", {"compressed": True}),
    ("snapshots", "", {"snapshots": 3}),
    ("snapshots_v2", "compat=0.10", {"snapshots": 2}),
    ("prealloc_metadata", "preallocation=metadata", {}),
]


@pytest.mark.parametrize("name,opts,kw", QEMU_VARIANTS, ids=[v[0] for v in QEMU_VARIANTS])
def test_qemu_images_convert_check_info(tmp_path, name, opts, kw):
    img = _qemu_image(tmp_path, f"{name}.qcow2", opts, ops_seed=len(name), **kw)
    qraw, vraw = tmp_path / "q.raw", tmp_path / "v.raw"
    qimg("convert", "-O", "raw", img, qraw, check=0)
    vimg("convert", "-O", "raw", img, vraw, check=0)
    assert vraw.read_bytes() == qraw.read_bytes()
    # check counts (every field qemu prints) are equal
    qc = qimg("check", "--output=json", img)
    vc = vimg("check", "--output=json", img)
    assert vc.returncode == qc.returncode
    assert check_counts(json.loads(vc.stdout)) == check_counts(json.loads(qc.stdout))
    # human check output too
    assert human_check_lines(vimg("check", img).stdout) == human_check_lines(qimg("check", img).stdout)
    # info: every field identical (same file, so actual-size is the same too)
    assert json.loads(vimg("info", "--output=json", img, check=0).stdout) == \
        json.loads(qimg("info", "--output=json", img, check=0).stdout)
    # vireo-img -> qcow2 of it is clean and equal
    out = tmp_path / "re.qcow2"
    vimg("convert", "-O", "qcow2", img, out, check=0)
    assert_clean(out)
    assert_same_content(out, qraw)
    # measure agrees
    assert vimg("measure", "-O", "qcow2", img, check=0).stdout == qimg("measure", "-O", "qcow2", img, check=0).stdout
    for s in range(kw.get("snapshots", 0)):
        qs, vs = tmp_path / "qs.raw", tmp_path / "vs.raw"
        qimg("convert", "-l", f"snapshot.name=s{s}", "-O", "raw", img, qs, check=0)
        vimg("convert", "-l", f"snapshot.name=s{s}", "-O", "raw", img, vs, check=0)
        assert vs.read_bytes() == qs.read_bytes(), f"snapshot s{s}"


def test_qemu_dirty_lazy_refcounts_image(tmp_path):
    img = tmp_path / "dirty.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "16M", check=0)
    # qemu-io killed by its own SIGKILL: the image stays dirty with stale refcounts.
    r = qio(img, ["write -P 5 0 4M", "write -P 6 8M 1M", "sigraise 9"], check=None)
    assert r.returncode != 0
    info = json.loads(qimg("info", "-U", "--output=json", img, check=0).stdout)
    assert info["dirty-flag"] is True
    assert json.loads(vimg("info", "--output=json", img, check=0).stdout)["dirty-flag"] is True
    qraw, vraw = tmp_path / "q.raw", tmp_path / "v.raw"
    qimg("convert", "-U", "-O", "raw", img, qraw, check=0)
    vimg("convert", "-O", "raw", img, vraw, check=0)
    assert vraw.read_bytes() == qraw.read_bytes()
    # a read-write open (vireo check -r all) repairs it; qemu then finds it clean
    c2 = tmp_path / "c2.qcow2"
    shutil.copy(img, c2)
    vimg("check", "-r", "all", c2)
    assert_clean(c2)
    assert_same_content(c2, qraw)


def test_qemu_backing_chain_info_and_convert(tmp_path):
    base = _qemu_image(tmp_path, "base.qcow2", "", ops_seed=1)
    mid = tmp_path / "mid.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid, check=0)
    qio(mid, qio_commands(random_ops(random.Random(2), SIZE, 10)))
    sub = tmp_path / "sub"
    sub.mkdir()
    top = sub / "top.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-b", "../mid.qcow2", "-F", "qcow2", top, check=0)
    qio(top, qio_commands(random_ops(random.Random(3), SIZE, 10)))
    for args in (["--output=json"], ["--output=json", "--backing-chain"]):
        assert json.loads(vimg("info", *args, top, check=0).stdout) == \
            json.loads(qimg("info", *args, top, check=0).stdout)
    assert vimg("info", "--backing-chain", top, check=0).stdout == qimg("info", "--backing-chain", top, check=0).stdout
    qraw, vraw = tmp_path / "q.raw", tmp_path / "v.raw"
    qimg("convert", "-O", "raw", top, qraw, check=0)
    vimg("convert", "-O", "raw", top, vraw, check=0)
    assert vraw.read_bytes() == qraw.read_bytes()
    assert vimg("compare", top, qraw, check=0).stdout == "Images are identical.\n"
    del base
