// CPU modes and CPUID tables, with synthetic KVM_GET_SUPPORTED_CPUID tables (no KVM needed).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "common/error.h"
#include "cpu/cpu_model.h"

using namespace vireo;
using namespace vireo::cpu;

namespace {

using Table = std::vector<kvm_cpuid_entry2>;

kvm_cpuid_entry2 E(uint32_t fn, uint32_t idx, uint32_t a, uint32_t b, uint32_t c, uint32_t d, bool indexed = false) {
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = idx;
  e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  e.eax = a, e.ebx = b, e.ecx = c, e.edx = d;
  return e;
}

// A rich Intel-like host: every feature bit KVM could report, cache leaf 4, topology 0xb, xsave components.
Table intel_host() {
  Table t = {
      E(0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),  // GenuineIntel, max leaf 0x1f
      E(1, 0, 0x000906ea, 0x00100800, 0xf7fa3223 & ~(1u << 31) & ~(1u << 24), 0x178bfbff),  // KVM never lists tsc-deadline
      E(4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0, true), E(4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0, true),
      E(4, 2, 0x1c004143, 0x00c0003f, 0x3ff, 0, true), E(4, 3, 0x1c03c163, 0x03c0003f, 0x3fff, 6, true),
      E(4, 4, 0, 0, 0, 0, true),
      E(7, 0, 1, 0xffffffff, 0xffffffff, 0xffffffff, true), E(7, 1, 0x30, 0, 0, 0, true),
      E(0xb, 0, 1, 2, 0x100, 0, true), E(0xb, 1, 4, 16, 0x201, 0, true),
      E(0xd, 0, 0x2e7, 0xa88, 0xa88, 0, true), E(0xd, 1, 0xf, 0, 0, 0, true), E(0xd, 2, 0x100, 0x240, 0, 0, true),
      E(0xd, 5, 0x40, 0x440, 0, 0, true), E(0xd, 6, 0x200, 0x480, 0, 0, true), E(0xd, 7, 0x400, 0x680, 0, 0, true),
      E(0xd, 9, 8, 0xa80, 0, 0, true),
      E(0x14, 0, 1, 0xf, 7, 0, true),
      E(0x1f, 0, 1, 2, 0x100, 0, true), E(0x1f, 1, 4, 16, 0x201, 0, true),
      E(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d, false), E(0x40000001, 0, 0x01007afb, 0, 0, 0),
      E(0x80000000, 0, 0x80000008, 0, 0, 0),
      E(0x80000001, 0, 0, 0, 0xffffffff, 0xffffffff),
      E(0x80000002, 0, 0x65746e49, 0x2952286c, 0x726f4320, 0x4d542865),
      E(0x80000003, 0, 0x37692029, 0x3037382d, 0x43204b30, 0x40205550),
      E(0x80000004, 0, 0x372e3320, 0x7a484730, 0, 0),
      E(0x80000006, 0, 0, 0, 0x01006040, 0), E(0x80000007, 0, 0, 0, 0, 0x100),
      E(0x80000008, 0, 0x3027, 0x200, 0, 0),
  };
  return t;
}

const kvm_cpuid_entry2* find(const Table& t, uint32_t fn, uint32_t idx = 0) {
  for (const auto& e : t)
    if (e.function == fn && e.index == idx) return &e;
  return nullptr;
}
const kvm_cpuid_entry2& get(const Table& t, uint32_t fn, uint32_t idx = 0) {
  auto* e = find(t, fn, idx);
  if (!e) throw std::runtime_error("leaf " + std::to_string(fn) + "." + std::to_string(idx) + " missing");
  return *e;
}
bool bit(uint32_t v, int b) { return (v >> b) & 1; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CpuModelSpec, ParsesLibvirtModeNames) {
  EXPECT_EQ(parse_cpu_spec("host-passthrough").mode, CpuMode::HostPassthrough);
  EXPECT_EQ(parse_cpu_spec("host-model").mode, CpuMode::HostModel);
  auto c = parse_cpu_spec("custom");
  EXPECT_EQ(c.mode, CpuMode::Custom);
  EXPECT_EQ(c.model, "qemu64");
  EXPECT_EQ(parse_cpu_spec("custom=Haswell").model, "Haswell");
  EXPECT_EQ(format_cpu_spec(parse_cpu_spec("custom=EPYC")), "custom=EPYC");
  for (const auto& m : {"qemu64", "kvm64", "Nehalem", "SandyBridge", "Haswell", "Skylake-Client", "EPYC"})
    EXPECT_EQ(parse_cpu_spec(std::string("custom=") + m).model, m);
  std::string e = error_of([] { parse_cpu_spec("custom=Pentium"); });
  EXPECT_NE(e.find("cpu: unknown model 'Pentium' (known: qemu64, kvm64"), std::string::npos) << e;
  e = error_of([] { parse_cpu_spec("host"); });
  EXPECT_NE(e.find("cpu: unknown mode 'host'"), std::string::npos) << e;
  EXPECT_NE(error_of([] { parse_cpu_spec(""); }), "");
}

TEST(CpuModelCpuid, HostPassthroughKeepsEverythingKvmSupports) {
  Table host = intel_host();
  Table t = build_cpuid(host, {CpuMode::HostPassthrough, ""}, 0, 1);
  EXPECT_EQ(get(t, 1).ecx & ~(1u << 31) & ~(1u << 24), host[1].ecx & ~(1u << 24));
  EXPECT_TRUE(bit(get(t, 1).ecx, 24)) << "tsc-deadline: KVM emulates it without listing it";
  EXPECT_EQ(get(t, 1).edx & ~(1u << 28), host[1].edx & ~(1u << 28));
  EXPECT_EQ(get(t, 7).ebx, 0xffffffffu);
  EXPECT_EQ(get(t, 7, 1).eax, 0x30u);
  EXPECT_EQ(get(t, 0x80000001).ecx, 0xffffffffu);
  EXPECT_TRUE(bit(get(t, 0x80000007).edx, 8)) << "invariant TSC kept";
  EXPECT_EQ(get(t, 0xd, 0).eax, 0x2e7u);
  EXPECT_TRUE(find(t, 0x14)) << "PT leaf kept";
}

TEST(CpuModelCpuid, HostModelHidesOnlyNonMigratableBits) {
  Table host = intel_host();
  Table t = build_cpuid(host, {CpuMode::HostModel, ""}, 0, 1);
  EXPECT_FALSE(bit(get(t, 0x80000007).edx, 8)) << "invariant TSC hidden";
  EXPECT_EQ(get(t, 7).ebx, 0xffffffffu);
  EXPECT_EQ(get(t, 1).ecx & ~(1u << 31) & ~(1u << 24), host[1].ecx & ~(1u << 24));
  EXPECT_TRUE(bit(get(t, 1).ecx, 24)) << "tsc-deadline";
}

TEST(CpuModelCpuid, Qemu64HidesModernFeatures) {
  Table t = build_cpuid(intel_host(), {CpuMode::Custom, "qemu64"}, 0, 1);
  const auto& l1 = get(t, 1);
  EXPECT_TRUE(bit(l1.edx, 25) && bit(l1.edx, 26)) << "sse, sse2";
  EXPECT_TRUE(bit(l1.ecx, 0)) << "sse3";
  EXPECT_TRUE(bit(l1.ecx, 13)) << "cx16";
  for (int b : {1, 9, 12, 19, 20, 22, 23, 24, 25, 26, 28, 29, 30}) EXPECT_FALSE(bit(l1.ecx, b)) << "leaf1 ecx bit " << b;
  EXPECT_FALSE(bit(l1.edx, 1)) << "vme is not in qemu64";
  EXPECT_TRUE(bit(l1.ecx, 31)) << "hypervisor";
  EXPECT_EQ(l1.eax, 0x00060fb1u) << "family 15 model 107 stepping 1";
  EXPECT_EQ(get(t, 7).ebx, 0u) << "no avx2/bmi/smep...";
  EXPECT_EQ(get(t, 7).ecx, 0u);
  EXPECT_EQ(get(t, 7).edx, 0u);
  EXPECT_FALSE(find(t, 7, 1));
  const auto& e1 = get(t, 0x80000001);
  EXPECT_TRUE(bit(e1.edx, 29) && bit(e1.edx, 20) && bit(e1.edx, 11)) << "lm nx syscall";
  EXPECT_FALSE(bit(e1.edx, 27)) << "no rdtscp";
  EXPECT_FALSE(bit(e1.edx, 26)) << "no 1 GiB pages";
  EXPECT_TRUE(bit(e1.ecx, 0)) << "lahf_lm";
  EXPECT_FALSE(bit(e1.ecx, 5)) << "no abm";
  EXPECT_FALSE(find(t, 0xd)) << "no xsave leaf";
  EXPECT_FALSE(find(t, 0x14)) << "leaves above the model level are gone";
  EXPECT_EQ(get(t, 0).eax, 0xdu);
  EXPECT_FALSE(bit(get(t, 0x80000007).edx, 8));
  std::string brand;
  for (uint32_t l = 0x80000002; l <= 0x80000004; l++) {
    const auto& e = get(t, l);
    brand.append(reinterpret_cast<const char*>(&e.eax), 4).append(reinterpret_cast<const char*>(&e.ebx), 4);
    brand.append(reinterpret_cast<const char*>(&e.ecx), 4).append(reinterpret_cast<const char*>(&e.edx), 4);
  }
  EXPECT_EQ(std::string(brand.c_str()), "QEMU Virtual CPU version 2.5+");
}

TEST(CpuModelCpuid, HaswellKeepsAvx2AndMasksXsave) {
  Table t = build_cpuid(intel_host(), {CpuMode::Custom, "Haswell"}, 0, 1);
  EXPECT_TRUE(bit(get(t, 1).ecx, 28)) << "avx";
  EXPECT_TRUE(bit(get(t, 1).ecx, 24)) << "Haswell has tsc-deadline (emulated by KVM)";
  EXPECT_TRUE(bit(get(t, 7).ebx, 5)) << "avx2";
  EXPECT_FALSE(bit(get(t, 7).ebx, 16)) << "avx512f hidden";
  EXPECT_FALSE(bit(get(t, 7).ebx, 4)) << "hle hidden";
  EXPECT_FALSE(bit(get(t, 7).ebx, 18)) << "rdseed is Broadwell+";
  EXPECT_EQ(get(t, 0xd, 0).eax, 0x7u) << "x87|SSE|AVX only";
  EXPECT_EQ(get(t, 0xd, 0).ecx, 0x340u) << "max size: AVX area ends at 0x240+0x100";
  EXPECT_EQ(get(t, 0xd, 1).eax, 1u) << "xsaveopt only";
  EXPECT_TRUE(find(t, 0xd, 2));
  EXPECT_FALSE(find(t, 0xd, 5)) << "AVX-512 state component gone";
  EXPECT_EQ(get(t, 1).eax, 0x000306c4u);
}

TEST(CpuModelCpuid, EnforcedModelNeedingWhatTheHostLacksIsAnError) {
  Table host = intel_host();
  for (auto& e : host)
    if (e.function == 7 && e.index == 0) e.ebx &= ~((1u << 19) | (1u << 23));  // no adx, no clflushopt
  std::string e = error_of([&] { build_cpuid(host, {CpuMode::Custom, "Skylake-Client", true}, 0, 1); });
  EXPECT_EQ(e, "cpu: model Skylake-Client needs features the host (KVM) lacks: adx, clflushopt (enforce)");
  EXPECT_EQ(error_of([&] { build_cpuid(host, {CpuMode::Custom, "Haswell", true}, 0, 1); }), "");
  // EPYC needs AMD-only sse4a: remove it from the host.
  for (auto& x : host)
    if (x.function == 0x80000001) x.ecx &= ~(1u << 6);
  e = error_of([&] { build_cpuid(host, {CpuMode::Custom, "EPYC", true}, 0, 1); });
  EXPECT_EQ(e, "cpu: model EPYC needs features the host (KVM) lacks: adx, clflushopt, sse4a (enforce)");
  EXPECT_NE(error_of([] { build_cpuid({}, {CpuMode::HostModel, ""}, 0, 1); }), "");
}

// Without enforce (QEMU's default), features the host cannot offer are dropped and reported, the rest stays.
TEST(CpuModelCpuid, UnenforcedModelDropsWhatTheHostLacks) {
  Table host = intel_host();
  for (auto& e : host) {
    if (e.function == 7 && e.index == 0) e.ebx &= ~((1u << 19) | (1u << 23));  // no adx, no clflushopt
    if (e.function == 1) e.ecx &= ~(1u << 0);                                   // no sse3 (as on PVM)
    if (e.function == 0xd && e.index == 1) e.eax &= ~(1u << 1);                 // no xsavec
  }
  EXPECT_EQ(unavailable_features(host, {CpuMode::Custom, "Skylake-Client"}),
            (std::vector<std::string>{"sse3", "adx", "clflushopt", "xsavec"}));
  EXPECT_EQ(unavailable_features(host, {CpuMode::Custom, "qemu64"}), std::vector<std::string>{"sse3"});
  EXPECT_TRUE(unavailable_features(host, {CpuMode::HostModel, ""}).empty());
  EXPECT_EQ(unavailable_warning(host, {CpuMode::Custom, "qemu64"}),
            "warning: cpu: model qemu64: the host (KVM) lacks sse3; running without it");
  EXPECT_EQ(unavailable_warning(host, {CpuMode::Custom, "Skylake-Client"}),
            "warning: cpu: model Skylake-Client: the host (KVM) lacks sse3, adx, clflushopt, xsavec; running without them");
  EXPECT_EQ(unavailable_warning(host, {CpuMode::Custom, "qemu64", true}), "") << "enforce refuses instead";
  EXPECT_EQ(unavailable_warning(intel_host(), {CpuMode::Custom, "qemu64"}), "");
  EXPECT_TRUE(unavailable_features(intel_host(), {CpuMode::Custom, "Skylake-Client"}).empty());
  Table t;
  ASSERT_EQ(error_of([&] { t = build_cpuid(host, {CpuMode::Custom, "Skylake-Client"}, 0, 1); }), "");
  EXPECT_FALSE(bit(get(t, 1).ecx, 0)) << "sse3 dropped";
  EXPECT_FALSE(bit(get(t, 7).ebx, 19)) << "adx dropped";
  EXPECT_FALSE(bit(get(t, 7).ebx, 23)) << "clflushopt dropped";
  EXPECT_FALSE(bit(get(t, 0xd, 1).eax, 1)) << "xsavec dropped";
  EXPECT_TRUE(bit(get(t, 0xd, 1).eax, 0)) << "xsaveopt kept";
  EXPECT_TRUE(bit(get(t, 7).ebx, 20)) << "smap kept";
  EXPECT_TRUE(bit(get(t, 1).ecx, 20)) << "sse4.2 kept";
  EXPECT_TRUE(bit(get(t, 1).ecx, 24)) << "tsc-deadline is KVM-emulated, never dropped";
  Table q = build_cpuid(host, {CpuMode::Custom, "qemu64"}, 0, 1);
  EXPECT_FALSE(bit(get(q, 1).ecx, 0));
  EXPECT_TRUE(bit(get(q, 1).ecx, 13)) << "cx16 kept";
  EXPECT_TRUE(bit(get(q, 0x80000001).edx, 29)) << "lm kept";
}

TEST(CpuModelSpec, EnforceSuffix) {
  auto c = parse_cpu_spec("custom=Haswell,enforce");
  EXPECT_EQ(c.mode, CpuMode::Custom);
  EXPECT_EQ(c.model, "Haswell");
  EXPECT_TRUE(c.enforce);
  EXPECT_EQ(format_cpu_spec(c), "custom=Haswell,enforce");
  auto d = parse_cpu_spec("custom,enforce");
  EXPECT_EQ(d.model, "qemu64");
  EXPECT_TRUE(d.enforce);
  EXPECT_FALSE(parse_cpu_spec("custom=Haswell").enforce);
  EXPECT_EQ(format_cpu_spec(parse_cpu_spec("custom=Haswell")), "custom=Haswell");
  EXPECT_NE(error_of([] { parse_cpu_spec("host-model,enforce"); }), "");
  EXPECT_NE(error_of([] { parse_cpu_spec("custom=Haswell,enforce,enforce"); }), "");
}

TEST(CpuModelCpuid, EveryModelBuildsOnARichHost) {
  for (const auto& m : known_models()) {
    SCOPED_TRACE(m);
    Table t = build_cpuid(intel_host(), {CpuMode::Custom, m}, 1, 2);
    EXPECT_TRUE(bit(get(t, 0x80000001).edx, 29)) << "every model is 64-bit";
    EXPECT_TRUE(bit(get(t, 1).edx, 26)) << "sse2";
    EXPECT_FALSE(bit(get(t, 7).ebx, 16)) << "no model here has avx512f";
  }
  Table t = build_cpuid(intel_host(), {CpuMode::Custom, "EPYC"}, 0, 1);
  EXPECT_EQ(get(t, 1).eax, 0x00800f12u) << "family 23 model 1 stepping 2";
  EXPECT_EQ(get(t, 0x80000001).eax, 0x00800f12u);
  EXPECT_TRUE(bit(get(t, 0x80000001).edx, 0)) << "AMD mirrors fpu in the extended leaf";
  EXPECT_TRUE(bit(get(t, 7).ebx, 29)) << "sha-ni";
}

TEST(CpuModelCpuid, PerVcpuApicIdsAndTopology) {
  for (uint32_t i = 0; i < 4; i++) {
    Table t = build_cpuid(intel_host(), {CpuMode::HostPassthrough, ""}, i, 4);
    EXPECT_EQ(get(t, 1).ebx >> 24, i) << "initial APIC id";
    EXPECT_EQ((get(t, 1).ebx >> 16) & 0xff, 4u) << "logical processors per package";
    EXPECT_EQ(get(t, 1).ebx & 0xffff, 0x0800u) << "clflush size kept";
    EXPECT_TRUE(bit(get(t, 1).edx, 28)) << "HTT";
    for (uint32_t leaf : {0xbu, 0x1fu}) {
      EXPECT_EQ(get(t, leaf, 0).edx, i);
      EXPECT_EQ(get(t, leaf, 0).ebx, 1u) << "one thread per core";
      EXPECT_EQ(get(t, leaf, 0).ecx, 0x100u);
      EXPECT_EQ(get(t, leaf, 1).eax, 2u) << "shift to the package id";
      EXPECT_EQ(get(t, leaf, 1).ebx, 4u);
      EXPECT_EQ(get(t, leaf, 1).ecx, 0x201u);
      EXPECT_EQ(get(t, leaf, 1).edx, i);
      EXPECT_EQ(get(t, leaf, 2).ecx & 0xff00, 0u) << "terminating level";
    }
    EXPECT_EQ(get(t, 4, 0).eax >> 26, 3u) << "cores per package - 1";
    EXPECT_EQ((get(t, 4, 0).eax >> 14) & 0xfff, 0u) << "L1d per core";
    EXPECT_EQ((get(t, 4, 3).eax >> 14) & 0xfff, 3u) << "L3 shared by all";
    EXPECT_EQ(get(t, 4, 0).eax & 0x3fff, 0x0121u) << "cache type/level bits kept";
    EXPECT_EQ(get(t, 0x80000008).ecx & 0xff, 3u);
  }
  Table one = build_cpuid(intel_host(), {CpuMode::HostPassthrough, ""}, 0, 1);
  EXPECT_FALSE(bit(get(one, 1).edx, 28)) << "single vCPU: no HTT";
  EXPECT_EQ(get(one, 0xb, 1).eax, 0u);
  Table three = build_cpuid(intel_host(), {CpuMode::HostPassthrough, ""}, 2, 3);
  EXPECT_EQ(get(three, 0xb, 1).eax, 2u) << "3 cores need 2 id bits";
  EXPECT_EQ(get(three, 0xb, 1).ebx, 3u);
  EXPECT_NE(error_of([] { build_cpuid(intel_host(), {CpuMode::HostModel, ""}, 4, 4); }), "");
}

TEST(CpuModelCpuid, AmdTopologyLeaves) {
  Table host = {
      E(0, 0, 0x10, 0x68747541, 0x444d4163, 0x69746e65),  // AuthenticAMD
      E(1, 0, 0x00a00f11, 0x00020800, 0x76d8320b, 0x178bfbff),
      E(7, 0, 0, 0x219c91a9, 0x0040069c, 0, true),
      E(0xd, 0, 0x7, 0x340, 0x340, 0, true), E(0xd, 1, 0xf, 0, 0, 0, true), E(0xd, 2, 0x100, 0x240, 0, 0, true),
      E(0x80000000, 0, 0x80000021, 0x68747541, 0x444d4163, 0x69746e65),
      E(0x80000001, 0, 0x00a00f11, 0, 0x75c237ff, 0x2fd3fbff),
      E(0x80000008, 0, 0x3030, 0x7, 0x1, 0),
      E(0x8000001d, 0, 0x00004121, 0x01c0003f, 0x3f, 0, true), E(0x8000001d, 1, 0x00004143, 0x01c0003f, 0x3ff, 2, true),
      E(0x8000001d, 2, 0x00004163, 0x03c0003f, 0x3fff, 1, true), E(0x8000001d, 3, 0, 0, 0, 0, true),
      E(0x8000001e, 0, 0, 0x100, 0, 0),
  };
  for (uint32_t i = 0; i < 3; i++) {
    Table t = build_cpuid(host, {CpuMode::Custom, "EPYC"}, i, 3);
    EXPECT_EQ(get(t, 0x8000001e).eax, i) << "extended APIC id";
    EXPECT_EQ(get(t, 0x8000001e).ebx & 0xff, i) << "core id";
    EXPECT_EQ((get(t, 0x8000001e).ebx >> 8) & 0xff, 0u) << "one thread per core";
    EXPECT_EQ(get(t, 0x80000008).ecx & 0xff, 2u) << "NC = cores - 1";
    EXPECT_EQ((get(t, 0x80000008).ecx >> 12) & 0xf, 2u) << "APIC id size";
    EXPECT_EQ((get(t, 0x8000001d, 0).eax >> 14) & 0xfff, 0u) << "L1 per core";
    EXPECT_EQ((get(t, 0x8000001d, 2).eax >> 14) & 0xfff, 2u) << "L3 shared by 3";
    EXPECT_EQ(get(t, 1).ebx >> 24, i);
    EXPECT_EQ(get(t, 0xb, 0).edx, i) << "0xb generated since the level allows it";
  }
  // qemu64's xlevel (0x8000000a) drops the AMD topology leaves.
  Table q = build_cpuid(host, {CpuMode::Custom, "qemu64"}, 0, 2);
  EXPECT_FALSE(find(q, 0x8000001e));
  EXPECT_FALSE(find(q, 0x8000001d));
  EXPECT_EQ(get(q, 0x80000000).eax, 0x8000000au);
}

TEST(CpuModelCpuid, HypervisorLeaves) {
  Table host = intel_host();
  host.erase(std::remove_if(host.begin(), host.end(), [](auto& e) { return e.function >= 0x40000000 && e.function < 0x40000100; }),
             host.end());
  for (auto spec : {CpuSpec{CpuMode::HostPassthrough, ""}, CpuSpec{CpuMode::Custom, "kvm64"}}) {
    Table t = build_cpuid(host, spec, 0, 1);
    EXPECT_TRUE(bit(get(t, 1).ecx, 31));
    const auto& h = get(t, 0x40000000);
    char sig[13] = {};
    std::memcpy(sig, &h.ebx, 4), std::memcpy(sig + 4, &h.ecx, 4), std::memcpy(sig + 8, &h.edx, 4);
    EXPECT_STREQ(sig, "KVMKVMKVM");
    EXPECT_GE(h.eax, 0x40000001u);
    EXPECT_TRUE(find(t, 0x40000001));
  }
  Table t = build_cpuid(intel_host(), {CpuMode::HostModel, ""}, 0, 1);
  EXPECT_EQ(get(t, 0x40000001).eax, 0x01007afbu) << "KVM feature bits as reported";
}

}  // namespace

namespace {

// An i686 VM: the same table minus long mode and SYSCALL (0x80000001 EDX bits 29 and 11), in every mode.
TEST(CpuModelCpuid, I686HidesLongModeAndSyscall) {
  const Table host = intel_host();
  for (const char* spec : {"host-passthrough", "host-model", "custom=qemu64", "custom=Haswell"}) {
    const Table t64 = build_cpuid(host, parse_cpu_spec(spec), 0, 2);
    const Table t32 = build_cpuid(host, parse_cpu_spec(spec), 0, 2, Arch::I686);
    EXPECT_TRUE(bit(get(t64, 0x80000001).edx, 29)) << spec;
    EXPECT_TRUE(bit(get(t64, 0x80000001).edx, 11)) << spec;
    EXPECT_FALSE(bit(get(t32, 0x80000001).edx, 29)) << spec;
    EXPECT_FALSE(bit(get(t32, 0x80000001).edx, 11)) << spec;
    EXPECT_EQ(get(t32, 0x80000001).edx, get(t64, 0x80000001).edx & ~((1u << 29) | (1u << 11))) << spec;
    ASSERT_EQ(t32.size(), t64.size()) << spec;
    for (size_t i = 0; i < t32.size(); ++i) {
      if (t32[i].function == 0x80000001) continue;
      EXPECT_EQ(std::memcmp(&t32[i], &t64[i], sizeof t32[i]), 0) << spec << " leaf " << std::hex << t32[i].function;
    }
  }
  Table none = host;
  std::erase_if(none, [](const kvm_cpuid_entry2& e) { return e.function == 0x80000001; });
  hide_long_mode(none);  // no leaf: nothing to hide, no error
  EXPECT_EQ(none.size(), host.size() - 1);
}

TEST(CpuModelSpec, ArchNames) {
  EXPECT_EQ(parse_arch("x86_64", "a"), Arch::X86_64);
  EXPECT_EQ(parse_arch("i686", "a"), Arch::I686);
  EXPECT_STREQ(arch_name(Arch::I686), "i686");
  EXPECT_STREQ(arch_name(Arch::X86_64), "x86_64");
  EXPECT_EQ(error_of([] { parse_arch("i386", "os/type arch"); }), "os/type arch: unknown arch 'i386' (expected x86_64 or i686)");
}

}  // namespace
