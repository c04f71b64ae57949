"""Runs inside the KVM environment: sends each JSON request (argv[2:]) to the control socket argv[1], one per
line, and prints each reply line. Used by test_virtio_vmm.py for the balloon commands."""
import socket
import sys

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
for req in sys.argv[2:]:
    f.write(req + "\n")
    f.flush()
    print(f.readline().strip(), flush=True)
