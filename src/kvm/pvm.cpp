#include "kvm/pvm.h"

#include "common/error.h"
#include "kvm/kvm.h"

namespace vireo::kvm {

bool is_pvm_host(const Vcpu& vcpu) {
  try {
    auto v = vcpu.get_msr(kPvmSignatureMsr);
    return v && *v == kPvmSignature;
  } catch (const Error&) {
    return false;  // KVM_GET_MSRS itself refused: certainly not PVM
  }
}

PvmMode apply_pvm_quirk(Vcpu& vcpu, bool long_mode_entry, bool native_allowed) {
  if (!is_pvm_host(vcpu)) return PvmMode::NotPvm;
  if (!long_mode_entry || !native_allowed) return PvmMode::Emulated;
  const uint64_t cur = vcpu.get_msr(kPvmControlMsr).value_or(0);
  vcpu.set_msrs({{kPvmControlMsr, cur | kPvmNativeBit}});
  return PvmMode::Native;
}

std::vector<uint32_t> pvm_state_msrs(const Vcpu& vcpu) {
  std::vector<uint32_t> out;
  if (!is_pvm_host(vcpu)) return out;
  for (uint32_t m = kPvmFirstStateMsr; m <= kPvmLastStateMsr; ++m)
    if (vcpu.get_msr(m)) out.push_back(m);  // only those this host's PVM implements
  return out;
}

void restore_pvm_msrs(Vcpu& vcpu, const std::vector<kvm_msr_entry>& saved) {
  if (saved.empty()) return;
  if (!is_pvm_host(vcpu)) fail("vCPU {}: the saved state is from a PVM host; this KVM is not PVM", vcpu.id());
  for (const auto& m : saved) {
    const uint64_t cur = vcpu.get_msr(m.index).value_or(0);
    if (m.index == kPvmControlMsr) {
      if ((m.data & kPvmNativeBit) && !(cur & kPvmNativeBit)) vcpu.set_msrs({{kPvmControlMsr, cur | kPvmNativeBit}});
    }
    // 0x4b564d11-13 are per-host values PVM does not let userspace write; differences are the host's.
  }
}

const char* pvm_mode_name(PvmMode m) {
  switch (m) {
    case PvmMode::NotPvm: return "not-pvm";
    case PvmMode::Emulated: return "emulated";
    case PvmMode::Native: return "native";
  }
  return "?";
}

std::string pvm_emulation_note(PvmMode mode, bool long_mode_entry) {
  if (mode != PvmMode::Emulated || long_mode_entry) return {};
  return "note: /dev/kvm is PVM (kvm_pvm, no hardware virtualization): this guest does not start in 64-bit "
         "mode with vireo's page tables, so it runs in PVM's instruction emulator (very slow; unmodified kernels "
         "and firmware stop on instructions it lacks)";
}

}  // namespace vireo::kvm
