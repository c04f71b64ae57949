// vireo/kvm: the complete KVM-side state of a vCPU and of a VM, read and written with the standard KVM ioctls
// (registers, special registers, FPU/XSAVE, XCRs, every MSR KVM lists, LAPIC, vCPU events, MP state, debug
// registers; PIC/IOAPIC, PIT2, kvmclock). Used by snapshots and live migration. The structs are KVM's own
// ABI structs (stable on x86-64); callers serialize them as bytes.
//
// Restore order follows what KVM needs: special registers (EFER, CR0/3/4, APIC base) first, then GPRs,
// XSAVE, XCRs, the LAPIC, MSRs (TSC before the TSC deadline), events, MP state, debug registers.
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "kvm/kvm.h"

namespace vireo::kvm {

inline constexpr uint32_t kMsrTsc = 0x10, kMsrTscDeadline = 0x6e0;

struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};                // used when xsave is empty
  std::vector<uint8_t> xsave;   // KVM_GET_XSAVE(2) area; empty without KVM_CAP_XSAVE
  std::optional<kvm_xcrs> xcrs;  // with KVM_CAP_XCRS
  kvm_lapic_state lapic{};
  std::vector<kvm_msr_entry> msrs;
  kvm_vcpu_events events{};
  kvm_mp_state mp_state{};
  kvm_debugregs debugregs{};
};

// What the host's KVM can save for a vCPU (probed once per VM).
struct VcpuStateLayout {
  size_t xsave_size = 0;        // 0: no XSAVE (FPU via KVM_GET_FPU)
  bool xcrs = false;
  std::vector<uint32_t> msrs;   // every MSR of KVM_GET_MSR_INDEX_LIST this vCPU reads, plus the PVM host's
};
VcpuStateLayout probe_vcpu_state(const KvmSystem& sys, const Vm& vm, const Vcpu& vcpu);

VcpuState save_vcpu(const Vcpu& vcpu, const VcpuStateLayout& layout);
// Throws Error naming the ioctl (or the MSR KVM refused).
void restore_vcpu(Vcpu& vcpu, const VcpuState& s);

struct VmState {
  std::vector<kvm_irqchip> irqchips;   // PIC master, PIC slave, IOAPIC (with the in-kernel irqchip)
  std::optional<kvm_pit_state2> pit;   // with KVM_CREATE_PIT2
  kvm_clock_data clock{};
};
VmState save_vm(const Vm& vm);
void restore_vm(Vm& vm, const VmState& s);  // irqchip and PIT; the clock goes last: restore_clock
void restore_clock(Vm& vm, const VmState& s);

}  // namespace vireo::kvm
