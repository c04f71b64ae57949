"""Differencing VHD and VHDX images, and damaged VHD headers, against qemu-img 7.2.

qemu-img 7.2 reads a differencing VHD (disk type 4) as a dynamic VHD without its parent: sector bitmaps and
parent locators are ignored, `info` names no backing file, unallocated blocks read as zeroes. It refuses
differencing VHDX images ("Operation not supported"; "Invalid argument" when the parent locator item is
missing). vireo-img does the same, texts and exit codes included; these tests hold it to that.
"""
import shutil
import struct

import pytest

from conftest import QIMG, VIMG, qimg, run
from vhd_craft import Vhd, make_differencing
from vhdx_craft import Vhdx
from vhdx_craft import make_differencing as make_vhdx_differencing


def same(args, cwd):
    q = run([QIMG, *args], cwd=cwd)
    v = run([VIMG, *args], cwd=cwd)
    assert (v.returncode, v.stdout, v.stderr.replace("vireo-img", "qemu-img")) == \
           (q.returncode, q.stdout, q.stderr), args
    return q


def vpc_pair(tmp_path):
    qimg("create", "-q", "-f", "vpc", tmp_path / "parent.vhd", "8M", check=0)
    run(["qemu-io", "-f", "vpc", "-c", "write -P 3 0 3M", str(tmp_path / "parent.vhd")], check=0)
    qimg("create", "-q", "-f", "vpc", tmp_path / "child.vhd", "8M", check=0)
    run(["qemu-io", "-f", "vpc", "-c", "write -P 9 2M 4k", "-c", "write -P 8 6M 512", str(tmp_path / "child.vhd")],
        check=0)


@pytest.mark.parametrize("disk_type", [4, 5])
def test_differencing_vhd_reads_as_qemu_does(tmp_path, disk_type):
    vpc_pair(tmp_path)
    make_differencing(tmp_path / "child.vhd", tmp_path / "parent.vhd", tmp_path / "d.vhd", disk_type)
    for cmd in (["info", "d.vhd"], ["info", "--output=json", "d.vhd"], ["info", "--backing-chain", "d.vhd"],
                ["map", "d.vhd"], ["map", "--output=json", "d.vhd"], ["check", "d.vhd"],
                ["compare", "d.vhd", "child.vhd"], ["compare", "d.vhd", "parent.vhd"]):
        r = same(cmd, tmp_path)
        assert "backing" not in r.stdout
    run([QIMG, "convert", "-O", "raw", "d.vhd", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", "-O", "raw", "d.vhd", "v.raw"], cwd=tmp_path, check=0)
    raw = (tmp_path / "v.raw").read_bytes()
    assert raw == (tmp_path / "q.raw").read_bytes()
    # The child's own data; the parent's 3 MiB of pattern 3 are not read through (as in qemu).
    assert raw[2 << 20:(2 << 20) + 4096] == b"\x09" * 4096 and raw[:2 << 20] == bytes(2 << 20)


def _vhd_variants():
    def footer(fn):
        return lambda v: fn(v.footer)

    def dyn(fn):
        def f(v):
            h = v.dyn()
            fn(h)
            v.set_dyn(h)
        return f

    return {
        "bad-checksum": (footer(lambda f: f.__setitem__(20, 7)), False),
        "too-large": (footer(lambda f: (struct.pack_into(">Q", f, 48, 1 << 42), f.__setitem__(slice(28, 32), b"win "))),
                      True),
        "header-beyond-eof": (footer(lambda f: struct.pack_into(">Q", f, 16, 1 << 30)), True),
        "header-magic": (dyn(lambda h: h.__setitem__(slice(0, 8), b"cxsparsX")), True),
        "block-size": (dyn(lambda h: struct.pack_into(">I", h, 32, 3000)), True),
        "page-table-small": (dyn(lambda h: struct.pack_into(">I", h, 28, 1)), True),
        "max-table-entries": (dyn(lambda h: struct.pack_into(">I", h, 28, 0x7FFFFFFF)), True),
        "bat-beyond-eof": (dyn(lambda h: struct.pack_into(">Q", h, 16, 1 << 30)), True),
        "block-beyond-eof": ("truncate", True),
        "fixed-type-dynamic-layout": (footer(lambda f: struct.pack_into(">I", f, 60, 2)), True),
    }


VHD_VARIANTS = _vhd_variants()


@pytest.mark.parametrize("variant", list(VHD_VARIANTS))
def test_damaged_vhd_headers_like_qemu(tmp_path, variant):
    vpc_pair(tmp_path)
    change, reseal = VHD_VARIANTS[variant]
    v = Vhd(tmp_path / "child.vhd")
    if change == "truncate":
        v.d = v.d[:len(v.d) - (1 << 20)]
    else:
        change(v)
    v.save(tmp_path / "h.vhd", reseal=reseal)
    for cmd in (["info", "-f", "vpc", "h.vhd"], ["info", "-f", "vpc", "--output=json", "h.vhd"],
                ["map", "-f", "vpc", "h.vhd"], ["convert", "-f", "vpc", "-O", "raw", "h.vhd", "x.raw"]):
        same(cmd, tmp_path)


def test_not_a_vhd(tmp_path):
    (tmp_path / "z.vhd").write_bytes(bytes(4096))
    (tmp_path / "s.vhd").write_bytes(bytes(100))
    for f in ("z.vhd", "s.vhd"):
        r = same(["info", "-f", "vpc", f], tmp_path)
        assert r.stderr == f"qemu-img: Could not open '{f}': invalid VPC image\n"


@pytest.mark.parametrize("kind", ["with-locator", "without-locator", "no-page83"])
def test_differencing_vhdx_refused_like_qemu(tmp_path, kind):
    for n in ("parent", "child"):
        qimg("create", "-q", "-f", "vhdx", "-o", "block_size=1M", tmp_path / f"{n}.vhdx", "8M", check=0)
    img = Vhdx(tmp_path / "child.vhdx")
    if kind == "no-page83":
        # Drop the Page 83 item (qemu requires all five standard items) by renaming its GUID.
        mo = img.meta_offset
        n, = struct.unpack_from("<H", img.d, mo + 10)
        for i in range(n):
            e = mo + 32 + 32 * i
            if img.d[e:e + 16].hex() == "ab12cabee6b2234593efc309e000c746":
                img.d[e] ^= 0xFF
                struct.pack_into("<I", img.d, e + 24, 0)   # and not required, so only its absence counts
    else:
        make_vhdx_differencing(img, ".\\parent.vhdx", "C:\\vm\\parent.vhdx", locator=kind == "with-locator")
    img.save(tmp_path / "d.vhdx")
    want = {"with-locator": "Operation not supported", "without-locator": "Invalid argument",
            "no-page83": "Operation not supported"}[kind]
    for cmd in (["info", "d.vhdx"], ["check", "d.vhdx"], ["convert", "-O", "raw", "d.vhdx", "x.raw"]):
        shutil.copy(tmp_path / "d.vhdx", tmp_path / "d0.vhdx")
        r = same(cmd, tmp_path)
        assert r.returncode == 1 and r.stderr == f"qemu-img: Could not open 'd.vhdx': Could not open 'd.vhdx': {want}\n"
    r = same(["check", "-r", "all", "d.vhdx"], tmp_path)
    assert r.returncode == 1
    assert (tmp_path / "d.vhdx").read_bytes() == (tmp_path / "d0.vhdx").read_bytes()


def test_compare_size_warning_only_after_equal_common_part(tmp_path):
    """qemu-img compare prints "Warning: Image size mismatch!" only once the common part compared equal
    (a differencing VHD against its child found this: the sizes differ and so does the content)."""
    (tmp_path / "small.raw").write_bytes(b"\1" * 4096 + bytes((1 << 20) - 4096))
    with open(tmp_path / "big.raw", "wb") as f:
        f.truncate(2 << 20)
    with open(tmp_path / "tail.raw", "wb") as f:
        f.truncate(2 << 20)
        f.seek(1500000)
        f.write(b"x")
    with open(tmp_path / "zero.raw", "wb") as f:
        f.truncate(1 << 20)
    for a, b in (("small.raw", "big.raw"), ("zero.raw", "big.raw"), ("zero.raw", "tail.raw")):
        for extra in ([], ["-s"], ["-q"]):
            same(["compare", *extra, a, b], tmp_path)
    r = same(["compare", "small.raw", "big.raw"], tmp_path)
    assert r.stdout == "Content mismatch at offset 0!\n"
