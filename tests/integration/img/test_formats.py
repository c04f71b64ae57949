"""Foreign formats (vmdk, vhdx, vpc, vdi, qed) and LUKS against qemu-img/qemu-io 7.2.

Images qemu-img writes are read by vireo-img (info/map/check texts, JSON and exit codes equal; convert to raw
byte-identical); images vireo-img writes are judged by qemu-img (check, compare, qemu-io reads).
"""
import json
import os
import re

import pytest

from conftest import QIMG, VIMG, qimg, run, vimg

SECRET = ["--object", "secret,id=sec0,data=abc123"]


def both(args, cwd):
    q = run([QIMG, *args], cwd=cwd)
    v = run([VIMG, *args], cwd=cwd)
    v.stderr = v.stderr.replace("vireo-img", "qemu-img")
    return q, v


def assert_same(args, cwd):
    q, v = both(args, cwd)
    assert (v.returncode, v.stdout, v.stderr) == (q.returncode, q.stdout, q.stderr), args
    return q


def qio(args, cwd=None):
    r = run(["qemu-io", *args], cwd=cwd)
    assert r.returncode == 0 and "error" not in r.stdout.lower() and "fail" not in r.stdout.lower(), r.stdout + r.stderr
    return r


def make_raw(path, size=24 << 20):
    """Random data in a few places, zeroes elsewhere (sparse)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in [(0, 70000), (1 << 20, 3 << 20), (9 << 20, 65536), (size - 4096, 4096)]:
            f.seek(off)
            f.write(os.urandom(n))


WRITES = ["write -P 7 1M 3M", "write -P 9 60M 64k", "write -P 5 99M 64k"]

QEMU_IMAGES = [
    ("vmdk", ["-o", "subformat=monolithicSparse"]),
    ("vmdk", ["-o", "subformat=streamOptimized"]),
    ("vmdk", ["-o", "subformat=monolithicFlat"]),
    ("vmdk", ["-o", "subformat=twoGbMaxExtentSparse"]),
    ("vmdk", ["-o", "subformat=twoGbMaxExtentFlat"]),
    ("vmdk", ["-o", "zeroed_grain=on,adapter_type=lsilogic,hwversion=7"]),
    ("vhdx", []),
    ("vhdx", ["-o", "block_size=1M,block_state_zero=off"]),
    ("vhdx", ["-o", "subformat=fixed"]),
    ("vpc", []),
    ("vdi", []),
    ("vdi", ["-o", "static=on"]),
    ("qed", []),
    ("qed", ["-o", "cluster_size=128k,table_size=8"]),
]


def qemu_image(tmp_path, fmt, opts):
    path = tmp_path / f"img.{fmt}"
    qimg("create", "-q", "-f", fmt, *opts, path, "100M", check=0)
    qio(["-f", fmt, *sum((["-c", c] for c in WRITES), []), str(path)])
    if "zeroed_grain=on" in " ".join(opts):
        qio(["-f", fmt, "-c", "write -z 1M 64k", str(path)])
    return path


@pytest.mark.parametrize("fmt,opts", QEMU_IMAGES, ids=[f"{f}-{'-'.join(o)}" for f, o in QEMU_IMAGES])
def test_read_qemu_written(tmp_path, fmt, opts):
    path = qemu_image(tmp_path, fmt, opts)
    name = path.name
    for cmd in (["info"], ["info", "--output=json"], ["map", "--output=json"], ["check"],
                ["check", "--output=json"], ["info", "-f", fmt, "--output=json"]):
        q, v = both([*cmd, name], tmp_path)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout), cmd
        assert v.stderr == q.stderr, cmd
    q, v = both(["map", name], tmp_path)
    assert (v.returncode, v.stdout, v.stderr) == (q.returncode, q.stdout, q.stderr)
    # convert to raw: identical bytes; compare against qemu's conversion
    run([QIMG, "convert", "-f", fmt, "-O", "raw", name, "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", "-f", fmt, "-O", "raw", name, "v.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "q.raw").read_bytes() == (tmp_path / "v.raw").read_bytes()
    assert_same(["compare", "-f", fmt, "-F", "raw", name, "q.raw"], tmp_path)
    # and into qcow2
    run([VIMG, "convert", "-O", "qcow2", name, "v.qcow2"], cwd=tmp_path, check=0)
    run([QIMG, "compare", "v.qcow2", "q.raw"], cwd=tmp_path, check=0)
    # check -r: qemu's exit codes and texts (vmdk/vdi/vpc cannot repair: "does not support checks", 63)
    for r in ("leaks", "all"):
        q, v = both(["check", "-r", r, name], tmp_path)
        assert (v.returncode, v.stdout, v.stderr) == (q.returncode, q.stdout, q.stderr), r
    run([QIMG, "compare", "-f", fmt, "-F", "raw", name, "q.raw"], cwd=tmp_path, check=0)


def test_fixed_vhd_needs_format_and_reads(tmp_path):
    qimg("create", "-q", "-f", "vpc", "-o", "subformat=fixed", tmp_path / "f.vpc", "10M", check=0)
    qio(["-f", "vpc", "-c", "write -P 3 0 1M", str(tmp_path / "f.vpc")])
    for cmd in (["info", "f.vpc"], ["info", "-f", "vpc", "f.vpc"], ["map", "-f", "vpc", "--output=json", "f.vpc"],
                ["check", "-f", "vpc", "f.vpc"]):
        assert_same(cmd, tmp_path)
    run([VIMG, "convert", "-f", "vpc", "-O", "raw", "f.vpc", "v.raw"], cwd=tmp_path, check=0)
    run([QIMG, "convert", "-f", "vpc", "-O", "raw", "f.vpc", "q.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "q.raw").read_bytes() == (tmp_path / "v.raw").read_bytes()


VMDK_SUBFORMATS = ["monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse",
                   "twoGbMaxExtentFlat"]


def mask_cid(b):
    """The CID is random and printed without leading zeros (as QEMU does): widen it to 8 x's. A descriptor
    embedded in a sparse extent sits in a fixed, NUL-padded region, so the padding gives back the bytes the
    widening took; the file keeps its length and every other byte is compared as written."""
    m = re.search(rb"\nCID=([0-9a-f]{1,8})\n", b)
    if not m:  # an extent without a descriptor
        return b
    short = 8 - len(m.group(1))
    out = b[:m.start(1)] + b"x" * 8 + b[m.end(1):]
    end = out.find(b"\x00", m.end(1) + short)
    if short and end >= 0:
        assert out[end:end + short] == b"\x00" * short, "descriptor region has no padding left"
        out = out[:end] + out[end + short:]
    return out


@pytest.mark.parametrize("sub", VMDK_SUBFORMATS)
def test_vmdk_create_like_qemu(tmp_path, sub):
    for tool, d in ((QIMG, "q"), (VIMG, "v")):
        (tmp_path / d).mkdir()
        r = run([tool, "create", "-f", "vmdk", "-o", f"subformat={sub}", "disk.vmdk", "30M"], cwd=tmp_path / d)
        assert r.returncode == 0, r.stderr
        if tool == QIMG:
            line = r.stdout
        else:
            assert r.stdout == line
    qfiles = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert qfiles == sorted(p.name for p in (tmp_path / "v").iterdir())
    for n in qfiles:
        qb, vb = (tmp_path / "q" / n).read_bytes(), (tmp_path / "v" / n).read_bytes()
        assert mask_cid(qb) == mask_cid(vb), n


@pytest.mark.parametrize("sub", VMDK_SUBFORMATS)
def test_vmdk_written_by_vireo_is_read_by_qemu(tmp_path, sub):
    make_raw(tmp_path / "src.raw")
    run([VIMG, "convert", "-O", "vmdk", "-o", f"subformat={sub}", "src.raw", "o.vmdk"], cwd=tmp_path, check=0)
    r = run([QIMG, "check", "o.vmdk"], cwd=tmp_path, check=0)
    assert "No errors were found on the image." in r.stdout
    run([QIMG, "compare", "-F", "raw", "o.vmdk", "src.raw"], cwd=tmp_path, check=0)
    run([QIMG, "convert", "-O", "raw", "o.vmdk", "back.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "back.raw").read_bytes() == (tmp_path / "src.raw").read_bytes()
    for cmd in (["info", "--output=json", "o.vmdk"], ["map", "--output=json", "o.vmdk"], ["check", "o.vmdk"]):
        q, v = both(cmd, tmp_path)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout), cmd


def test_vmdk_qemu_writes_into_vireo_image_and_back(tmp_path):
    run([VIMG, "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", "d.vmdk", "20M"], cwd=tmp_path, check=0)
    qio(["-f", "vmdk", "-c", "write -P 1 0 100k", "-c", "write -z 1M 64k", "-c", "write -P 2 5M 1M",
         str(tmp_path / "d.vmdk")])
    qimg("check", tmp_path / "d.vmdk", check=0)
    for cmd in (["map", "--output=json", "d.vmdk"], ["info", "--output=json", "d.vmdk"]):
        q, v = both(cmd, tmp_path)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    run([QIMG, "convert", "-O", "raw", "d.vmdk", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", "-O", "raw", "d.vmdk", "v.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "q.raw").read_bytes() == (tmp_path / "v.raw").read_bytes()


def test_vmdk_backing_chain(tmp_path):
    make_raw(tmp_path / "src.raw", 8 << 20)
    run([QIMG, "convert", "-O", "vmdk", "src.raw", "base.vmdk"], cwd=tmp_path, check=0)
    run([VIMG, "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk"], cwd=tmp_path, check=0)
    qio(["-f", "vmdk", "-c", "write -P 4 64k 4k", str(tmp_path / "top.vmdk")])
    for cmd in (["info", "--output=json", "top.vmdk"], ["map", "--output=json", "top.vmdk"],
                ["info", "--backing-chain", "top.vmdk"]):
        q, v = both(cmd, tmp_path)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout), cmd
    run([QIMG, "convert", "-O", "raw", "top.vmdk", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", "-O", "raw", "top.vmdk", "v.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "q.raw").read_bytes() == (tmp_path / "v.raw").read_bytes()


@pytest.mark.parametrize("opts", [[], ["-o", "subformat=fixed"], ["-o", "block_size=1M,log_size=2M"],
                                  ["-o", "block_state_zero=off"]])
def test_vhdx_written_by_vireo(tmp_path, opts):
    make_raw(tmp_path / "src.raw")
    q, v = both(["create", "-f", "vhdx", *opts, "c.vhdx", "24M"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    run([VIMG, "convert", "-O", "vhdx", *opts, "src.raw", "o.vhdx"], cwd=tmp_path, check=0)
    r = run([QIMG, "check", "o.vhdx"], cwd=tmp_path, check=0)
    assert "No errors were found on the image." in r.stdout
    run([QIMG, "compare", "-F", "raw", "o.vhdx", "src.raw"], cwd=tmp_path, check=0)
    # qemu writes into the image vireo wrote; vireo reads what qemu wrote
    qio(["-f", "vhdx", "-c", "write -P 6 2M 1M", "-c", "write -P 8 23M 512", str(tmp_path / "o.vhdx")])
    run([QIMG, "convert", "-O", "raw", "o.vhdx", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", "-O", "raw", "o.vhdx", "v.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "q.raw").read_bytes() == (tmp_path / "v.raw").read_bytes()
    for cmd in (["info", "--output=json", "o.vhdx"], ["check", "--output=json", "o.vhdx"]):
        q, v = both(cmd, tmp_path)
        assert (v.returncode, v.stdout) == (q.returncode, q.stdout)


@pytest.mark.parametrize("fmt", ["vmdk", "vhdx", "vpc", "vdi", "qed", "luks"])
def test_option_help_matches(tmp_path, fmt):
    assert_same(["create", "-f", fmt, "-o", "help", "x"], tmp_path)


FORMATTING = [
    ("vmdk", "subformat=streamOptimized,adapter_type=lsilogic,hwversion=7,toolsversion=11,zeroed_grain=on"),
    ("vmdk", "preallocation=full"),
    ("vhdx", "subformat=fixed,block_size=1M,log_size=1M,block_state_zero=off"),
    ("vmdk", "bogus=1"),
    ("vdi", "static=maybe"),
    ("vmdk", "subformat=foo"),
    ("vmdk", "adapter_type=scsi"),
    ("vmdk", "subformat=monolithicFlat,zeroed_grain=on"),
    ("vmdk", "compat6=on,hwversion=7"),
    ("luks", "iter-time=abc"),
    ("luks", "cipher-alg=foo"),
]


@pytest.mark.parametrize("fmt,o", FORMATTING, ids=[f"{f}:{o}" for f, o in FORMATTING])
def test_create_lines_and_errors(tmp_path, fmt, o):
    q, v = both(["create", *SECRET, "-f", fmt, "-o", o, "y." + fmt, "10M"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    assert v.stderr == q.stderr


def test_vmdk_hostile_headers_give_qemu_errors(tmp_path):
    qimg("create", "-q", "-f", "vmdk", tmp_path / "good.vmdk", "10M", check=0)
    good = (tmp_path / "good.vmdk").read_bytes()

    def patched(off, data):
        b = bytearray(good)
        b[off:off + len(data)] = data
        return bytes(b)

    cases = {
        "version": patched(4, (9).to_bytes(4, "little")),
        "gtes": patched(44, (1024).to_bytes(4, "little")),
        "granularity0": patched(20, (0).to_bytes(8, "little")),
        "truncated": patched(64, (1 << 40).to_bytes(8, "little")),
        "huge-granularity": patched(20, (0x400000).to_bytes(8, "little")),
        "l1-too-big": patched(12, (1 << 50).to_bytes(8, "little")),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.vmdk").write_bytes(data)
        q, v = both(["info", f"{name}.vmdk"], tmp_path)
        assert (v.returncode, v.stderr) == (q.returncode, q.stderr), name
    (tmp_path / "bad.vmdk").write_bytes(b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                                        b"createType=\"monolithicFlat\"\nRW 100 FLAT \"x.raw\"\n")
    q, v = both(["info", "bad.vmdk"], tmp_path)
    assert (v.returncode, v.stderr) == (q.returncode, q.stderr)
    (tmp_path / "bad2.vmdk").write_bytes(b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                                         b"createType=\"streamOptimized\"\n")
    q, v = both(["info", "bad2.vmdk"], tmp_path)
    assert (v.returncode, v.stderr) == (q.returncode, q.stderr)


def test_vdi_hostile_headers(tmp_path):
    qimg("create", "-q", "-f", "vdi", tmp_path / "good.vdi", "10M", check=0)
    good = (tmp_path / "good.vdi").read_bytes()
    for name, off, val in [("version", 68, 0x00020001), ("blocksize", 376, 4096), ("sectorsize", 360, 4096),
                           ("bmap", 340, 0x201), ("disksize", 368, 1 << 40)]:
        b = bytearray(good)
        b[off:off + 4] = val.to_bytes(4, "little") if val < (1 << 32) else b""
        if val >= (1 << 32):
            b[off:off + 8] = val.to_bytes(8, "little")
        (tmp_path / f"{name}.vdi").write_bytes(bytes(b))
        q, v = both(["info", f"{name}.vdi"], tmp_path)
        assert (v.returncode, v.stderr) == (q.returncode, q.stderr), name


# ------------------------------------------------------------------------------------------------ LUKS

def luks_opts(path, fmt="luks"):
    key = "key-secret" if fmt == "luks" else "encrypt.key-secret"
    return ["--image-opts", f"driver={fmt},file.filename={path},{key}=sec0"]


@pytest.mark.parametrize("o", ["", ",cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1",
                               ",cipher-alg=serpent-256", ",cipher-alg=twofish-128,hash-alg=sha512",
                               ",ivgen-alg=plain"])
def test_luks_written_by_vireo_read_by_qemu(tmp_path, o):
    make_raw(tmp_path / "src.raw", 4 << 20)
    r = run([VIMG, "convert", *SECRET, "-O", "luks", "-o", "key-secret=sec0,iter-time=10" + o, "src.raw", "o.luks"],
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run([QIMG, "convert", *SECRET, *luks_opts("o.luks"), "-O", "raw", "back.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "back.raw").read_bytes() == (tmp_path / "src.raw").read_bytes()
    q, v = both(["info", "--output=json", "o.luks"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    # qemu-io writes unaligned data; qemu reads it back
    r = run(["qemu-io", *SECRET, *luks_opts("o.luks"), "-c", "write -P 7 1000 70000", "-c", "read -P 7 1000 70000"],
            cwd=tmp_path)
    assert "Pattern verification failed" not in r.stdout and r.returncode == 0


def test_luks_info_of_qemu_image(tmp_path):
    qimg("create", *SECRET, "-q", "-f", "luks", "-o", "key-secret=sec0,iter-time=10,cipher-alg=aes-128,"
         "cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1", tmp_path / "q.luks", "1M", check=0)
    for cmd in (["info", "q.luks"], ["info", "--output=json", "q.luks"], ["check", "q.luks"],
                ["map", "q.luks"], ["convert", "-O", "raw", "q.luks", "x.raw"]):
        q, v = both(cmd, tmp_path)
        assert (v.returncode, v.stdout, v.stderr) == (q.returncode, q.stdout, q.stderr), cmd


def test_luks_secret_errors(tmp_path):
    for args in (["--object", "secret,id=s,data=x", "--object", "secret,id=s,data=y"],
                 ["--object", "secret,id=s"], ["--object", "secret,data=x"],
                 ["--object", "secret,id=s,data=x,file=/etc/hostname"], ["--object", "foo,id=s"],
                 ["--object", "secret,id=s,data=%%%,format=base64"], ["--object", "secret,id=s,data=x,bogus=1"],
                 ["--object", "secret,id=s,data=x,format=hex"], ["--object", "secret,id=s,data=x,keyid=k"]):
        qimg("create", "-q", "-f", "raw", tmp_path / "r.raw", "1M", check=0)
        q, v = both(["info", *args, "r.raw"], tmp_path)
        assert (v.returncode, v.stderr) == (q.returncode, q.stderr), args
    for o in ("iter-time=1", "key-secret=nope,iter-time=1"):
        q, v = both(["create", *SECRET, "-f", "luks", "-o", o, "l.luks", "1M"], tmp_path)
        assert (v.returncode, v.stderr) == (q.returncode, q.stderr), o


def test_vmdk_check_grain_after_eof(tmp_path):
    import struct
    p = tmp_path / "h.vmdk"
    qimg("create", "-q", "-f", "vmdk", p, "10M", check=0)
    qio(["-f", "vmdk", "-c", "write -P 1 0 64k", str(p)])
    d = bytearray(p.read_bytes())
    gd = struct.unpack("<Q", d[56:64])[0]
    gt = struct.unpack("<I", d[gd * 512:gd * 512 + 4])[0]
    d[gt * 512:gt * 512 + 4] = struct.pack("<I", 0x7fffff00)
    p.write_bytes(bytes(d))
    for cmd in (["check", "h.vmdk"], ["check", "--output=json", "h.vmdk"]):
        q, v = both(cmd, tmp_path)
        assert (v.returncode, v.stdout, v.stderr) == (q.returncode, q.stdout, q.stderr)
        assert "points after EOF" in v.stderr


@pytest.mark.parametrize("o", ["encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
                               "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,"
                               "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv",
                               "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=4k"])
def test_qcow2_luks_written_by_vireo(tmp_path, o):
    make_raw(tmp_path / "src.raw", 6 << 20)
    q, v = both(["create", *SECRET, "-f", "qcow2", "-o", o, "c.qcow2", "6M"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    run([VIMG, "convert", *SECRET, "-O", "qcow2", "-o", o, "src.raw", "e.qcow2"], cwd=tmp_path, check=0)
    r = run([QIMG, "check", *SECRET, *luks_opts("e.qcow2", "qcow2")], cwd=tmp_path, check=0)
    assert "No errors were found on the image." in r.stdout
    run([QIMG, "convert", *SECRET, *luks_opts("e.qcow2", "qcow2"), "-O", "raw", "back.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "back.raw").read_bytes() == (tmp_path / "src.raw").read_bytes()
    # info needs no key, and matches qemu's (uuid and iteration counts are the image's own)
    q, v = both(["info", "--output=json", "e.qcow2"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    q, v = both(["info", "e.qcow2"], tmp_path)
    assert (v.returncode, v.stdout) == (q.returncode, q.stdout)
    # qemu-io writes into it, qemu reads back
    r = run(["qemu-io", *SECRET, *luks_opts("e.qcow2", "qcow2"), "-c", "write -P 3 100 5000", "-c",
             "read -P 3 100 5000"], cwd=tmp_path)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout


def test_qcow2_encrypted_by_qemu_info_and_errors(tmp_path):
    for fmt in ("luks", "aes"):
        extra = ",encrypt.iter-time=10" if fmt == "luks" else ""
        qimg("create", *SECRET, "-q", "-f", "qcow2", "-o", f"encrypt.format={fmt},encrypt.key-secret=sec0{extra}",
             tmp_path / f"{fmt}.qcow2", "4M", check=0)
        for cmd in (["info", f"{fmt}.qcow2"], ["info", "--output=json", f"{fmt}.qcow2"],
                    ["check", f"{fmt}.qcow2"], ["map", f"{fmt}.qcow2"],
                    ["convert", "-O", "raw", f"{fmt}.qcow2", "x.raw"]):
            q, v = both(cmd, tmp_path)
            assert (v.returncode, v.stdout, v.stderr) == (q.returncode, q.stdout, q.stderr), cmd


def test_encrypted_secret_object(tmp_path):
    """--object secret,keyid=,iv= (AES-256-CBC encrypted secret): the luks image vireo-img creates with it opens
    in qemu-io with the plain passphrase."""
    import base64
    import shutil
    import subprocess
    openssl = shutil.which("openssl")
    assert openssl, "openssl (Debian's openssl package) encrypts the test secret"
    key, iv = os.urandom(32), os.urandom(16)
    ct = subprocess.run([openssl, "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex(), "-base64", "-A"],
                        input=b"abc123", capture_output=True, check=True).stdout.decode()
    objs = ["--object", f"secret,id=k,data={base64.b64encode(key).decode()},format=base64",
            "--object", f"secret,id=sec0,data={ct},keyid=k,iv={base64.b64encode(iv).decode()}"]
    run([VIMG, "create", *objs, "-q", "-f", "luks", "-o", "key-secret=sec0,iter-time=10", "ks.luks", "1M"],
        cwd=tmp_path, check=0)
    r = run(["qemu-io", *SECRET, *luks_opts("ks.luks"), "-c", "read 0 512"], cwd=tmp_path)
    assert r.returncode == 0 and "read 512/512" in r.stdout, r.stdout + r.stderr
    # a wrong IV decrypts to garbage padding: the same error as qemu
    bad = objs[:3] + [f"secret,id=sec0,data={ct},keyid=k,iv={base64.b64encode(bytes(16)).decode()}"]
    q, v = both(["info", *bad, "ks.luks"], tmp_path)
    assert v.returncode == q.returncode
