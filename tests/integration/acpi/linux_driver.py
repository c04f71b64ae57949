"""Runs INSIDE the KVM environment (host or kit) for test_acpi_linux.py. Picks the first VMM whose acpi_poweroff
guest resets through the FADT reset register (exit 2 = it has ACPI), boots Linux on it with a control socket,
waits for the initramfs to report the power-button input device, sends `shutdown` over the socket and waits
for the VMM to exit. Prints "VMM=...", the serial output, "VMM-EXIT=<code>" (or "NO-ACPI-VMM").
Usage: linux_driver.py GUEST KERNEL INITRD WORKDIR VMM..."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

GUEST, KERNEL, INITRD, WORK = sys.argv[1:5]
VMMS = sys.argv[5:]

vmm = None
for v in VMMS:
    r = subprocess.run([v, "--kernel", GUEST, "--memory", "32M", "--serial", "none", "--cmdline", "reset"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    if r.returncode == 2:
        vmm = v
        break
if not vmm:
    print("NO-ACPI-VMM")
    sys.exit(0)
print("VMM=" + vmm, flush=True)

sock = os.path.join(tempfile.mkdtemp(prefix="vireo-acpi-linux-", dir="/dev/shm"), "api.sock")
serial = os.path.join(WORK, "linux.serial")
p = subprocess.Popen([vmm, "--kernel", KERNEL, "--initrd", INITRD, "--memory", "256M", "--cpus", "1",
                      "--cmdline", "console=ttyS0 panic=-1 quiet", "--serial", "file=" + serial, "--api-socket", sock],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def text():
    try:
        with open(serial, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


end = time.monotonic() + 300
while time.monotonic() < end and p.poll() is None and "VIREO-INIT: power button at" not in text():
    time.sleep(0.2)
if p.poll() is None and "VIREO-INIT: power button at /dev/input/event" in text():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(sock)
    s.sendall(json.dumps({"id": 1, "command": "shutdown"}).encode() + b"\n")
    print("SHUTDOWN-REPLY=" + s.makefile().readline().strip(), flush=True)
try:
    rc = p.wait(timeout=max(10, end - time.monotonic()))
except subprocess.TimeoutExpired:
    p.kill()
    rc = "hung"
print(text())
print("STDERR=" + p.stderr.read().decode(errors="replace"))
print(f"VMM-EXIT={rc}")
