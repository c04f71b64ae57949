"""vireo-img's command line against qemu-img 7.2: texts, exit codes and outputs compared literally.

Messages start with the program's own name, so vireo-img's stderr is compared after replacing
"vireo-img" by "qemu-img"; the build/qemu-img symlink must print "qemu-img:" itself.
"""
import json
import os
import random

import pytest

from conftest import BUILD_DIR, QIMG, VIMG, check_counts, make_random_raw, qimg, qio, run, vimg


def both(args, cwd):
    """Runs qemu-img and vireo-img with the same args in cwd; returns (q, v) CompletedProcess."""
    q = run([QIMG, *args], cwd=cwd)
    v = run([VIMG, *args], cwd=cwd)
    v.stderr = v.stderr.replace("vireo-img", "qemu-img")
    return q, v


ERROR_CASES = [
    [],
    ["frobnicate"],
    ["info"],
    ["info", "a", "b"],
    ["info", "-z", "x"],
    ["info", "--output=xml", "x.qcow2"],
    ["check", "-r", "foo", "x.qcow2"],
    ["create", "-f", "qcow2", "-o"],
    ["create", "-f", "qcow2", "y.qcow2", "1Q"],
    ["create", "-f", "qcow2", "y.qcow2"],
    ["create", "-f", "qcow2", "-o", "compat=0.10,lazy_refcounts=on", "y.qcow2", "1M"],
    ["create", "-f", "qcow2", "-o", "cluster_size=3000", "y.qcow2", "1M"],
    ["create", "-f", "qcow2", "-b", "x.qcow2", "y.qcow2"],
    ["snapshot", "-d", "nope", "x.qcow2"],
    ["resize", "x.qcow2", "-1M"],
    ["rebase", "x.qcow2"],
    ["compare", "x.qcow2", "missing.img"],
    ["measure"],
    ["measure", "--size", "1G", "x.qcow2"],
    ["convert", "--target-is-zero", "x.qcow2", "z.raw"],
    ["convert", "-m", "17", "x.qcow2", "z.raw"],
    ["amend", "-o", "cluster_size=4k", "x.qcow2"],
    ["dd", "if=x.qcow2"],
    ["dd", "if=x.qcow2", "of=z", "foo=1"],
]


@pytest.mark.parametrize("args", ERROR_CASES, ids=[" ".join(a) or "noargs" for a in ERROR_CASES])
def test_errors_match_qemu(tmp_path, args):
    qimg("create", "-q", "-f", "qcow2", tmp_path / "x.qcow2", "1M", check=0)
    q, v = both(args, tmp_path)
    assert v.returncode == q.returncode, f"qemu: {q.stderr}\nvireo: {v.stderr}"
    # the first line of the message is the same text
    assert v.stderr.splitlines()[:1] == q.stderr.splitlines()[:1]
    assert v.stdout == q.stdout


def test_symlink_name_and_version():
    link = BUILD_DIR / "qemu-img"
    assert link.exists()
    r = run([link, "frobnicate"])
    assert r.returncode == 1 and r.stderr.startswith("qemu-img: Command not found: frobnicate")
    r = vimg("frobnicate")
    assert r.stderr.startswith("vireo-img: Command not found")
    assert vimg("--version", check=0).stdout.startswith("vireo-img version")
    assert "create [-q] [-f fmt]" in vimg("--help", check=0).stdout


@pytest.mark.parametrize("args", [
    ["-f", "qcow2"],
    ["-f", "qcow2", "-o", "compat=0.10,cluster_size=512,preallocation=metadata"],
    ["-f", "qcow2", "-o", "cluster_size=2M,refcount_bits=64,lazy_refcounts=on,compression_type=zstd"],
    ["-f", "qcow2", "-o", "extended_l2=on"],
    ["-f", "raw"],
    ["-f", "raw", "-o", "preallocation=falloc"],
])
def test_create_formatting_line_and_info(tmp_path, args):
    (tmp_path / "q").mkdir()
    (tmp_path / "v").mkdir()
    q = run([QIMG, "create", *args, "img", "8M"], cwd=tmp_path / "q", check=0)
    v = run([VIMG, "create", *args, "img", "8M"], cwd=tmp_path / "v", check=0)
    assert v.stdout == q.stdout
    # qemu-img sees the vireo-created image exactly as its own (allocation may differ: actual-size aside)
    qi = json.loads(qimg("info", "--output=json", tmp_path / "q" / "img", check=0).stdout)
    vi = json.loads(qimg("info", "--output=json", tmp_path / "v" / "img", check=0).stdout)
    for d in (qi, vi):
        d.pop("actual-size")
        d.pop("filename")
    assert vi == qi
    if "qcow2" in args:
        qc = json.loads(qimg("check", "--output=json", tmp_path / "q" / "img", check=0).stdout)
        vc = json.loads(qimg("check", "--output=json", tmp_path / "v" / "img", check=0).stdout)
        for d in (qc, vc):
            d.pop("filename")
            d.pop("image-end-offset")   # preallocation may lay clusters out differently
        assert check_counts(vc) == check_counts(qc)


def test_create_backing_and_help(tmp_path):
    qimg("create", "-q", "-f", "qcow2", tmp_path / "base.qcow2", "32M", check=0)
    q, v = both(["create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"], tmp_path)
    assert q.returncode == v.returncode == 0 and v.stdout == q.stdout
    r = vimg("create", "-f", "qcow2", "-b", "nothere.qcow2", "-F", "qcow2", tmp_path / "t2.qcow2")
    assert r.returncode == 1 and "nothere.qcow2" in r.stderr
    r = vimg("create", "-q", "-f", "qcow2", "-u", "-b", "nothere.qcow2", "-F", "qcow2", tmp_path / "t3.qcow2", "1M")
    assert r.returncode == 0
    h = vimg("create", "-f", "qcow2", "-o", "help", check=0).stdout
    qh = qimg("create", "-f", "qcow2", "-o", "help", check=0).stdout
    for line in h.splitlines():   # every option we list, qemu lists with the same text
        assert line in qh.splitlines()
    assert vimg("create", "-f", "raw", "-o", "?", check=0).stdout == qimg("create", "-f", "raw", "-o", "?",
                                                                           check=0).stdout


def test_info_human_and_json(tmp_path):
    img = tmp_path / "i.qcow2"
    qimg("create", "-q", "-f", "qcow2", img, "64M", check=0)
    qio(img, ["write -P 1 0 3M", "write -z 8M 1M"])
    qimg("snapshot", "-c", "first", img, check=0)
    q, v = both(["info", "i.qcow2"], tmp_path)
    assert v.returncode == 0 and v.stdout == q.stdout
    q, v = both(["info", "--output=json", "i.qcow2"], tmp_path)
    assert json.loads(v.stdout) == json.loads(q.stdout)
    assert v.stdout.startswith("{\n    \"")   # qemu's 4-space layout
    q, v = both(["snapshot", "-l", "i.qcow2"], tmp_path)
    assert v.stdout == q.stdout and "first" in v.stdout
    raw = tmp_path / "r.img"
    qimg("create", "-q", "-f", "raw", raw, "10M", check=0)
    q, v = both(["info", "-f", "raw", "r.img"], tmp_path)
    assert v.stdout == q.stdout
    q, v = both(["info", "--output=json", "-f", "raw", "r.img"], tmp_path)
    assert json.loads(v.stdout) == json.loads(q.stdout)


def test_check_exit_codes_and_leak_repair(tmp_path):
    img = tmp_path / "c.qcow2"
    qimg("create", "-q", "-f", "qcow2", img, "1M", check=0)
    qio(img, ["write 0 64k"])
    # Leak two clusters: refcount 1 on clusters nobody references.
    with open(img, "r+b") as f:
        hdr = f.read(104)
        rt = int.from_bytes(hdr[48:56], "big")
        f.seek(rt)
        rb = int.from_bytes(f.read(8), "big")
        for c in (6, 7):
            f.seek(rb + 2 * c)
            f.write((1).to_bytes(2, "big"))
        f.seek(8 * 65536 - 1)
        f.write(b"\0")
    q, v = both(["check", "c.qcow2"], tmp_path)
    assert q.returncode == v.returncode == 3
    assert v.stdout == q.stdout
    assert "Leaked cluster 6 refcount=1 reference=0" in v.stderr
    q, v = both(["check", "--output=json", "c.qcow2"], tmp_path)
    assert json.loads(v.stdout) == json.loads(q.stdout)
    v = vimg("check", "-r", "leaks", img)
    assert v.returncode == 0, v.stderr
    assert v.stdout.startswith("The following inconsistencies were found and repaired:\n\n    2 leaked clusters\n")
    assert qimg("check", img).returncode == 0
    # raw: no checks
    raw = tmp_path / "r.img"
    qimg("create", "-q", "-f", "raw", raw, "1M", check=0)
    q, v = both(["check", "-f", "raw", "r.img"], tmp_path)
    assert q.returncode == v.returncode == 63
    assert v.stderr == q.stderr


def test_check_reports_corruption(tmp_path):
    img = tmp_path / "bad.qcow2"
    qimg("create", "-q", "-f", "qcow2", img, "1M", check=0)
    qio(img, ["write -P 9 0 128k"])
    # Zero the refcount of the first data cluster: a corruption (refcount 0, referenced 1).
    with open(img, "r+b") as f:
        hdr = f.read(104)
        rt = int.from_bytes(hdr[48:56], "big")
        f.seek(rt)
        rb = int.from_bytes(f.read(8), "big")
        f.seek(rb + 2 * 5)
        f.write((0).to_bytes(2, "big"))
    q, v = both(["check", "--output=json", "bad.qcow2"], tmp_path)
    assert q.returncode == 2 and v.returncode == 2
    assert json.loads(v.stdout)["corruptions"] == json.loads(q.stdout)["corruptions"]


def test_compare_messages(tmp_path):
    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    make_random_raw(a, 4 << 20, seed=4, chunks=6)
    b.write_bytes(a.read_bytes())
    q, v = both(["compare", "a.raw", "b.raw"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout) == (0, "Images are identical.\n")
    data = bytearray(b.read_bytes())
    data[1000] ^= 0xff
    data[3 << 20] ^= 1
    b.write_bytes(bytes(data))
    q, v = both(["compare", "a.raw", "b.raw"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout) == (1, "Content mismatch at offset 512!\n")
    q, v = both(["compare", "-q", "a.raw", "b.raw"], tmp_path)
    assert v.returncode == q.returncode == 1 and v.stdout == q.stdout == ""
    big = tmp_path / "big.qcow2"
    qimg("convert", "-O", "qcow2", a, big, check=0)
    qimg("resize", big, "+1M", check=0)
    q, v = both(["compare", "a.raw", "big.qcow2"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout) == (0, "Warning: Image size mismatch!\nImages are identical.\n")
    q, v = both(["compare", "-s", "a.raw", "big.qcow2"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout) == (1, "Strict mode: Image size mismatch!\n")
    qio(big, ["write -P 1 4M 512"])
    q, v = both(["compare", "a.raw", "big.qcow2"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    q, v = both(["compare", "a.raw", "nothere"], tmp_path)
    assert v.returncode == q.returncode == 2


def test_map_matches_qemu(tmp_path):
    base = tmp_path / "base.qcow2"
    qimg("create", "-q", "-f", "qcow2", base, "16M", check=0)
    qio(base, ["write -P 1 0 4M", "write -P 2 8M 1M"])
    top = tmp_path / "top.qcow2"
    qimg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, check=0)
    qio(top, ["write -P 3 1M 1M", "write -P 4 12M 64k"])
    for args in (["map", "top.qcow2"], ["map", "--output=json", "top.qcow2"], ["map", "base.qcow2"],
                 ["map", "--output=json", "--start-offset=1M", "--max-length=8M", "top.qcow2"]):
        q, v = both(args, tmp_path)
        assert v.returncode == 0 and v.stdout == q.stdout, args
    raw = tmp_path / "r.raw"
    make_random_raw(raw, 4 << 20, seed=3, chunks=3)
    q, v = both(["map", "-f", "raw", "--output=json", "r.raw"], tmp_path)
    assert [(e["start"] + e["length"]) for e in json.loads(v.stdout)][-1] == 4 << 20


@pytest.mark.parametrize("args", [
    ["measure", "--size", "1G", "-O", "qcow2"],
    ["measure", "--size", "1G", "-O", "raw"],
    ["measure", "--output=json", "--size", "10G", "-O", "qcow2", "-o", "cluster_size=4k"],
    ["measure", "--size", "100M", "-O", "qcow2", "-o", "refcount_bits=1,cluster_size=512"],
    ["measure", "--size", "100M", "-O", "qcow2", "-o", "extended_l2=on"],
    ["measure", "--size", "1G", "-O", "qcow2", "-o", "preallocation=full"],
    ["measure", "-O", "qcow2", "src.raw"],
    ["measure", "--output=json", "-O", "qcow2", "src.raw"],
    ["measure", "-O", "raw", "src.raw"],
])
def test_measure_matches_qemu(tmp_path, args):
    make_random_raw(tmp_path / "src.raw", 20 << 20, seed=8, chunks=10)
    q, v = both(args, tmp_path)
    assert v.returncode == q.returncode == 0
    if "--output=json" in args:
        assert json.loads(v.stdout) == json.loads(q.stdout)
    else:
        assert v.stdout == q.stdout


def test_resize_messages(tmp_path):
    for d in ("q", "v"):
        (tmp_path / d).mkdir()
        qimg("create", "-q", "-f", "qcow2", tmp_path / d / "r.qcow2", "8M", check=0)
    q = run([QIMG, "resize", "r.qcow2", "+8M"], cwd=tmp_path / "q")
    v = run([VIMG, "resize", "r.qcow2", "+8M"], cwd=tmp_path / "v")
    assert q.returncode == v.returncode == 0 and q.stdout == v.stdout == "Image resized.\n"
    q = run([QIMG, "resize", "r.qcow2", "-4M"], cwd=tmp_path / "q")
    v = run([VIMG, "resize", "r.qcow2", "-4M"], cwd=tmp_path / "v")
    assert q.returncode == v.returncode == 1
    assert v.stderr.replace("vireo-img", "qemu-img") == q.stderr
    q = run([QIMG, "resize", "--shrink", "r.qcow2", "-4M"], cwd=tmp_path / "q")
    v = run([VIMG, "resize", "--shrink", "r.qcow2", "-4M"], cwd=tmp_path / "v")
    assert q.returncode == v.returncode == 0 and q.stdout == v.stdout
    for d in ("q", "v"):
        info = json.loads(qimg("info", "--output=json", tmp_path / d / "r.qcow2", check=0).stdout)
        assert info["virtual-size"] == 12 << 20


def test_dd_and_bench(tmp_path):
    src = make_random_raw(tmp_path / "s.raw", 8 << 20, seed=12, chunks=8)
    qc = tmp_path / "s.qcow2"
    qimg("convert", "-O", "qcow2", src, qc, check=0)
    out = tmp_path / "o.raw"
    vimg("dd", "-O", "raw", "bs=64k", "count=20", "skip=3", f"if={qc}", f"of={out}", check=0)
    assert out.read_bytes() == src.read_bytes()[3 * 65536:23 * 65536]
    outq = tmp_path / "o.qcow2"
    vimg("dd", "-O", "qcow2", "bs=1M", f"if={src}", f"of={outq}", check=0)
    q = tmp_path / "q.raw"
    qimg("dd", "-O", "raw", "bs=1M", f"if={outq}", f"of={q}", check=0)
    assert q.read_bytes() == src.read_bytes()
    r = vimg("bench", "-w", "-c", "500", "-d", "4", "-s", "8k", "--pattern=5", "-f", "qcow2", qc, check=0)
    assert r.stdout.startswith("Sending 500 write requests, 8192 bytes each, 4 in parallel "
                               "(starting at offset 0, step size 8192)\nRun completed in ")
    data = tmp_path / "d.raw"
    qimg("convert", "-O", "raw", qc, data, check=0)
    assert data.read_bytes()[:500 * 8192] == bytes([5]) * (500 * 8192)
    assert qimg("check", qc).returncode == 0
    r = vimg("bench", "-c", "100", "-f", "qcow2", qc, check=0)
    assert r.stdout.startswith("Sending 100 read requests, 4096 bytes each, 64 in parallel")


def test_info_with_missing_backing_file(tmp_path):
    qimg("create", "-q", "-f", "qcow2", tmp_path / "gone.qcow2", "1M", check=0)
    qimg("create", "-q", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", tmp_path / "t.qcow2", check=0)
    (tmp_path / "gone.qcow2").unlink()
    q, v = both(["info", "--output=json", "t.qcow2"], tmp_path)
    assert q.returncode == v.returncode == 0
    assert json.loads(v.stdout) == json.loads(q.stdout)
    q, v = both(["info", "--backing-chain", "t.qcow2"], tmp_path)
    assert q.returncode == v.returncode == 1
    assert "gone.qcow2" in v.stderr
