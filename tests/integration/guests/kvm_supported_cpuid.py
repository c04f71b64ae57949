#!/usr/bin/env python3
"""Prints KVM_GET_SUPPORTED_CPUID of this machine's /dev/kvm, one leaf per line:
`FUNCTION.INDEX EAX EBX ECX EDX` (hex). An oracle for tests that check what vireo-vmm derives from it."""
import fcntl
import os
import struct
import sys

KVM_GET_SUPPORTED_CPUID = 0xC008AE05  # _IOWR(KVMIO, 0x05, struct kvm_cpuid2) (8-byte header)
ENTRY = struct.Struct("<IIIIIIIIII")  # function, index, flags, eax, ebx, ecx, edx, padding[3]


def main() -> int:
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    n = 256
    while True:
        buf = bytearray(struct.pack("<II", n, 0) + bytes(ENTRY.size * n))
        try:
            fcntl.ioctl(fd, KVM_GET_SUPPORTED_CPUID, buf, True)
            break
        except OSError as e:
            if e.errno != 7 or n > 4096:  # E2BIG: more room
                raise
            n *= 2
    count = struct.unpack_from("<I", buf, 0)[0]
    for i in range(count):
        fn, idx, _flags, a, b, c, d, *_ = ENTRY.unpack_from(buf, 8 + i * ENTRY.size)
        print(f"{fn:08x}.{idx} {a:08x} {b:08x} {c:08x} {d:08x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
