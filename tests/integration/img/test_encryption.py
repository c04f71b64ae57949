"""Encrypted images not made by qemu-img, and the legacy AES qcow2 format, against qemu-img 7.2.

- LUKS2 volumes (cryptsetup luksFormat --type luks2, PBKDF2 and Argon2id keyslots): qemu-img 7.2 reads LUKS
  version 1 only. It probes a LUKS2 file as raw and refuses `-f luks` with "LUKS version 2 is not supported";
  vireo-img does the same, texts and exit codes included.
- LUKS1 volumes cryptsetup made (its defaults: aes-xts-plain64, sha256) are read by both.
"""
import shutil
import subprocess

import pytest

from conftest import QIMG, VIMG, run

SECRET = ["--object", "secret,id=sec0,data=abc123"]
CRYPTSETUP = shutil.which("cryptsetup", path="/usr/sbin:/sbin:/usr/bin:/bin")


def same(args, cwd):
    q = run([QIMG, *args], cwd=cwd)
    v = run([VIMG, *args], cwd=cwd)
    assert (v.returncode, v.stdout, v.stderr.replace("vireo-img", "qemu-img")) == \
           (q.returncode, q.stdout, q.stderr), args
    return q


def luks_format(path, *opts):
    assert CRYPTSETUP, "cryptsetup (Debian's cryptsetup-bin, scripts/setup.sh) makes the LUKS2 volumes"
    with open(path, "wb") as f:
        f.truncate(32 << 20)
    key = path.parent / "key"
    key.write_bytes(b"abc123")
    # A plain file is formatted without root or a loop device; cheap KDF settings keep the test fast.
    subprocess.run([CRYPTSETUP, "luksFormat", "-q", "--key-file", str(key), *opts, str(path)], check=True,
                   capture_output=True)


LUKS2 = {
    "pbkdf2": ["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    "argon2id": ["--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"],
    "argon2i-sha512": ["--type", "luks2", "--pbkdf", "argon2i", "--pbkdf-memory", "32",
                       "--pbkdf-force-iterations", "4", "--hash", "sha512"],
}


@pytest.mark.parametrize("kind", list(LUKS2))
def test_luks2_refused_like_qemu(tmp_path, kind):
    luks_format(tmp_path / "l2.img", *LUKS2[kind])
    r = same(["info", "l2.img"], tmp_path)
    assert "file format: raw" in r.stdout          # qemu's luks probe takes version 1 only
    for cmd in (["info", "-f", "luks", "l2.img"], ["info", "-f", "luks", "--output=json", "l2.img"],
                ["check", "-f", "luks", "l2.img"], ["map", "-f", "luks", "l2.img"],
                ["convert", *SECRET, "-f", "luks", "-O", "raw", "l2.img", "x.raw"],
                ["compare", "-f", "luks", "-F", "raw", "l2.img", "l2.img"]):
        r = same(cmd, tmp_path)
        # Opening for I/O asks for the key first (as in qemu), info (headers only) reaches the version.
        want = "LUKS version 2 is not supported" if cmd[0] == "info" else \
            "Parameter 'key-secret' is required for cipher"
        assert r.returncode != 0 and want in r.stderr, (cmd, r.stderr)
    # Probed as raw, it is copied as raw by both.
    same(["convert", "-O", "raw", "l2.img", "x.raw"], tmp_path)


def test_cryptsetup_luks1_info_like_qemu(tmp_path):
    luks_format(tmp_path / "l1.img", "--type", "luks1", "--pbkdf-force-iterations", "1000")
    for cmd in (["info", "l1.img"], ["info", "--output=json", "l1.img"], ["check", "l1.img"], ["map", "l1.img"],
                ["convert", "-O", "raw", "l1.img", "x.raw"], ["convert", *SECRET, "-O", "raw", "l1.img", "x.raw"]):
        same(cmd, tmp_path)


# --------------------------------------------------------------------------------------- --image-opts, AES

def opts(path, fmt="qcow2", key="sec0"):
    k = "encrypt.key-secret" if fmt == "qcow2" else "key-secret"
    return ["--image-opts", f"driver={fmt},file.filename={path}" + (f",{k}={key}" if key else "")]


def qemu_aes(tmp_path, name="aes.qcow2", extra=""):
    run([QIMG, "create", "-q", *SECRET, "-f", "qcow2", "-o", f"encrypt.format=aes,encrypt.key-secret=sec0{extra}",
         name, "4M"], cwd=tmp_path, check=0)
    run(["qemu-io", *SECRET, *opts(name), "-c", "write -P 5 100k 300k", "-c", "write -z 1M 64k",
         "-c", "write -P 6 3M 4097"], cwd=tmp_path, check=0)


@pytest.mark.parametrize("extra", ["", ",cluster_size=4k", ",compat=0.10"])
def test_aes_qcow2_read_like_qemu(tmp_path, extra):
    qemu_aes(tmp_path, extra=extra)
    for cmd in (["info", "aes.qcow2"], ["info", "--output=json", "aes.qcow2"],
                ["info", *SECRET, *opts("aes.qcow2")], ["info", "--output=json", *SECRET, *opts("aes.qcow2")],
                ["info", *opts("aes.qcow2", key=None)],
                ["check", *SECRET, *opts("aes.qcow2")], ["check", "--output=json", *SECRET, *opts("aes.qcow2")],
                ["map", "--output=json", *SECRET, *opts("aes.qcow2")], ["map", *SECRET, *opts("aes.qcow2")],
                ["compare", *SECRET, *opts("aes.qcow2"), *opts("aes.qcow2")[1:]],
                ["measure", *SECRET, *opts("aes.qcow2"), "-O", "qcow2"],
                ["measure", "--output=json", *SECRET, *opts("aes.qcow2"), "-O", "qcow2"],
                ["convert", *opts("aes.qcow2", key=None), "-O", "raw", "x.raw"],
                ["convert", *SECRET, *opts("aes.qcow2", key="nope"), "-O", "raw", "x.raw"]):
        same(cmd, tmp_path)
    run([QIMG, "convert", *SECRET, *opts("aes.qcow2"), "-O", "raw", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", *SECRET, *opts("aes.qcow2"), "-O", "raw", "v.raw"], cwd=tmp_path, check=0)
    raw = (tmp_path / "v.raw").read_bytes()
    assert raw == (tmp_path / "q.raw").read_bytes()
    assert raw[100 << 10:400 << 10] == b"\x05" * (300 << 10) and raw[3 << 20:(3 << 20) + 4097] == b"\x06" * 4097
    # Converted out of AES into a plain qcow2: qemu-img finds the same content.
    run([VIMG, "convert", *SECRET, *opts("aes.qcow2"), "-O", "qcow2", "plain.qcow2"], cwd=tmp_path, check=0)
    run([QIMG, "compare", "-F", "raw", "plain.qcow2", "q.raw"], cwd=tmp_path, check=0)


def test_aes_qcow2_written_by_vireo_read_by_qemu(tmp_path):
    """qemu-img 7.2 still creates and writes AES qcow2 images (only its system emulators refuse them)."""
    src = tmp_path / "src.raw"
    with open(src, "wb") as f:
        f.truncate(4 << 20)
        f.seek(70000)
        f.write(bytes(range(256)) * 1000)
    o = ["-o", "encrypt.format=aes,encrypt.key-secret=sec0"]
    same(["create", *SECRET, "-f", "qcow2", *o, "c.qcow2", "4M"], tmp_path)
    run([VIMG, "convert", *SECRET, "-O", "qcow2", *o, "src.raw", "v.qcow2"], cwd=tmp_path, check=0)
    run([QIMG, "convert", *SECRET, *opts("v.qcow2"), "-O", "raw", "back.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "back.raw").read_bytes() == src.read_bytes()
    r = run([QIMG, "check", *SECRET, *opts("v.qcow2")], cwd=tmp_path, check=0)
    assert "No errors were found on the image." in r.stdout
    # qemu-io writes unaligned data into it; vireo-img reads what qemu reads.
    run(["qemu-io", *SECRET, *opts("v.qcow2"), "-c", "write -P 7 1000 70000"], cwd=tmp_path, check=0)
    run([QIMG, "convert", *SECRET, *opts("v.qcow2"), "-O", "raw", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", *SECRET, *opts("v.qcow2"), "-O", "raw", "v.raw"], cwd=tmp_path, check=0)
    assert (tmp_path / "v.raw").read_bytes() == (tmp_path / "q.raw").read_bytes()


def test_cryptsetup_luks1_and_luks2_through_image_opts(tmp_path):
    luks_format(tmp_path / "l1.img", "--type", "luks1", "--pbkdf-force-iterations", "1000")
    run(["qemu-io", *SECRET, *opts("l1.img", "luks"), "-c", "write -P 4 1M 1M"], cwd=tmp_path, check=0)
    same(["info", *SECRET, *opts("l1.img", "luks")], tmp_path)
    same(["check", *SECRET, *opts("l1.img", "luks")], tmp_path)
    run([QIMG, "convert", *SECRET, *opts("l1.img", "luks"), "-O", "raw", "q.raw"], cwd=tmp_path, check=0)
    run([VIMG, "convert", *SECRET, *opts("l1.img", "luks"), "-O", "raw", "v.raw"], cwd=tmp_path, check=0)
    raw = (tmp_path / "v.raw").read_bytes()
    assert raw == (tmp_path / "q.raw").read_bytes() and raw[1 << 20:2 << 20] == b"\x04" * (1 << 20)
    luks_format(tmp_path / "l2.img", *LUKS2["argon2id"])
    r = same(["convert", *SECRET, *opts("l2.img", "luks"), "-O", "raw", "x.raw"], tmp_path)
    assert r.stderr == ("qemu-img: Could not open 'driver=luks,file.filename=l2.img,key-secret=sec0': "
                        "LUKS version 2 is not supported\n")


@pytest.mark.parametrize("arg", ["plain.qcow2", "driver=qcow2", "driver=qcow2,file.filename=nope.qcow2",
                                 "file.filename=plain.qcow2,key-secret=x", "driver=qcow2,file.filename=plain.qcow2,bogus=1",
                                 "driver=raw,file.filename=plain.qcow2", "file.filename=plain.qcow2",
                                 "driver=qcow2,file.filename=plain.qcow2,driver=raw"])
def test_image_opts_like_qemu(tmp_path, arg):
    run([QIMG, "create", "-q", "-f", "qcow2", "plain.qcow2", "1M"], cwd=tmp_path, check=0)
    for cmd in (["info", "--image-opts", arg], ["info", "--output=json", "--image-opts", arg],
                ["check", "--image-opts", arg], ["map", "--image-opts", arg],
                ["convert", "--image-opts", arg, "-O", "raw", "x.raw"],
                ["compare", "--image-opts", arg, arg], ["info", "--image-opts", "-f", "qcow2", arg]):
        same(cmd, tmp_path)
