#include "kvm/state.h"

#include <algorithm>

#include "common/error.h"
#include "kvm/pvm.h"

namespace vireo::kvm {

VcpuStateLayout probe_vcpu_state(const KvmSystem& sys, const Vm& vm, const Vcpu& vcpu) {
  VcpuStateLayout l;
  if (vm.check_extension(KVM_CAP_XSAVE) > 0) {
    const int x2 = vm.check_extension(KVM_CAP_XSAVE2);
    l.xsave_size = x2 > 4096 ? static_cast<size_t>(x2) : 4096;
  }
  l.xcrs = vm.check_extension(KVM_CAP_XCRS) > 0;
  std::vector<uint32_t> want = sys.msr_index_list();
  for (uint32_t m : pvm_state_msrs(vcpu)) want.push_back(m);
  std::sort(want.begin(), want.end());
  want.erase(std::unique(want.begin(), want.end()), want.end());
  // KVM lists MSRs it knows in general; some are not readable for this vCPU's CPUID (KVM_GET_MSRS stops at
  // the first one it refuses). Keep the readable ones.
  std::vector<kvm_msr_entry> e;
  for (uint32_t m : want) e.push_back(kvm_msr_entry{m, 0, 0});
  size_t start = 0;
  while (start < e.size()) {
    std::vector<kvm_msr_entry> rest(e.begin() + static_cast<long>(start), e.end());
    const size_t n = vcpu.get_msrs(rest);
    for (size_t i = 0; i < n; ++i) l.msrs.push_back(rest[i].index);
    start += n + 1;  // skip the refused one
  }
  return l;
}

VcpuState save_vcpu(const Vcpu& vcpu, const VcpuStateLayout& layout) {
  VcpuState s;
  s.regs = vcpu.get_regs();
  s.sregs = vcpu.get_sregs();
  if (layout.xsave_size) s.xsave = vcpu.get_xsave(layout.xsave_size);
  else s.fpu = vcpu.get_fpu();
  if (layout.xcrs) s.xcrs = vcpu.get_xcrs();
  s.lapic = vcpu.get_lapic();
  for (uint32_t m : layout.msrs) s.msrs.push_back(kvm_msr_entry{m, 0, 0});
  const size_t n = vcpu.get_msrs(s.msrs);
  if (n != s.msrs.size()) fail("vCPU {}: KVM_GET_MSRS: KVM refused MSR 0x{:x}", vcpu.id(), s.msrs[n].index);
  s.events = vcpu.get_vcpu_events();
  s.mp_state = vcpu.get_mp_state();
  s.debugregs = vcpu.get_debugregs();
  return s;
}

namespace {

// KVM_SET_MSRS of everything, in one call where possible. An MSR KVM refuses is accepted only if it already
// holds the saved value (read-only MSRs in KVM's list, e.g. feature MSRs fixed by CPUID).
void set_msrs(Vcpu& vcpu, const std::vector<kvm_msr_entry>& all) {
  size_t start = 0;
  while (start < all.size()) {
    std::vector<std::pair<uint32_t, uint64_t>> batch;
    for (size_t i = start; i < all.size(); ++i) batch.emplace_back(all[i].index, all[i].data);
    try {
      vcpu.set_msrs(batch);
      return;
    } catch (const Error&) {
    }
    // Find the refused one: set one by one from here.
    for (; start < all.size(); ++start) {
      try {
        vcpu.set_msrs({{all[start].index, all[start].data}});
      } catch (const Error&) {
        const auto cur = vcpu.get_msr(all[start].index);
        if (!cur || *cur != all[start].data)
          fail("vCPU {}: KVM refused MSR 0x{:x} = 0x{:x} (the state comes from another kind of host?)", vcpu.id(),
               all[start].index, all[start].data);
        ++start;
        break;
      }
    }
  }
}

}  // namespace

void restore_vcpu(Vcpu& vcpu, const VcpuState& s) {
  vcpu.set_sregs(s.sregs);
  vcpu.set_regs(s.regs);
  if (!s.xsave.empty()) vcpu.set_xsave(s.xsave);
  else vcpu.set_fpu(s.fpu);
  if (s.xcrs) vcpu.set_xcrs(*s.xcrs);
  vcpu.set_lapic(s.lapic);
  // The TSC deadline is relative to the TSC and needs the LAPIC timer mode: it goes after both.
  std::vector<kvm_msr_entry> msrs, late, pvm;
  for (const auto& m : s.msrs) {
    if (m.index == kMsrTscDeadline) late.push_back(m);
    else if (m.index >= kPvmFirstStateMsr && m.index <= kPvmLastStateMsr) pvm.push_back(m);
    else msrs.push_back(m);
  }
  set_msrs(vcpu, msrs);
  kvm_vcpu_events ev = s.events;
  // Restore what was saved (the flags say which optional fields are meaningful).
  ev.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW |
              KVM_VCPUEVENT_VALID_SMM;
  vcpu.set_vcpu_events(ev);
  vcpu.set_mp_state(s.mp_state);
  set_msrs(vcpu, late);
  restore_pvm_msrs(vcpu, pvm);
  kvm_debugregs d = s.debugregs;
  d.flags = 0;
  vcpu.set_debugregs(d);
}

VmState save_vm(const Vm& vm) {
  VmState s;
  if (vm.has_irqchip())
    for (uint32_t chip : {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC})
      s.irqchips.push_back(vm.get_irqchip(chip));
  if (vm.has_pit()) s.pit = vm.get_pit();
  s.clock = vm.get_clock();
  return s;
}

void restore_vm(Vm& vm, const VmState& s) {
  for (const auto& c : s.irqchips) vm.set_irqchip(c);
  if (s.pit && vm.has_pit()) vm.set_pit(*s.pit);
}

void restore_clock(Vm& vm, const VmState& s) { vm.set_clock(s.clock); }

}  // namespace vireo::kvm
