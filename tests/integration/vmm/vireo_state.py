"""Reads and writes vireo snapshot state files (state.bin, src/vmm/snapshot_format.h) for tests that damage
them on purpose: the 24-byte header (magic, u32 version, u32 CRC-32 of the body, u64 body length) and a
minimal CBOR codec for the definite-length subset vireo writes."""
import struct
import zlib

MAGIC = b"VIREOSNP"


def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
    raise ValueError(n)


def cbor_dumps(v):
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, (bytes, bytearray)):
        return _head(2, len(v)) + bytes(v)
    if isinstance(v, str):
        b = v.encode()
        return _head(3, len(b)) + b
    if isinstance(v, list):
        return _head(4, len(v)) + b"".join(cbor_dumps(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(cbor_dumps(k) + cbor_dumps(x) for k, x in v.items())
    raise TypeError(type(v))


def cbor_loads(b):
    def item(i):
        ib = b[i]
        major, info = ib >> 5, ib & 31
        i += 1
        if info < 24:
            n = info
        else:
            size = 1 << (info - 24)
            n = int.from_bytes(b[i:i + size], "big")
            i += size
        if major == 0:
            return n, i
        if major == 1:
            return -1 - n, i
        if major == 2:
            return bytes(b[i:i + n]), i + n
        if major == 3:
            return b[i:i + n].decode(), i + n
        if major == 4:
            out = []
            for _ in range(n):
                x, i = item(i)
                out.append(x)
            return out, i
        if major == 5:
            out = {}
            for _ in range(n):
                k, i = item(i)
                out[k], i = item(i)
            return out, i
        if major == 7:
            return {20: False, 21: True, 22: None}[info], i
        raise ValueError(f"CBOR major {major}")

    v, end = item(0)
    assert end == len(b)
    return v


def pack(body_bytes, version=1):
    return MAGIC + struct.pack("<IIQ", version, zlib.crc32(body_bytes), len(body_bytes)) + body_bytes


def load(path):
    data = open(path, "rb").read()
    assert data[:8] == MAGIC
    return cbor_loads(data[24:])


def save(path, body):
    with open(path, "wb") as f:
        f.write(pack(cbor_dumps(body)))
