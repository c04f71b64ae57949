// vireo/kvm: the PVM host quirk, isolated here (see /work/shared/design/test-guests.md and docs/kvm.md).
//
// On a PVM host (/dev/kvm served by kvm_pvm) vCPUs run in the instruction emulator until MSR 0x4b564d10 bit 0
// is set before their first KVM_RUN; then they run natively, which needs long mode with U/S=1 page tables.
// PVM is detected by KVM_GET_MSRS of 0x4b564d11 returning 0x4d5650 ("PVM"); on hardware KVM that MSR does not
// exist and nothing is written.
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vireo::kvm {

class Vcpu;

inline constexpr uint32_t kPvmSignatureMsr = 0x4b564d11;
inline constexpr uint64_t kPvmSignature = 0x4d5650;
inline constexpr uint32_t kPvmControlMsr = 0x4b564d10;
inline constexpr uint64_t kPvmNativeBit = 1;

// True if the vCPU's KVM is PVM (reads the signature MSR; unknown MSR = not PVM).
bool is_pvm_host(const Vcpu& vcpu);

enum class PvmMode { NotPvm, Emulated, Native };

// The one place the quirk is applied. Call once per vCPU, after its registers are set and before its first
// KVM_RUN. `long_mode_entry`: the boot plan enters this vCPU in long mode with U/S=1 page tables;
// `native_allowed`: the user did not pass --native off. Returns what was done.
PvmMode apply_pvm_quirk(Vcpu& vcpu, bool long_mode_entry, bool native_allowed);

const char* pvm_mode_name(PvmMode m);  // "not-pvm", "emulated", "native"

// The one stderr line vireo-vmm prints when a guest that does not enter in long mode with our page tables (an
// unmodified kernel, PVH kernel or firmware) is about to run on a PVM host: it will run in PVM's instruction
// emulator (~1000x slower, and unmodified kernels stop on instructions it lacks). Empty when nothing is to be
// said: not PVM, native mode, or the emulator was chosen explicitly (`--native off` with a test guest).
std::string pvm_emulation_note(PvmMode mode, bool long_mode_entry);

// PVM's own vCPU state MSRs (0x4b564d10-0x4b564d13: control incl. the native bit, signature, and two more the
// host keeps per vCPU), saved and restored with the others on a PVM host; empty elsewhere.
inline constexpr uint32_t kPvmFirstStateMsr = 0x4b564d10, kPvmLastStateMsr = 0x4b564d13;
std::vector<uint32_t> pvm_state_msrs(const Vcpu& vcpu);
// Puts saved PVM MSRs back (after the rest of the vCPU state, before its first KVM_RUN). PVM accepts only the
// native-mode switch (bit 0 of 0x4b564d10, applied as apply_pvm_quirk does); the others are host constants,
// checked to match. Saved PVM MSRs on a host that is not PVM are an Error (the state came from a PVM host).
void restore_pvm_msrs(Vcpu& vcpu, const std::vector<kvm_msr_entry>& saved);

}  // namespace vireo::kvm
