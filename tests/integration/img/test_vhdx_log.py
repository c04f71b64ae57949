"""VHDX log replay against qemu-img 7.2: images qemu-img wrote, with a log crafted as a crash leaves it (a log
entry on disk, its metadata not yet in place). Both tools run on copies of the same file; texts, exit codes,
JSON, the replayed files' bytes and the converted bytes are compared.
"""
import shutil
import uuid

import pytest

from conftest import QIMG, VIMG, qimg, run
from vhdx_craft import MIB, Vhdx, bat_sector_with, entry, with_checksum


def both(args, tmp_path, name):
    """Runs qemu-img on q-<name> and vireo-img on v-<name> (fresh copies of <name>)."""
    out = []
    for tool, tag in ((QIMG, "q"), (VIMG, "v")):
        shutil.copy(tmp_path / name, tmp_path / f"{tag}-{name}")
        r = run([tool, *[a.replace("@", f"{tag}-{name}") for a in args]], cwd=tmp_path)
        out.append((r.returncode, r.stdout.replace(f"{tag}-{name}", "X"),
                    r.stderr.replace("vireo-img", "qemu-img").replace(f"{tag}-{name}", "X")))
    return out


def base(tmp_path):
    p = tmp_path / "base.vhdx"
    qimg("create", "-q", "-f", "vhdx", "-o", "block_size=1M", p, "8M", check=0)
    run(["qemu-io", "-f", "vhdx", "-c", "write -P 1 0 1M", str(p)], check=0)
    return p


def crash(tmp_path, name, *, entries=None, **hdr):
    """base.vhdx after a crash: block 3 newly allocated at the end of the file (its data written), the BAT
    update and a zeroing of 8 KiB in block 0 in the log. `entries(img, guid, flen, newblk)` overrides them."""
    img = Vhdx(base(tmp_path))
    flen = len(img.d)
    newblk = (flen + MIB - 1) // MIB * MIB
    img.d.extend(b"\0" * (newblk - flen) + b"\x5a" * MIB)
    guid = uuid.uuid4().bytes_le
    img.set_log_guid(guid, **hdr)
    if entries is None:
        off, sec = bat_sector_with(img, 3, newblk | 6)
        b0 = img.bat(0) & ~0xFFFFF
        e = [entry(guid, 10, [("data", off, sec), ("zero", b0 + 8192, 8192)], flen, newblk + MIB),
             entry(guid, 11, [("data", b0 + 65536, bytes([0x33]) * 4096)], newblk + MIB, newblk + MIB)]
        img.write_log(e)
    else:
        entries(img, guid, flen, newblk)
    img.save(tmp_path / name)


READ_CMDS = [["info", "@"], ["info", "--output=json", "@"], ["check", "@"], ["check", "--output=json", "@"],
             ["map", "@"], ["convert", "-O", "raw", "@", "x.raw"], ["compare", "@", "base.vhdx"]]


def test_pending_log_refused_read_only_like_qemu(tmp_path):
    crash(tmp_path, "c.vhdx")
    for cmd in READ_CMDS:
        q, v = both(cmd, tmp_path, "c.vhdx")
        assert v == q, cmd
        assert q[0] == (2 if cmd[0] == "compare" else 1) and "contains a log that needs to be replayed\nTo replay the log, run:\n" \
                              "qemu-img check -r all 'X'\n" in q[2], q


@pytest.mark.parametrize("repair", [["-r", "all"], ["-r", "leaks"], ["-r", "all", "--output=json"]])
def test_replay_like_qemu(tmp_path, repair):
    crash(tmp_path, "c.vhdx")
    q, v = both(["check", *repair, "@"], tmp_path, "c.vhdx")
    assert v == q
    assert q[0] == 0 and ("1 corruptions" in q[1] or '"corruptions-fixed": 1' in q[1]), q
    qf, vf = (tmp_path / "q-c.vhdx").read_bytes(), (tmp_path / "v-c.vhdx").read_bytes()
    # Beyond the header section (headers carry each tool's own GUIDs and sequence numbers) byte-identical:
    # the BAT and the block replayed, the log entries left in place, the same file size.
    assert len(vf) == len(qf) and vf[MIB:] == qf[MIB:]
    for f in ("q-c.vhdx", "v-c.vhdx"):
        assert Vhdx(tmp_path / f).hdr["log_guid"] == bytes(16), f   # log emptied
    # Both tools now read both files the same way; the content is what the log said.
    for f in ("q-c.vhdx", "v-c.vhdx"):
        for cmd in (["info", "--output=json", f], ["check", f], ["map", "--output=json", f]):
            rq, rv = run([QIMG, *cmd], cwd=tmp_path), run([VIMG, *cmd], cwd=tmp_path)
            assert (rv.returncode, rv.stdout) == (rq.returncode, rq.stdout) == (0, rq.stdout), cmd
    run([VIMG, "convert", "-O", "raw", "v-c.vhdx", "v.raw"], cwd=tmp_path, check=0)
    run([QIMG, "convert", "-O", "raw", "q-c.vhdx", "q.raw"], cwd=tmp_path, check=0)
    raw = (tmp_path / "v.raw").read_bytes()
    assert raw == (tmp_path / "q.raw").read_bytes()
    assert raw[:8192] == b"\1" * 8192 and raw[8192:16384] == bytes(8192) and raw[65536:69632] == b"\x33" * 4096
    assert raw[3 * MIB:4 * MIB] == b"\x5a" * MIB and raw[MIB:3 * MIB] == bytes(2 * MIB)
    # The second check finds nothing more to do.
    q, v = both(["check", "-r", "all", "@"], tmp_path, "q-c.vhdx")
    assert v == q == (0, "No errors were found on the image.\n", "")


def _wrapping(img, guid, flen, newblk):
    """One entry that starts in the last sector of the 1 MiB log and wraps to its start."""
    off, sec = bat_sector_with(img, 3, newblk | 6)
    e = entry(guid, 7, [("data", off, sec)], flen, newblk + MIB)
    assert len(e) == 8192
    img.write_log([e[:4096]], at=MIB - 4096)
    img.write_log([e[4096:]], at=0)


def _two_sequences(img, guid, flen, newblk):
    """A stale sequence (5, 6) and the active one (20, 21) after it; the active one wins."""
    b0 = img.bat(0) & ~0xFFFFF
    off, sec = bat_sector_with(img, 3, newblk | 6)
    img.write_log([entry(guid, 20, [("data", off, sec)], flen, newblk + MIB),
                   entry(guid, 21, [("zero", b0, 4096)], flen, newblk + MIB)], at=0)
    img.write_log([entry(guid, 5, [("data", b0, bytes([0x44]) * 4096)], flen, flen),
                   entry(guid, 6, [("data", b0 + 4096, bytes([0x45]) * 4096)], flen, flen)], at=64 << 10)


def _gap(img, guid, flen, newblk):
    """Entries 8 and 10: not one sequence ([MS-VHDX] 2.3.2: consecutive numbers), so vireo-img replays only the
    higher-numbered one (10). qemu-img 7.2 does not compare the second entry of a run with the first and
    replays both (its deliberate difference, checked below)."""
    b0 = img.bat(0) & ~0xFFFFF
    img.write_log([entry(guid, 8, [("data", b0, bytes([0x61]) * 4096)], flen, flen),
                   entry(guid, 10, [("data", b0 + 4096, bytes([0x62]) * 4096)], flen, flen)])


def _grow(img, guid, flen, newblk):
    """LastFileOffset beyond the end of the file (not 1 MiB aligned): replay extends the file."""
    b0 = img.bat(0) & ~0xFFFFF
    img.write_log([entry(guid, 3, [("zero", b0, 4096)], flen, flen + 5 * MIB + 7)])


def _bad_crc(img, guid, flen, newblk):
    b0 = img.bat(0) & ~0xFFFFF
    img.write_log([entry(guid, 3, [("zero", b0, 4096)], flen, flen, corrupt_crc=True)])


def _other_guid(img, guid, flen, newblk):
    b0 = img.bat(0) & ~0xFFFFF
    img.write_log([entry(uuid.uuid4().bytes_le, 3, [("zero", b0, 4096)], flen, flen)])


def _mangled(fn):
    def f(img, guid, flen, newblk):
        b0 = img.bat(0) & ~0xFFFFF
        e = bytearray(entry(guid, 3, [("data", b0, bytes([0x71]) * 4096), ("zero", b0 + 8192, 4096)], flen, flen))
        fn(e, flen)
        img.write_log([with_checksum(bytes(e))])
    return f


def _put(e, off, fmt, v):
    import struct
    struct.pack_into(fmt, e, off, v)


VARIANTS = {
    "wraps": dict(entries=_wrapping),
    "two-sequences": dict(entries=_two_sequences),
    "gap": dict(entries=_gap),
    "grows-file": dict(entries=_grow),
    "bad-crc": dict(entries=_bad_crc),
    "other-log-guid": dict(entries=_other_guid),
    "log-unaligned": dict(log_offset=MIB + 4096),
    "log-version-1": dict(log_version=1),
    "log-length-odd": dict(log_length=MIB + 4096),
    "log-length-0": dict(log_length=0),
    "truncated": dict(entries=_mangled(lambda e, flen: _put(e, 48, "<Q", flen + MIB))),
    "desc-signature": dict(entries=_mangled(lambda e, flen: e.__setitem__(slice(64, 68), b"xxxx"))),
    "desc-sequence": dict(entries=_mangled(lambda e, flen: _put(e, 64 + 24, "<Q", 4))),
    "desc-unaligned": dict(entries=_mangled(lambda e, flen: _put(e, 64 + 16, "<Q", 4097))),
    "zero-length-odd": dict(entries=_mangled(lambda e, flen: _put(e, 96 + 8, "<Q", 100))),
    "data-sequence": dict(entries=_mangled(lambda e, flen: _put(e, 4096 + 4092, "<I", 99))),
    "target-far-away": dict(entries=_mangled(lambda e, flen: _put(e, 64 + 16, "<Q", 1 << 45))),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_log_variants_like_qemu(tmp_path, variant):
    crash(tmp_path, "c.vhdx", **VARIANTS[variant])
    q, v = both(["info", "@"], tmp_path, "c.vhdx")
    assert v == q
    q, v = both(["check", "-r", "all", "@"], tmp_path, "c.vhdx")
    assert v == q
    qf, vf = (tmp_path / "q-c.vhdx").read_bytes(), (tmp_path / "v-c.vhdx").read_bytes()
    if variant == "gap":
        b0 = Vhdx(tmp_path / "c.vhdx").bat(0) & ~0xFFFFF
        assert qf[b0:b0 + 8192] == b"\x61" * 4096 + b"\x62" * 4096
        assert vf[b0:b0 + 8192] == b"\x01" * 4096 + b"\x62" * 4096
        assert vf[:b0][MIB:] == qf[:b0][MIB:] and vf[b0 + 4096:] == qf[b0 + 4096:]
    elif q[0] == 0:
        assert len(vf) == len(qf) and vf[MIB:] == qf[MIB:]
        run([VIMG, "convert", "-O", "raw", "v-c.vhdx", "v.raw"], cwd=tmp_path, check=0)
        run([QIMG, "convert", "-O", "raw", "q-c.vhdx", "q.raw"], cwd=tmp_path, check=0)
        assert (tmp_path / "v.raw").read_bytes() == (tmp_path / "q.raw").read_bytes()
    else:
        # Refused logs: vireo-img writes nothing (qemu-img may have replayed part of the log first).
        assert vf == (tmp_path / "c.vhdx").read_bytes()
        assert "Could not open 'X': Could not open 'X': " in q[2]
