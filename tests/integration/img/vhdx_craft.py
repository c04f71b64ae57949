"""Builds VHDX log entries as [MS-VHDX] 2.3 lays them out, to make images that look like a crash happened
after a log entry was written and before its metadata reached its final place (what Hyper-V or QEMU leave).

Only the log is crafted: the image itself comes from qemu-img, so everything else is QEMU's own layout.
"""
import struct
import uuid

SECTOR = 4096
MIB = 1 << 20


def crc32c(data, crc=0):
    crc = ~crc & 0xFFFFFFFF
    table = _table()
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return ~crc & 0xFFFFFFFF


_TABLE = None


def _table():
    global _TABLE
    if _TABLE is None:
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            t.append(c)
        _TABLE = t
    return _TABLE


def with_checksum(block, at=4):
    b = bytearray(block)
    b[at:at + 4] = b"\0\0\0\0"
    b[at:at + 4] = struct.pack("<I", crc32c(b))
    return bytes(b)


class Vhdx:
    """An image file in memory: headers, region table, BAT location."""

    def __init__(self, path):
        self.path = path
        self.d = bytearray(open(path, "rb").read())
        h = [self._header(64 << 10), self._header(128 << 10)]
        self.cur = 0 if h[0]["seq"] >= h[1]["seq"] else 1
        self.hdr = h[self.cur]
        rt = self.d[192 << 10:(192 << 10) + 65536]
        n = struct.unpack_from("<I", rt, 8)[0]
        for i in range(n):
            e = rt[16 + 32 * i:48 + 32 * i]
            off, length = struct.unpack_from("<QI", e, 16)
            if e[:16] == uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08").bytes_le:
                self.bat_offset, self.bat_length = off, length
            else:
                self.meta_offset = off

    def _header(self, off):
        b = self.d[off:off + 4096]
        seq, = struct.unpack_from("<Q", b, 8)
        log_len, log_off = struct.unpack_from("<IQ", b, 68)
        return {"off": off, "seq": seq, "log_guid": bytes(b[48:64]), "log_length": log_len, "log_offset": log_off}

    def bat(self, i):
        return struct.unpack_from("<Q", self.d, self.bat_offset + 8 * i)[0]

    def set_log_guid(self, guid, log_offset=None, log_length=None, log_version=None):
        """Rewrites the current header (same sequence number) as a crashed writer leaves it."""
        off = self.hdr["off"]
        b = bytearray(self.d[off:off + 4096])
        b[48:64] = guid
        if log_version is not None:
            struct.pack_into("<H", b, 64, log_version)
        if log_length is not None:
            struct.pack_into("<I", b, 68, log_length)
        if log_offset is not None:
            struct.pack_into("<Q", b, 72, log_offset)
        self.d[off:off + 4096] = with_checksum(b)
        self.hdr["log_guid"] = guid

    def write_log(self, entries, at=0):
        """Puts encoded entries one after another into the log from byte `at` of the log region on."""
        pos = self.hdr["log_offset"] + at
        for e in entries:
            self.d[pos:pos + len(e)] = e
            pos += len(e)

    def save(self, path=None):
        open(path or self.path, "wb").write(self.d)


def entry(log_guid, seq, descs, flushed_file_offset, last_file_offset, tail=0, corrupt_crc=False):
    """descs: ("data", file_offset, 4096 bytes) or ("zero", file_offset, length). Returns the entry bytes."""
    n = len(descs)
    desc_sectors = (n + 2 + 127) // 128
    data = [d for d in descs if d[0] == "data"]
    total = (desc_sectors + len(data)) * SECTOR
    buf = bytearray(total)
    struct.pack_into("<4sIIIQII16sQQ", buf, 0, b"loge", 0, total, tail, seq, n, 0, log_guid,
                     flushed_file_offset, last_file_offset)
    sector = desc_sectors
    for i, d in enumerate(descs):
        p = 64 + 32 * i
        if d[0] == "zero":
            struct.pack_into("<4sIQQQ", buf, p, b"zero", 0, d[2], d[1], seq)
        else:
            payload = d[2]
            assert len(payload) == SECTOR
            struct.pack_into("<4sIQQQ", buf, p, b"desc", struct.unpack_from("<I", payload, 4092)[0],
                             struct.unpack_from("<Q", payload, 0)[0], d[1], seq)
            s = sector * SECTOR
            struct.pack_into("<4sI", buf, s, b"data", seq >> 32)
            buf[s + 8:s + 4092] = payload[8:4092]
            struct.pack_into("<I", buf, s + 4092, seq & 0xFFFFFFFF)
            sector += 1
    out = with_checksum(buf)
    if corrupt_crc:
        out = out[:4] + bytes([out[4] ^ 1]) + out[5:]
    return out


def bat_sector_with(img, index, value):
    """The 4 KiB BAT sector holding entry `index`, with that entry replaced: (file offset, bytes)."""
    pos = img.bat_offset + 8 * index
    start = pos - pos % SECTOR
    s = bytearray(img.d[start:start + SECTOR])
    struct.pack_into("<Q", s, pos - start, value)
    return start, bytes(s)


PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c").bytes_le
FILE_PARAMS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b").bytes_le
VHDX_LOCATOR_TYPE = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913").bytes_le


def make_differencing(img, parent_relative, parent_absolute, locator=True):
    """Turns the image into a differencing one as Hyper-V writes them ([MS-VHDX] 2.6.2.6): the HasParent bit
    and, with `locator`, a parent locator item (parent_linkage, relative_path, absolute_win32_path)."""
    mo = img.meta_offset
    n, = struct.unpack_from("<H", img.d, mo + 10)
    items = [(img.d[mo + 32 + 32 * i:mo + 48 + 32 * i], *struct.unpack_from("<III", img.d, mo + 48 + 32 * i))
             for i in range(n)]
    for guid, off, length, flags in items:
        if guid == FILE_PARAMS:
            bits, = struct.unpack_from("<I", img.d, mo + off + 4)
            struct.pack_into("<I", img.d, mo + off + 4, bits | 2)
    if not locator:
        return
    pairs = [("parent_linkage", "{%s}" % uuid.uuid4()), ("relative_path", parent_relative),
             ("absolute_win32_path", parent_absolute)]
    head = bytearray(20 + 12 * len(pairs))
    head[0:16] = VHDX_LOCATOR_TYPE
    struct.pack_into("<HH", head, 16, 0, len(pairs))
    blob = bytearray()
    for i, (k, v) in enumerate(pairs):
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        ko = len(head) + len(blob)
        blob += kb
        vo = len(head) + len(blob)
        blob += vb
        struct.pack_into("<IIHH", head, 20 + 12 * i, ko, vo, len(kb), len(vb))
    data = bytes(head + blob)
    end = max(off + length for _, off, length, _ in items)
    at = (end + 4095) // 4096 * 4096
    img.d[mo + at:mo + at + len(data)] = data
    e = mo + 32 + 32 * n
    img.d[e:e + 32] = PARENT_LOCATOR + struct.pack("<IIII", at, len(data), 4 | 2, 0)   # required, virtual disk
    struct.pack_into("<H", img.d, mo + 10, n + 1)
