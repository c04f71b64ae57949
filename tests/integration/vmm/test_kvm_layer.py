"""Runs the KVM layer's live unit tests (kvm_test, KvmLive.*) where /dev/kvm works: on the host, or inside the
KVM kit, so the ioctl wrappers (CPUID, MSRs, GSI routing, irqfd, ioeventfd, IRQ lines) are really exercised
on machines without /dev/kvm too."""
import subprocess

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script

KVM_TEST = BUILD_DIR / "tests" / "kvm_test"


def test_kvm_live_unit_tests():
    require_kvm()
    # CMake builds kvm_test with the suite: missing is a failure, not a skip.
    assert KVM_TEST.exists(), f"{KVM_TEST} not built"
    listed = subprocess.run([str(KVM_TEST), "--gtest_filter=KvmLive.*", "--gtest_list_tests"],
                            capture_output=True, text=True, check=True).stdout
    count = sum(1 for line in listed.splitlines() if line.startswith("  "))
    assert count >= 4, listed
    r = run_kvm_script(f"{KVM_TEST} --gtest_filter='KvmLive.*' --gtest_color=no\n", timeout=120)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, r.text()
    assert "[  SKIPPED ]" not in out, out
    assert f"[  PASSED  ] {count} tests." in out, out
