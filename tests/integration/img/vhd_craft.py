"""VHD (Virtual PC/Hyper-V) structures qemu-img cannot create, written into qemu-img's own dynamic VHDs:
differencing disks (disk type 4 with a parent UUID, name and W2ku/W2ru parent locators, as the VHD spec
lays them out) and damaged headers."""
import os
import struct
import uuid


def checksum(b):
    """One's complement of the byte sum, the checksum field counted as zero (callers zero it)."""
    return (~sum(b)) & 0xFFFFFFFF


def reseal_footer(f):
    struct.pack_into(">I", f, 64, 0)
    struct.pack_into(">I", f, 64, checksum(f))


class Vhd:
    def __init__(self, path):
        self.d = bytearray(open(path, "rb").read())
        self.footer = bytearray(self.d[:512])
        self.dyn_off, = struct.unpack_from(">Q", self.footer, 16)

    def dyn(self):
        return bytearray(self.d[self.dyn_off:self.dyn_off + 1024])

    def set_dyn(self, h, reseal=True):
        if reseal:
            struct.pack_into(">I", h, 36, 0)
            struct.pack_into(">I", h, 36, checksum(h))
        self.d[self.dyn_off:self.dyn_off + 1024] = h

    def save(self, path, reseal=True):
        if reseal:
            reseal_footer(self.footer)
        self.d[:512] = self.footer
        self.d[-512:] = self.footer
        open(path, "wb").write(self.d)


def make_differencing(path, parent, out, disk_type=4):
    """The dynamic VHD at `path` as a differencing disk of `parent`: locator data appended before the footer."""
    v = Vhd(path)
    body = v.d[:-512]
    h = v.dyn()
    for i, (code, name) in enumerate(((b"W2ku", os.path.abspath(parent)), (b"W2ru", ".\\" + os.path.basename(parent)))):
        data = name.encode("utf-16-le")
        off = len(body)
        body += data + bytes(-len(data) % 512)
        struct.pack_into(">4sIIIQ", h, 576 + 24 * i, code, 1, len(data), 0, off)
    h[40:56] = uuid.uuid4().bytes
    struct.pack_into(">I", h, 56, 12345)
    name = os.path.basename(parent).encode("utf-16-be")
    h[64:576] = name + bytes(512 - len(name))
    v.d = body + bytes(512)
    v.set_dyn(h)
    struct.pack_into(">I", v.footer, 60, disk_type)
    v.save(out)
