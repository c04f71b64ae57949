"""Boots the real Debian kernel (bzImage from /boot) in vireo-vmm with 2 vCPUs and no root disk: it must get
through SMP bring-up (INIT/SIPI via the in-kernel LAPIC), the 8250 UART and i8042 probes, panic on the missing
root fs and reboot through the keyboard controller (reboot=k) -> exit 2. Slow under the KVM kit (nested TCG,
1-3 minutes), so it runs only with VIREO_SLOW_TESTS=1."""
import glob
import os
import shlex

import pytest

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script


def test_linux_boots_to_root_mount_panic_and_reboots(tmp_path):
    if os.environ.get("VIREO_SLOW_TESTS") != "1":
        pytest.skip("slow (1-3 min in the KVM kit): set VIREO_SLOW_TESTS=1")
    require_kvm(unmodified=True)
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        pytest.skip("no /boot/vmlinuz-* (apt-get install linux-image-cloud-amd64)")
    log = tmp_path / "serial.log"
    cmd = [BUILD_DIR / "vireo-vmm", "--kernel", kernels[-1], "--memory", "256M", "--cpus", "2",
           "--cmdline", "console=ttyS0 panic=-1 reboot=k", "--serial", f"file={log}"]
    r = run_kvm_script("timeout 400 " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n", timeout=480,
                       files=[tmp_path], unmodified=True)
    text = log.read_text(errors="replace") if log.exists() else ""
    assert r.returncode == 2, r.text() + "\n--- serial (tail) ---\n" + text[-3000:]
    assert "Linux version" in text
    assert "smp: Brought up 1 node, 2 CPUs" in text
    assert "ttyS0 at I/O 0x3f8 (irq = 4" in text
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in text
