// ACPI tables as boot writes them (src/acpi's writer; its own tests are tests/unit/acpi): the chain in guest RAM,
// PCI root -> MCFG + e820-reserved ECAM, and the RSDP pointer handed to Linux (zero page) and PVH kernels.
#include "boot/internal.h"
#include "boot_helpers.h"
#include "common/layout.h"

using namespace boot_test;
using namespace vireo;
using namespace vireo::boot;

namespace {

uint8_t sum(const std::vector<uint8_t>& b) {
  uint8_t s = 0;
  for (auto x : b) s = static_cast<uint8_t>(s + x);
  return s;
}

// Reads a whole SDT (header length) and checks its checksum and signature.
std::vector<uint8_t> table(const GuestMemory& m, uint64_t gpa, const char* sig) {
  auto h = gbytes(m, gpa, 36);
  EXPECT_EQ(std::string(h.begin(), h.begin() + 4), sig);
  uint32_t len = le<uint32_t>(h, 4);
  EXPECT_GE(len, 36u);
  auto t = gbytes(m, gpa, len);
  EXPECT_EQ(sum(t), 0) << sig << " checksum";
  return t;
}

// boot::load writes acpi::write_tables' tables (the one writer, src/acpi) for the configured vCPUs, and the
// e820 map reserves everything they live in.
TEST(BootAcpi, LoadWritesTheAcpiTables) {
  const std::string hello = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello.elf";
  if (::access(hello.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built";
  auto mem = make_memory(64 << 20);
  load(*mem, BootConfig{hello, "", "", 3});
  const acpi::Tables want = acpi::build_tables({.cpus = 3});
  EXPECT_EQ(want.rsdp, addr::kAcpi);
  EXPECT_EQ(gbytes(*mem, want.base, want.image.size()), want.image);
  auto r = gbytes(*mem, addr::kAcpi, 36);
  EXPECT_EQ(std::string(r.begin(), r.begin() + 8), "RSD PTR ");
  auto x = table(*mem, le<uint64_t>(r, 24), "XSDT");
  ASSERT_EQ(x.size(), 36u + 16u) << "FADT and MADT; no MCFG without a PCI root";
  auto fadt = table(*mem, le<uint64_t>(x, 36), "FACP");
  EXPECT_EQ(le<uint32_t>(fadt, 56), 0x600u) << "PM1a_EVT_BLK: the PM device of src/acpi";
  EXPECT_FALSE(le<uint32_t>(fadt, 112) & (1u << 20)) << "not hardware-reduced";
  auto madt = table(*mem, le<uint64_t>(x, 44), "APIC");
  EXPECT_EQ(madt.size(), 44u + 3 * 8 + 12 + 10 + 6);
  auto dsdt = table(*mem, le<uint64_t>(fadt, 140), "DSDT");
  for (uint64_t a : {addr::kAcpi, le<uint64_t>(x, 36), le<uint64_t>(x, 44), le<uint64_t>(fadt, 140)}) {
    bool reserved = false;
    for (const auto& e : build_e820(*mem))
      if (e.addr <= a && a < e.addr + e.size) reserved = e.type == kE820Reserved;
    EXPECT_TRUE(reserved) << std::hex << a;
  }
}

// With a PCI root: the tables get PCI0 and the MCFG, and the ECAM is reserved in every e820 map boot writes
// (Linux uses the MCFG only then: "PCI: MMCONFIG at [mem 0xe0000000-0xe00fffff] reserved as E820 entry").
TEST(BootAcpi, PciRootGetsMcfgAndReservedEcam) {
  const std::string hello = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello.elf";
  if (::access(hello.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built";
  acpi::PciRoot pci;
  pci.ecam_base = layout::kPciEcamBase;
  pci.ecam_size = layout::kPciEcamSize;
  pci.mem32_base = layout::kPciMem32Base;
  pci.mem32_size = layout::kPciMem32Size;
  pci.io_base = layout::kPciIoBase;
  pci.io_size = layout::kPciIoSize;
  pci.intx = {{1, 0, 5}};
  BootConfig cfg{hello, "", "", 1};
  cfg.acpi.pci = pci;
  auto mem = make_memory(64 << 20);
  BootPlan plan = load(*mem, cfg);
  acpi::TableConfig tc = cfg.acpi;
  tc.cpus = 1;
  const acpi::Tables want = acpi::build_tables(tc);
  ASSERT_NE(want.mcfg, 0u);
  EXPECT_EQ(gbytes(*mem, want.base, want.image.size()), want.image);
  auto x = table(*mem, le<uint64_t>(gbytes(*mem, addr::kAcpi, 36), 24), "XSDT");
  ASSERT_EQ(x.size(), 36u + 24u);
  table(*mem, le<uint64_t>(x, 52), "MCFG");
  auto has_ecam = [](const std::vector<E820Entry>& e) {
    for (const auto& x : e)
      if (x.addr == 0xe0000000 && x.size == 0x100000 && x.type == kE820Reserved) return true;
    return false;
  };
  EXPECT_TRUE(has_ecam(plan.e820));
  EXPECT_TRUE(has_ecam(build_e820(*mem, cfg.acpi)));
  EXPECT_FALSE(has_ecam(build_e820(*mem)));
  auto e = build_e820(*mem, cfg.acpi);
  for (size_t i = 1; i < e.size(); i++) EXPECT_LE(e[i - 1].addr + e[i - 1].size, e[i].addr) << "sorted, disjoint";
}

TEST(BootAcpi, KernelsAreToldWhereTheRsdpIs) {
  std::string pvh = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello_pvh.elf";
  if (::access(pvh.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built";
  auto mem = make_memory(64 << 20);
  load(*mem, BootConfig{pvh, "", "", 2});
  EXPECT_EQ(mem->read_obj<HvmStartInfo>(addr::kBootParams).rsdp_paddr, addr::kAcpi);
}

TEST(BootAcpi, TooManyCpus) {
  const std::string hello = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello.elf";
  if (::access(hello.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built";
  auto mem = make_memory(64 << 20);
  expect_error([&] { load(*mem, BootConfig{hello, "", "", 255}); }, "255 vCPUs");
  load(*mem, BootConfig{hello, "", "", 254});  // the largest fits below 1 MiB
}

}  // namespace
