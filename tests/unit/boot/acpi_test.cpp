// ACPI tables: checksums, table chain, MADT processors/IOAPIC, FADT hardware-reduced + sleep register, DSDT \_S5,
// and the RSDP pointer handed to Linux (zero page) and PVH kernels (start info).
#include "boot/internal.h"
#include "boot_helpers.h"

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

TEST(BootAcpi, TablesChainAndDescribeTheMachine) {
  auto mem = make_memory(64 << 20);
  uint64_t rsdp = write_acpi(*mem, 3);
  EXPECT_EQ(rsdp, addr::kAcpi);
  EXPECT_EQ(rsdp % 16, 0u);
  EXPECT_GE(rsdp, 0xe0000u) << "inside the range Linux scans";
  auto r = gbytes(*mem, rsdp, 36);
  EXPECT_EQ(std::string(r.begin(), r.begin() + 8), "RSD PTR ");
  EXPECT_EQ(sum(std::vector<uint8_t>(r.begin(), r.begin() + 20)), 0) << "RSDP checksum";
  EXPECT_EQ(sum(r), 0) << "RSDP extended checksum";
  EXPECT_EQ(r[15], 2) << "revision 2";
  EXPECT_EQ(le<uint32_t>(r, 20), 36u);

  auto x = table(*mem, le<uint64_t>(r, 24), "XSDT");
  ASSERT_EQ(x.size(), 36u + 16u);
  auto fadt = table(*mem, le<uint64_t>(x, 36), "FACP");
  auto madt = table(*mem, le<uint64_t>(x, 44), "APIC");

  ASSERT_EQ(fadt.size(), 276u);
  EXPECT_EQ(fadt[8], 6) << "FADT revision";
  EXPECT_FALSE(le<uint32_t>(fadt, 112) & (1u << 20)) << "not hardware-reduced";
  EXPECT_FALSE(le<uint32_t>(fadt, 112) & (1u << 4)) << "fixed-feature power button";
  EXPECT_EQ(le<uint16_t>(fadt, 46), kAcpiSciIrq);
  EXPECT_EQ(le<uint32_t>(fadt, 48), 0u) << "no SMI_CMD: always in ACPI mode";
  EXPECT_EQ(le<uint32_t>(fadt, 56), kAcpiPm1aEvt);
  EXPECT_EQ(le<uint32_t>(fadt, 64), kAcpiPm1aCnt);
  EXPECT_EQ(fadt[88], 4);
  EXPECT_EQ(fadt[89], 2);
  EXPECT_EQ(fadt[148], 1) << "X_PM1a_EVT_BLK in system I/O";
  EXPECT_EQ(fadt[149], 32);
  EXPECT_EQ(le<uint64_t>(fadt, 152), kAcpiPm1aEvt);
  EXPECT_EQ(fadt[173], 16);
  EXPECT_EQ(le<uint64_t>(fadt, 176), kAcpiPm1aCnt);
  uint64_t dsdt_addr = le<uint64_t>(fadt, 140);
  EXPECT_EQ(le<uint32_t>(fadt, 40), dsdt_addr);
  auto dsdt = table(*mem, dsdt_addr, "DSDT");
  const uint8_t s5[] = {0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05};
  EXPECT_EQ(std::vector<uint8_t>(dsdt.begin() + 36, dsdt.begin() + 46), std::vector<uint8_t>(std::begin(s5), std::end(s5)));

  EXPECT_EQ(le<uint32_t>(madt, 36), 0xfee00000u);
  std::vector<int> apic_ids;
  int ioapics = 0, nmis = 0, overrides = 0;
  for (size_t at = 44; at < madt.size();) {
    uint8_t type = madt[at], len = madt[at + 1];
    ASSERT_GE(len, 2);
    if (type == 0) {
      EXPECT_EQ(len, 8);
      EXPECT_EQ(le<uint32_t>(madt, at + 4) & 1, 1u) << "enabled";
      apic_ids.push_back(madt[at + 3]);
    } else if (type == 1) {
      EXPECT_EQ(madt[at + 2], 3) << "IOAPIC id after the CPUs";
      EXPECT_EQ(le<uint32_t>(madt, at + 4), 0xfec00000u);
      EXPECT_EQ(le<uint32_t>(madt, at + 8), 0u) << "GSI base";
      ioapics++;
    } else if (type == 2) {
      EXPECT_EQ(madt[at + 3], kAcpiSciIrq) << "override for the SCI";
      EXPECT_EQ(le<uint32_t>(madt, at + 4), kAcpiSciIrq);
      EXPECT_EQ(le<uint16_t>(madt, at + 8), 0x000d) << "active high, level";
      overrides++;
    } else if (type == 4) {
      EXPECT_EQ(madt[at + 5], 1) << "LINT1";
      nmis++;
    }
    at += len;
  }
  EXPECT_EQ(apic_ids, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(ioapics, 1);
  EXPECT_EQ(nmis, 1);
  EXPECT_EQ(overrides, 1);
  // Everything lies in an e820-reserved range.
  for (uint64_t a : {rsdp, le<uint64_t>(x, 36), le<uint64_t>(x, 44), dsdt_addr}) {
    bool reserved = false;
    for (const auto& e : build_e820(*mem))
      if (e.addr <= a && a < e.addr + e.size) reserved = e.type == kE820Reserved;
    EXPECT_TRUE(reserved) << std::hex << a;
  }
}

TEST(BootAcpi, KernelsAreToldWhereTheRsdpIs) {
  std::string pvh = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello_pvh.elf";
  if (::access(pvh.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built";
  auto mem = make_memory(64 << 20);
  load(*mem, BootConfig{pvh, "", "", 2});
  EXPECT_EQ(mem->read_obj<HvmStartInfo>(addr::kBootParams).rsdp_paddr, addr::kAcpi);
}

TEST(BootAcpi, TooManyCpus) {
  auto mem = make_memory(64 << 20);
  expect_error([&] { write_acpi(*mem, 255); }, "255 vCPUs");
  write_acpi(*mem, 254);  // the largest fits below 1 MiB
}

}  // namespace
