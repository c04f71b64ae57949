// vireo/cpu: CPU modes (libvirt's names) and the CPUID table each vCPU gets.
//   host-passthrough  everything KVM_GET_SUPPORTED_CPUID reports
//   host-model        the same minus features that are not migratable (invariant TSC, ...): see docs/boot.md
//   custom[=MODEL]    a named model (qemu64 by default): features it lacks are hidden; features it needs
//                     that the host lacks are an Error naming them
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vireo::cpu {

enum class CpuMode { HostPassthrough, HostModel, Custom };

struct CpuSpec {
  CpuMode mode = CpuMode::HostModel;
  std::string model;  // model for Custom, e.g. "qemu64"
};

// "host-passthrough" | "host-model" | "custom" | "custom=MODEL";
// throws Error("cpu: unknown model 'x' (known: ...)") / Error("cpu: unknown mode 'x' (...)").
CpuSpec parse_cpu_spec(const std::string& text);
std::string format_cpu_spec(const CpuSpec& spec);  // back to the text form ("custom=Haswell")

// Names of the known custom models, in a stable order.
std::vector<std::string> known_models();

// Pure function: filters/sets leaves per mode (hide features a model lacks, APIC IDs and topology per vCPU,
// hypervisor bit + KVM signature leaves 0x40000000..); throws Error if the host lacks what the model needs.
std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec,
                                          uint32_t vcpu_index, uint32_t vcpu_count);

}  // namespace vireo::cpu
