// vireo/cpu: CPU modes (libvirt's names) and the CPUID table each vCPU gets.
//   host-passthrough  everything KVM_GET_SUPPORTED_CPUID reports
//   host-model        the same minus features that are not migratable (invariant TSC, ...): see docs/boot.md
//   custom[=MODEL][,enforce]
//                     a named model (qemu64 by default): features it lacks are hidden. Features it names that
//                     the host (KVM) cannot offer are dropped (QEMU's behaviour without `enforce`; the caller
//                     warns once, see unavailable_features); with `enforce` (libvirt's check='full') they are an
//                     Error naming them.
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vireo::cpu {

enum class CpuMode { HostPassthrough, HostModel, Custom };

// The guest architecture (libvirt's <os><type arch=...>): x86_64, or i686, a CPU without long mode, as QEMU
// presents one to a 32-bit domain on an x86_64 KVM host.
enum class Arch { X86_64, I686 };
const char* arch_name(Arch a);  // "x86_64", "i686"
// "x86_64" | "i686"; throws Error("<what>: unknown arch 'x' (expected x86_64 or i686)").
Arch parse_arch(const std::string& text, const std::string& what);

struct CpuSpec {
  CpuMode mode = CpuMode::HostModel;
  std::string model;     // model for Custom, e.g. "qemu64"
  bool enforce = false;  // Custom only: refuse to run without every feature of the model
};

// "host-passthrough" | "host-model" | "custom" | "custom=MODEL", each custom form optionally followed by
// ",enforce" (QEMU's -cpu MODEL,enforce);
// throws Error("cpu: unknown model 'x' (known: ...)") / Error("cpu: unknown mode 'x' (...)").
CpuSpec parse_cpu_spec(const std::string& text);
std::string format_cpu_spec(const CpuSpec& spec);  // back to the text form ("custom=Haswell[,enforce]")

// Names of the known custom models, in a stable order.
std::vector<std::string> known_models();

// Features of a custom model that `supported` (KVM_GET_SUPPORTED_CPUID) lacks, in the model's order (empty for
// the host modes). Without `enforce` build_cpuid drops them; the VMM prints one warning naming them.
std::vector<std::string> unavailable_features(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec);
// That warning, e.g. "warning: cpu: model qemu64: the host (KVM) lacks sse3; running without it"; empty when
// nothing is dropped (or with `enforce`, where build_cpuid refuses instead).
std::string unavailable_warning(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec);

// Pure function: filters/sets leaves per mode (hide features a model lacks, APIC IDs and topology per vCPU,
// hypervisor bit + KVM signature leaves 0x40000000..); with `enforce`, throws Error if the host lacks what the
// model needs. Arch::I686 then hides the 64-bit-only bits (hide_long_mode).
std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec,
                                          uint32_t vcpu_index, uint32_t vcpu_count, Arch arch = Arch::X86_64);

// Clears 0x80000001 EDX LM (bit 29) and SYSCALL (bit 11). With LM clear, KVM also refuses EFER.LME, so the
// guest really has no long mode. See docs/boot.md for what QEMU does.
void hide_long_mode(std::vector<kvm_cpuid_entry2>& table);

}  // namespace vireo::cpu
