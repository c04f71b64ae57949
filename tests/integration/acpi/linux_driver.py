"""Runs INSIDE the KVM environment (host or kit) for test_acpi_linux.py. Boots Linux on vireo-vmm (ACPI on, a
virtio-pci disk, a control socket), waits for the initramfs to report the power-button input device, sends
`shutdown` over the socket and waits for the VMM to exit. Prints the serial output, "SHUTDOWN-REPLY=...",
the VMM's stderr and "VMM-EXIT=<code>" ("hung" if it did not exit).
Usage: linux_driver.py VMM KERNEL INITRD DISK WORKDIR CPUS"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

VMM, KERNEL, INITRD, DISK, WORK, CPUS = sys.argv[1:7]

# Unix sockets cannot live on the kit's 9p shares: a guest-local folder. The serial log goes there too: on a
# 9p share every byte the guest prints is a round trip to the kit's 9p server, and this loop rereads it.
local = tempfile.mkdtemp(prefix="vireo-acpi-linux-", dir="/dev/shm")
sock = os.path.join(local, "api.sock")
serial = os.path.join(local, "linux.serial")
p = subprocess.Popen([VMM, "--kernel", KERNEL, "--initrd", INITRD, "--memory", "256M", "--cpus", CPUS,
                      "--cmdline", "console=ttyS0 panic=-1 quiet", "--serial", "file=" + serial,
                      "--disk", f"path={DISK},format=raw", "--api-socket", sock],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def text():
    try:
        with open(serial, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# The serial file fills byte by byte: wait for the whole line, not just its start.
ready = re.compile(r"^VIREO-INIT: power button at (\S*)\n", re.M)
end = time.monotonic() + 330
while time.monotonic() < end and p.poll() is None and not ready.search(text()):
    time.sleep(0.2)
m = ready.search(text())
if p.poll() is None and m and m.group(1).startswith("/dev/input/event"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(sock)
    s.sendall(json.dumps({"id": 1, "command": "shutdown"}).encode() + b"\n")
    print("SHUTDOWN-REPLY=" + s.makefile().readline().strip(), flush=True)
try:
    rc = p.wait(timeout=max(10, end - time.monotonic()))
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
    rc = "hung"
out = text()
with open(os.path.join(WORK, "linux.serial"), "w") as f:  # kept on the host for a failed test's post-mortem
    f.write(out)
print(out)
print("STDERR=" + p.stderr.read().decode(errors="replace"))
print(f"VMM-EXIT={rc}")
