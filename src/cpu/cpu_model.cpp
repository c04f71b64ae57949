// vireo/cpu: CPU modes and the per-vCPU CPUID table (see cpu_model.h and docs/boot.md).
#include "cpu/cpu_model.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "common/error.h"

namespace vireo::cpu {

namespace {

enum Reg { EAX, EBX, ECX, EDX };

struct FeatureBit {
  const char* name;
  uint32_t leaf, sub;
  Reg reg;
  uint8_t bit;
};

// Named feature bits the models use (Intel SDM / AMD APM CPUID chapters).
constexpr FeatureBit kFeatures[] = {
    // leaf 1 EDX
    {"fpu", 1, 0, EDX, 0}, {"vme", 1, 0, EDX, 1}, {"de", 1, 0, EDX, 2}, {"pse", 1, 0, EDX, 3},
    {"tsc", 1, 0, EDX, 4}, {"msr", 1, 0, EDX, 5}, {"pae", 1, 0, EDX, 6}, {"mce", 1, 0, EDX, 7},
    {"cx8", 1, 0, EDX, 8}, {"apic", 1, 0, EDX, 9}, {"sep", 1, 0, EDX, 11}, {"mtrr", 1, 0, EDX, 12},
    {"pge", 1, 0, EDX, 13}, {"mca", 1, 0, EDX, 14}, {"cmov", 1, 0, EDX, 15}, {"pat", 1, 0, EDX, 16},
    {"pse36", 1, 0, EDX, 17}, {"clflush", 1, 0, EDX, 19}, {"mmx", 1, 0, EDX, 23}, {"fxsr", 1, 0, EDX, 24},
    {"sse", 1, 0, EDX, 25}, {"sse2", 1, 0, EDX, 26}, {"ss", 1, 0, EDX, 27}, {"ht", 1, 0, EDX, 28},
    // leaf 1 ECX
    {"sse3", 1, 0, ECX, 0}, {"pclmulqdq", 1, 0, ECX, 1}, {"ssse3", 1, 0, ECX, 9}, {"fma", 1, 0, ECX, 12},
    {"cx16", 1, 0, ECX, 13}, {"pcid", 1, 0, ECX, 17}, {"sse4.1", 1, 0, ECX, 19}, {"sse4.2", 1, 0, ECX, 20},
    {"x2apic", 1, 0, ECX, 21}, {"movbe", 1, 0, ECX, 22}, {"popcnt", 1, 0, ECX, 23},
    {"tsc-deadline", 1, 0, ECX, 24}, {"aes", 1, 0, ECX, 25}, {"xsave", 1, 0, ECX, 26}, {"avx", 1, 0, ECX, 28},
    {"f16c", 1, 0, ECX, 29}, {"rdrand", 1, 0, ECX, 30},
    // leaf 7.0 EBX / ECX / EDX
    {"fsgsbase", 7, 0, EBX, 0}, {"bmi1", 7, 0, EBX, 3}, {"hle", 7, 0, EBX, 4}, {"avx2", 7, 0, EBX, 5},
    {"smep", 7, 0, EBX, 7}, {"bmi2", 7, 0, EBX, 8}, {"erms", 7, 0, EBX, 9}, {"invpcid", 7, 0, EBX, 10},
    {"rtm", 7, 0, EBX, 11}, {"avx512f", 7, 0, EBX, 16}, {"avx512dq", 7, 0, EBX, 17}, {"rdseed", 7, 0, EBX, 18},
    {"adx", 7, 0, EBX, 19}, {"smap", 7, 0, EBX, 20}, {"clflushopt", 7, 0, EBX, 23}, {"clwb", 7, 0, EBX, 24},
    {"avx512cd", 7, 0, EBX, 28}, {"sha-ni", 7, 0, EBX, 29}, {"avx512bw", 7, 0, EBX, 30},
    {"avx512vl", 7, 0, EBX, 31}, {"umip", 7, 0, ECX, 2}, {"pku", 7, 0, ECX, 3}, {"vaes", 7, 0, ECX, 9},
    {"vpclmulqdq", 7, 0, ECX, 10}, {"rdpid", 7, 0, ECX, 22}, {"spec-ctrl", 7, 0, EDX, 26},
    {"stibp", 7, 0, EDX, 27}, {"arch-capabilities", 7, 0, EDX, 29}, {"ssbd", 7, 0, EDX, 31},
    // leaf 0xd.1 EAX
    {"xsaveopt", 0xd, 1, EAX, 0}, {"xsavec", 0xd, 1, EAX, 1}, {"xgetbv1", 0xd, 1, EAX, 2},
    {"xsaves", 0xd, 1, EAX, 3},
    // leaf 0x80000001 ECX / EDX
    {"lahf_lm", 0x80000001, 0, ECX, 0}, {"cmp_legacy", 0x80000001, 0, ECX, 1}, {"svm", 0x80000001, 0, ECX, 2},
    {"abm", 0x80000001, 0, ECX, 5}, {"sse4a", 0x80000001, 0, ECX, 6}, {"misalignsse", 0x80000001, 0, ECX, 7},
    {"3dnowprefetch", 0x80000001, 0, ECX, 8}, {"osvw", 0x80000001, 0, ECX, 9}, {"xop", 0x80000001, 0, ECX, 11},
    {"fma4", 0x80000001, 0, ECX, 16}, {"tbm", 0x80000001, 0, ECX, 21}, {"topoext", 0x80000001, 0, ECX, 22},
    {"syscall", 0x80000001, 0, EDX, 11}, {"nx", 0x80000001, 0, EDX, 20}, {"mmxext", 0x80000001, 0, EDX, 22},
    {"fxsr_opt", 0x80000001, 0, EDX, 25}, {"pdpe1gb", 0x80000001, 0, EDX, 26}, {"rdtscp", 0x80000001, 0, EDX, 27},
    {"lm", 0x80000001, 0, EDX, 29},
};

// Bits of leaf 1 EDX that AMD mirrors in 0x80000001 EDX (fpu..pse36 minus reserved 10/11, mmx, fxsr).
constexpr uint32_t kAmdMirrorMask = 0x0183f3ff;
// Features KVM emulates without listing them in KVM_GET_SUPPORTED_CPUID (TSC deadline: KVM_CAP_TSC_DEADLINE_TIMER).
constexpr const char* kEmulated[] = {"tsc-deadline"};

struct Model {
  const char* name;
  bool amd;  // AMD-style signature/leaf mirroring (vendor string stays the host's, as QEMU does under KVM)
  uint32_t family, model, stepping;
  uint32_t level, xlevel;
  const char* brand;
  std::vector<const char*> features;
};

#define PPRO "fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "pge", "cmov", "pat", "mmx", "fxsr", "sse", "sse2"
#define BASE64 PPRO, "vme", "mtrr", "clflush", "mca", "pse36"

// Feature sets follow QEMU's public model definitions (docs: "QEMU / KVM CPU model configuration"); Haswell and
// Skylake-Client are their no-TSX variants (TSX is disabled on most hosts by microcode).
const std::vector<Model>& models() {
  static const std::vector<Model> m = {
      {"qemu64", true, 15, 107, 1, 0xd, 0x8000000a, "QEMU Virtual CPU version 2.5+",
       {PPRO, "mtrr", "clflush", "mca", "pse36", "sse3", "cx16", "lm", "syscall", "nx", "lahf_lm"}},
      {"kvm64", false, 15, 6, 1, 0xd, 0x80000008, "Common KVM processor",
       {BASE64, "sse3", "cx16", "lm", "syscall", "nx"}},
      {"Nehalem", false, 6, 26, 3, 0xb, 0x80000008, "Intel Core i7 9xx (Nehalem Class Core i7)",
       {BASE64, "sse3", "ssse3", "cx16", "sse4.1", "sse4.2", "popcnt", "lm", "syscall", "nx", "lahf_lm"}},
      {"SandyBridge", false, 6, 42, 1, 0xd, 0x80000008, "Intel Xeon E312xx (Sandy Bridge)",
       {BASE64, "sse3", "pclmulqdq", "ssse3", "cx16", "sse4.1", "sse4.2", "x2apic", "popcnt", "tsc-deadline", "aes",
        "xsave", "avx", "lm", "rdtscp", "syscall", "nx", "lahf_lm", "xsaveopt"}},
      {"Haswell", false, 6, 60, 4, 0xd, 0x80000008, "Intel Core Processor (Haswell, no TSX)",
       {BASE64, "sse3", "pclmulqdq", "ssse3", "fma", "cx16", "pcid", "sse4.1", "sse4.2", "x2apic", "movbe", "popcnt",
        "tsc-deadline", "aes", "xsave", "avx", "f16c", "rdrand", "fsgsbase", "bmi1", "avx2", "smep", "bmi2", "erms",
        "invpcid", "lm", "rdtscp", "syscall", "nx", "lahf_lm", "abm", "xsaveopt"}},
      {"Skylake-Client", false, 6, 94, 3, 0xd, 0x80000008, "Intel Core Processor (Skylake, no TSX)",
       {BASE64, "sse3", "pclmulqdq", "ssse3", "fma", "cx16", "pcid", "sse4.1", "sse4.2", "x2apic", "movbe", "popcnt",
        "tsc-deadline", "aes", "xsave", "avx", "f16c", "rdrand", "fsgsbase", "bmi1", "avx2", "smep", "bmi2", "erms",
        "invpcid", "rdseed", "adx", "smap", "clflushopt", "lm", "rdtscp", "syscall", "nx", "lahf_lm", "abm",
        "3dnowprefetch", "xsaveopt", "xsavec", "xgetbv1"}},
      {"EPYC", true, 23, 1, 2, 0xd, 0x8000001e, "AMD EPYC Processor",
       {BASE64, "ht", "sse3", "pclmulqdq", "ssse3", "fma", "cx16", "sse4.1", "sse4.2", "movbe", "popcnt", "aes",
        "xsave", "avx", "f16c", "rdrand", "fsgsbase", "bmi1", "avx2", "smep", "bmi2", "rdseed", "adx", "smap",
        "clflushopt", "sha-ni", "lm", "rdtscp", "pdpe1gb", "fxsr_opt", "mmxext", "syscall", "nx", "lahf_lm", "abm",
        "sse4a", "misalignsse", "3dnowprefetch", "osvw", "topoext", "xsaveopt", "xsavec", "xgetbv1"}},
  };
  return m;
}
#undef PPRO
#undef BASE64

const Model* find_model(const std::string& name) {
  for (const auto& m : models())
    if (m.name == name) return &m;
  return nullptr;
}

const FeatureBit& feature(const char* name) {
  for (const auto& f : kFeatures)
    if (std::strcmp(f.name, name) == 0) return f;
  throw Error(fmt::format("cpu: internal: unknown feature {}", name));
}

uint32_t& reg(kvm_cpuid_entry2& e, Reg r) {
  switch (r) {
    case EAX: return e.eax;
    case EBX: return e.ebx;
    case ECX: return e.ecx;
    default: return e.edx;
  }
}

using Table = std::vector<kvm_cpuid_entry2>;

kvm_cpuid_entry2* find(Table& t, uint32_t fn, uint32_t idx = 0) {
  for (auto& e : t)
    if (e.function == fn && (!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e.index == idx)) return &e;
  return nullptr;
}

kvm_cpuid_entry2& get_or_add(Table& t, uint32_t fn, uint32_t idx, bool indexed) {
  if (auto* e = find(t, fn, idx)) return *e;
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = idx;
  e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  t.push_back(e);
  return t.back();
}

void erase_fn(Table& t, uint32_t fn) {
  t.erase(std::remove_if(t.begin(), t.end(), [&](const kvm_cpuid_entry2& e) { return e.function == fn; }), t.end());
}

uint32_t pow2_at_least(uint32_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}
uint32_t log2_ceil(uint32_t n) {
  uint32_t s = 0;
  while ((1u << s) < n) s++;
  return s;
}

uint32_t signature(uint32_t family, uint32_t model, uint32_t stepping) {
  uint32_t fam = family > 15 ? 15 : family, ext_fam = family > 15 ? family - 15 : 0;
  return (stepping & 0xf) | ((model & 0xf) << 4) | (fam << 8) | (((model >> 4) & 0xf) << 16) | (ext_fam << 20);
}

bool host_has(const Table& supported, const FeatureBit& f) {
  for (const auto& e : supported)
    if (e.function == f.leaf && (!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e.index == f.sub)) {
      auto copy = e;
      return (reg(copy, f.reg) >> f.bit) & 1;
    }
  return false;
}

bool is_emulated(const char* name) {
  return std::any_of(std::begin(kEmulated), std::end(kEmulated), [&](const char* x) { return !std::strcmp(x, name); });
}

std::vector<std::string> missing_features(const Table& supported, const Model& m) {
  std::vector<std::string> missing;
  for (const char* name : m.features)
    if (!is_emulated(name) && !host_has(supported, feature(name))) missing.push_back(name);
  return missing;
}

std::string join(const std::vector<std::string>& v) {
  std::string list;
  for (const auto& s : v) list += (list.empty() ? "" : ", ") + s;
  return list;
}

// Applies a custom model: feature leaves = the model's bits minus what the host lacks (or an Error naming
// those with `enforce`); everything the model does not name is hidden.
void apply_model(Table& t, const Table& supported, const Model& m, bool enforce) {
  const std::vector<std::string> missing = missing_features(supported, m);
  if (enforce && !missing.empty())
    fail("cpu: model {} needs features the host (KVM) lacks: {} (enforce)", m.name, join(missing));
  auto dropped = [&](const char* n) { return std::find(missing.begin(), missing.end(), n) != missing.end(); };
  auto has = [&](const char* n) {
    return !dropped(n) &&
           std::any_of(m.features.begin(), m.features.end(), [&](const char* x) { return !std::strcmp(x, n); });
  };

  // Leaf ranges: basic up to the model's level, hypervisor leaves, extended up to its xlevel.
  uint32_t host_level = find(t, 0) ? find(t, 0)->eax : 0;
  uint32_t host_xlevel = find(t, 0x80000000) ? find(t, 0x80000000)->eax : 0;
  uint32_t level = std::min(m.level, host_level);
  uint32_t xlevel = std::max<uint32_t>(std::min(m.xlevel, std::max(host_xlevel, 0x80000004u)), 0x80000004u);
  t.erase(std::remove_if(t.begin(), t.end(),
                         [&](const kvm_cpuid_entry2& e) {
                           uint32_t f = e.function;
                           if (f <= level) return false;
                           if (f >= 0x40000000 && f <= 0x400000ff) return false;
                           if (f >= 0x80000000 && f <= xlevel) return false;
                           return true;
                         }),
          t.end());
  get_or_add(t, 0, 0, false).eax = level;
  get_or_add(t, 0x80000000, 0, false).eax = xlevel;

  // Clear every feature register we model, then set the model's bits.
  const uint32_t sig = signature(m.family, m.model, m.stepping);
  {
    auto& l1 = get_or_add(t, 1, 0, false);
    l1.ecx = 0;
    l1.edx = 0;
    l1.eax = sig;
  }
  {
    auto& e1 = get_or_add(t, 0x80000001, 0, false);
    e1.ecx = 0;
    e1.edx = 0;
    e1.eax = m.amd ? sig : 0;
  }
  // Leaf 7: only subleaf 0, and only the model's bits.
  t.erase(std::remove_if(t.begin(), t.end(), [](const kvm_cpuid_entry2& e) { return e.function == 7 && e.index != 0; }),
          t.end());
  if (level >= 7) {
    auto& l7 = get_or_add(t, 7, 0, true);
    l7.eax = l7.ebx = l7.ecx = l7.edx = 0;
  }
  if (auto* x = find(t, 0x80000007)) x->edx &= ~(1u << 8);   // invariant TSC
  if (auto* x = find(t, 0x80000008)) x->ebx = 0;             // AMD extended feature ids (ibpb, ...)
  std::optional<uint32_t> xsave_feats;
  for (const char* name : m.features) {
    if (dropped(name)) continue;
    const auto& f = feature(name);
    if (f.leaf == 0xd) {
      xsave_feats = xsave_feats.value_or(0) | (1u << f.bit);
      continue;
    }
    if (f.leaf == 7 && level < 7) continue;
    auto& e = get_or_add(t, f.leaf, f.sub, f.leaf == 7);
    reg(e, f.reg) |= 1u << f.bit;
  }
  if (m.amd) find(t, 0x80000001)->edx |= find(t, 1)->edx & kAmdMirrorMask;  // (re-found: t may have grown)

  // XSAVE leaf: x87 + SSE state, plus AVX if the model has it; nothing else.
  if (!has("xsave")) {
    erase_fn(t, 0xd);
  } else {
    uint64_t mask = 0x3 | (has("avx") ? 0x4 : 0);
    uint32_t max_size = 576;  // legacy area + header
    for (auto& e : t)
      if (e.function == 0xd && e.index >= 2 && e.index < 64 && ((mask >> e.index) & 1))
        max_size = std::max(max_size, e.ebx + e.eax);
    t.erase(std::remove_if(t.begin(), t.end(),
                           [&](const kvm_cpuid_entry2& e) {
                             return e.function == 0xd && e.index >= 2 && (e.index >= 64 || !((mask >> e.index) & 1));
                           }),
            t.end());
    auto& d0 = get_or_add(t, 0xd, 0, true);
    d0.eax &= static_cast<uint32_t>(mask);
    d0.edx = 0;
    d0.ecx = max_size;
    d0.ebx = max_size;
    auto& d1 = get_or_add(t, 0xd, 1, true);
    d1.eax = xsave_feats.value_or(0);
    d1.ebx = d1.ecx = d1.edx = 0;
  }

  // Brand string.
  char brand[48] = {};
  std::strncpy(brand, m.brand, sizeof brand - 1);
  for (uint32_t i = 0; i < 3; i++) {
    auto& e = get_or_add(t, 0x80000002 + i, 0, false);
    std::memcpy(&e.eax, brand + 16 * i, 4);
    std::memcpy(&e.ebx, brand + 16 * i + 4, 4);
    std::memcpy(&e.ecx, brand + 16 * i + 8, 4);
    std::memcpy(&e.edx, brand + 16 * i + 12, 4);
  }
}

// Per-vCPU identity and topology: one socket, vcpu_count cores, one thread per core, APIC ID = vCPU index.
void apply_topology(Table& t, uint32_t index, uint32_t count) {
  const uint32_t p2 = pow2_at_least(count), shift = log2_ceil(count);
  if (auto* l1 = find(t, 1)) {
    l1->ebx = (l1->ebx & 0x0000ffff) | (index << 24) | ((count > 1 ? std::min<uint32_t>(p2, 255) : 1) << 16);
    if (count > 1) l1->edx |= 1u << 28;  // HTT: the count field is valid
    else l1->edx &= ~(1u << 28);
    l1->ecx |= 1u << 31;  // hypervisor present
  }
  uint32_t level = find(t, 0) ? find(t, 0)->eax : 0;
  // Leaf 4 (Intel deterministic cache parameters).
  for (auto& e : t)
    if (e.function == 4 && (e.eax & 0x1f) != 0) {
      uint32_t cache_level = (e.eax >> 5) & 7;
      uint32_t sharing = cache_level >= 3 ? p2 - 1 : 0;
      e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((p2 - 1) & 0x3f) << 26);
    }
  // Leaves 0xb and 0x1f (x2APIC topology).
  for (uint32_t leaf : {0xbu, 0x1fu}) {
    bool present = find(t, leaf) != nullptr;
    if (!(present || (leaf == 0xb && level >= 0xb))) continue;
    if (leaf > level) continue;
    erase_fn(t, leaf);
    auto& smt = get_or_add(t, leaf, 0, true);
    smt.eax = 0, smt.ebx = 1, smt.ecx = (1u << 8) | 0, smt.edx = index;
    auto& core = get_or_add(t, leaf, 1, true);
    core.eax = shift, core.ebx = count, core.ecx = (2u << 8) | 1, core.edx = index;
    auto& end = get_or_add(t, leaf, 2, true);
    end.eax = 0, end.ebx = 0, end.ecx = 2, end.edx = index;
  }
  // AMD: 0x80000008 ECX core count, 0x8000001d cache sharing, 0x8000001e extended APIC id.
  if (auto* e = find(t, 0x80000008)) e->ecx = (e->ecx & ~0xf0ffu) | ((count - 1) & 0xff) | (shift << 12);
  for (auto& e : t)
    if (e.function == 0x8000001d && (e.eax & 0x1f) != 0) {
      uint32_t cache_level = (e.eax >> 5) & 7;
      e.eax = (e.eax & 0x3fff) | (((cache_level >= 3 ? count - 1 : 0) & 0xfff) << 14);
    }
  if (auto* e = find(t, 0x8000001e)) {
    e->eax = index;
    e->ebx = index & 0xff;
    e->ecx = 0;
  }
}

void apply_hypervisor_leaves(Table& t) {
  auto& h = get_or_add(t, 0x40000000, 0, false);
  uint32_t max = std::max<uint32_t>(h.eax, 0x40000001);
  h.eax = max;
  std::memcpy(&h.ebx, "KVMK", 4);
  std::memcpy(&h.ecx, "VMKV", 4);
  std::memcpy(&h.edx, "M\0\0\0", 4);
  get_or_add(t, 0x40000001, 0, false);  // KVM feature bits: as KVM reports them (0 if it reported none)
}

}  // namespace

std::vector<std::string> known_models() {
  std::vector<std::string> v;
  for (const auto& m : models()) v.push_back(m.name);
  return v;
}

CpuSpec parse_cpu_spec(const std::string& text) {
  auto known = [] {
    std::string s;
    for (const auto& n : known_models()) s += (s.empty() ? "" : ", ") + n;
    return s;
  };
  if (text == "host-passthrough") return {CpuMode::HostPassthrough, ""};
  if (text == "host-model") return {CpuMode::HostModel, ""};
  std::string t = text;
  bool enforce = false;
  if (t.rfind("custom", 0) == 0 && t.size() > 8 && t.compare(t.size() - 8, 8, ",enforce") == 0) {
    enforce = true;
    t.resize(t.size() - 8);
  }
  if (t == "custom") return {CpuMode::Custom, "qemu64", enforce};
  if (t.rfind("custom=", 0) == 0) {
    std::string model = t.substr(7);
    if (!find_model(model)) fail("cpu: unknown model '{}' (known: {})", model, known());
    return {CpuMode::Custom, model, enforce};
  }
  fail("cpu: unknown mode '{}' (expected host-passthrough, host-model or custom[=MODEL][,enforce])", text);
}

std::string format_cpu_spec(const CpuSpec& spec) {
  switch (spec.mode) {
    case CpuMode::HostPassthrough: return "host-passthrough";
    case CpuMode::HostModel: return "host-model";
    case CpuMode::Custom:
      return "custom=" + (spec.model.empty() ? std::string("qemu64") : spec.model) + (spec.enforce ? ",enforce" : "");
  }
  return "?";
}

std::vector<std::string> unavailable_features(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec) {
  if (spec.mode != CpuMode::Custom) return {};
  const Model* m = find_model(spec.model.empty() ? "qemu64" : spec.model);
  if (!m) fail("cpu: unknown model '{}'", spec.model);
  return missing_features(supported, *m);
}

std::string unavailable_warning(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec) {
  const auto miss = unavailable_features(supported, spec);
  if (miss.empty() || spec.enforce) return {};
  return fmt::format("warning: cpu: model {}: the host (KVM) lacks {}; running without {}",
                     spec.model.empty() ? "qemu64" : spec.model, join(miss), miss.size() == 1 ? "it" : "them");
}

const char* arch_name(Arch a) { return a == Arch::I686 ? "i686" : "x86_64"; }

Arch parse_arch(const std::string& text, const std::string& what) {
  if (text == "x86_64") return Arch::X86_64;
  if (text == "i686") return Arch::I686;
  fail("{}: unknown arch '{}' (expected x86_64 or i686)", what, text);
}

void hide_long_mode(std::vector<kvm_cpuid_entry2>& table) {
  // libvirt runs an i686 domain on an x86_64 host with QEMU's qemu32 model, which has neither bit;
  // qemu-system-i386 leaves both out under TCG and clears LM from what KVM supports. SYSCALL is kept out too:
  // Intel defines it as "SYSCALL/SYSRET in 64-bit mode", and a CPU without long mode has no such mode.
  constexpr uint32_t kLm = 1u << 29, kSyscall = 1u << 11;
  if (auto* e = find(table, 0x80000001)) e->edx &= ~(kLm | kSyscall);
}

std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported, const CpuSpec& spec,
                                          uint32_t vcpu_index, uint32_t vcpu_count, Arch arch) {
  if (supported.empty()) fail("cpu: KVM reported no CPUID leaves");
  if (vcpu_count == 0 || vcpu_index >= vcpu_count || vcpu_count > 255)
    fail("cpu: vCPU {} of {} is out of range (1-255 vCPUs supported)", vcpu_index, vcpu_count);
  Table t = supported;
  switch (spec.mode) {
    case CpuMode::HostPassthrough: break;
    case CpuMode::HostModel:
      // Not migratable between hosts: the invariant TSC promise (0x80000007 EDX bit 8).
      if (auto* e = find(t, 0x80000007)) e->edx &= ~(1u << 8);
      break;
    case CpuMode::Custom: {
      std::string name = spec.model.empty() ? "qemu64" : spec.model;
      const Model* m = find_model(name);
      if (!m) fail("cpu: unknown model '{}'", name);
      apply_model(t, supported, *m, spec.enforce);
      break;
    }
  }
  if (spec.mode != CpuMode::Custom) {
    // KVM emulates the TSC-deadline timer with the in-kernel LAPIC but does not list it in
    // KVM_GET_SUPPORTED_CPUID (it reports KVM_CAP_TSC_DEADLINE_TIMER instead), as QEMU does: advertise it.
    if (auto* l1 = find(t, 1)) l1->ecx |= 1u << 24;
  }
  apply_topology(t, vcpu_index, vcpu_count);
  apply_hypervisor_leaves(t);
  if (arch == Arch::I686) hide_long_mode(t);
  std::sort(t.begin(), t.end(), [](const kvm_cpuid_entry2& a, const kvm_cpuid_entry2& b) {
    return a.function != b.function ? a.function < b.function : a.index < b.index;
  });
  return t;
}

}  // namespace vireo::cpu
