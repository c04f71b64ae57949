// ACPI tables: bytes, lengths, checksums and field offsets (ACPI 6.x), read back independently of the builder.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "acpi/tables.h"
#include "common/error.h"
#include "memory/guest_memory.h"

namespace vireo::acpi {
namespace {

uint8_t u8(const std::vector<uint8_t>& b, size_t off) { return b.at(off); }
uint16_t u16(const std::vector<uint8_t>& b, size_t off) { return static_cast<uint16_t>(u8(b, off) | u8(b, off + 1) << 8); }
uint32_t u32(const std::vector<uint8_t>& b, size_t off) { return u16(b, off) | static_cast<uint32_t>(u16(b, off + 2)) << 16; }
uint64_t u64(const std::vector<uint8_t>& b, size_t off) { return u32(b, off) | static_cast<uint64_t>(u32(b, off + 4)) << 32; }
std::string sig(const std::vector<uint8_t>& b, size_t off, size_t n = 4) {
  return std::string(reinterpret_cast<const char*>(b.data() + off), n);
}
uint8_t sum(const std::vector<uint8_t>& b, size_t off, size_t n) {
  uint8_t s = 0;
  for (size_t i = 0; i < n; i++) s = static_cast<uint8_t>(s + b.at(off + i));
  return s;
}

// One table cut out of the image at its guest-physical address, checked for signature, length and checksum.
std::vector<uint8_t> table(const Tables& t, uint64_t gpa, const char* signature) {
  const size_t off = gpa - t.base;
  EXPECT_EQ(sig(t.image, off), signature);
  const uint32_t len = u32(t.image, off + 4);
  EXPECT_GE(len, 36u);
  EXPECT_LE(off + len, t.image.size());
  EXPECT_EQ(sum(t.image, off, len), 0) << signature << " checksum";
  EXPECT_EQ(sig(t.image, off + 10, 6), "VIREO ") << signature;
  return {t.image.begin() + static_cast<ptrdiff_t>(off), t.image.begin() + static_cast<ptrdiff_t>(off + len)};
}

TEST(AcpiTables, RsdpV2PointsAtXsdtAndRsdt) {
  Tables t = build_tables({.cpus = 2});
  EXPECT_EQ(t.rsdp, 0xf8000u);
  EXPECT_EQ(t.rsdp % 16, 0u);
  const auto& b = t.image;
  EXPECT_EQ(sig(b, 0, 8), "RSD PTR ");
  EXPECT_EQ(sum(b, 0, 20), 0) << "ACPI 1.0 checksum over 20 bytes";
  EXPECT_EQ(sum(b, 0, 36), 0) << "extended checksum over 36 bytes";
  EXPECT_EQ(u8(b, 15), 2) << "revision";
  EXPECT_EQ(u32(b, 16), t.rsdt);
  EXPECT_EQ(u32(b, 20), 36u);
  EXPECT_EQ(u64(b, 24), t.xsdt);
}

TEST(AcpiTables, XsdtAndRsdtListFadtAndMadt) {
  Tables t = build_tables({.cpus = 1});
  auto x = table(t, t.xsdt, "XSDT");
  ASSERT_EQ(x.size(), 36u + 16u);
  EXPECT_EQ(u64(x, 36), t.fadt);
  EXPECT_EQ(u64(x, 44), t.madt);
  auto r = table(t, t.rsdt, "RSDT");
  ASSERT_EQ(r.size(), 36u + 8u);
  EXPECT_EQ(u32(r, 36), t.fadt);
  EXPECT_EQ(u32(r, 40), t.madt);
  EXPECT_EQ(x[8], 1);  // revision
}

void expect_gas_io(const std::vector<uint8_t>& f, size_t off, uint64_t port, uint8_t width, uint8_t access) {
  EXPECT_EQ(u8(f, off), 1) << "address space: system I/O at FADT+" << off;
  EXPECT_EQ(u8(f, off + 1), width) << off;
  EXPECT_EQ(u8(f, off + 2), 0) << off;
  EXPECT_EQ(u8(f, off + 3), access) << off;
  EXPECT_EQ(u64(f, off + 4), port) << off;
}
void expect_gas_none(const std::vector<uint8_t>& f, size_t off) {
  for (size_t i = 0; i < 12; i++) EXPECT_EQ(f[off + i], 0) << "FADT+" << off + i;
}

TEST(AcpiTables, FadtDescribesThePmBlock) {
  Tables t = build_tables({.cpus = 1});
  auto f = table(t, t.fadt, "FACP");
  ASSERT_EQ(f.size(), 276u);
  EXPECT_EQ(f[8], 6) << "revision";
  EXPECT_EQ(u32(f, 36), t.facs);
  EXPECT_EQ(u32(f, 40), t.dsdt);
  EXPECT_EQ(u16(f, 46), 9) << "SCI_INT";
  EXPECT_EQ(u32(f, 48), 0u) << "SMI_CMD: always in ACPI mode";
  EXPECT_EQ(u8(f, 52), 0);
  EXPECT_EQ(u8(f, 53), 0);
  EXPECT_EQ(u32(f, 56), 0x600u) << "PM1a_EVT_BLK";
  EXPECT_EQ(u32(f, 60), 0u);
  EXPECT_EQ(u32(f, 64), 0x604u) << "PM1a_CNT_BLK";
  EXPECT_EQ(u32(f, 68), 0u);
  EXPECT_EQ(u32(f, 72), 0u);
  EXPECT_EQ(u32(f, 76), 0x608u) << "PM_TMR_BLK";
  EXPECT_EQ(u32(f, 80), 0u) << "no GPE0";
  EXPECT_EQ(u8(f, 88), 4) << "PM1_EVT_LEN";
  EXPECT_EQ(u8(f, 89), 2) << "PM1_CNT_LEN";
  EXPECT_EQ(u8(f, 91), 4) << "PM_TMR_LEN";
  EXPECT_EQ(u8(f, 92), 0) << "GPE0_BLK_LEN";
  EXPECT_GT(u16(f, 96), 100) << "no C2";
  EXPECT_GT(u16(f, 98), 1000) << "no C3";
  EXPECT_EQ(u16(f, 109), 0x7) << "IAPC_BOOT_ARCH: legacy devices, 8042, no VGA";
  const uint32_t flags = u32(f, 112);
  EXPECT_TRUE(flags & (1u << 10)) << "RESET_REG_SUP";
  EXPECT_TRUE(flags & (1u << 8)) << "TMR_VAL_EXT";
  EXPECT_FALSE(flags & (1u << 4)) << "PWR_BUTTON clear = fixed-feature power button";
  EXPECT_TRUE(flags & (1u << 5)) << "SLP_BUTTON set = no fixed sleep button";
  EXPECT_FALSE(flags & (1u << 20)) << "not HW_REDUCED_ACPI";
  expect_gas_io(f, 116, 0x60c, 8, 1);
  EXPECT_EQ(u8(f, 128), 0x06) << "RESET_VALUE";
  EXPECT_EQ(u64(f, 132), t.facs) << "X_FIRMWARE_CTRL";
  EXPECT_EQ(u64(f, 140), t.dsdt) << "X_DSDT";
  expect_gas_io(f, 148, 0x600, 32, 2);
  expect_gas_none(f, 160);
  expect_gas_io(f, 172, 0x604, 16, 2);
  expect_gas_none(f, 184);
  expect_gas_none(f, 196);
  expect_gas_io(f, 208, 0x608, 32, 3);
  expect_gas_none(f, 220);
  expect_gas_none(f, 232);
  expect_gas_none(f, 244);
  expect_gas_none(f, 256);
  EXPECT_EQ(sig(f, 268, 8), "VIREOVMM");
}

TEST(AcpiTables, FadtFollowsPmBase) {
  Tables t = build_tables({.cpus = 1, .pm_base = 0xb000});
  auto f = table(t, t.fadt, "FACP");
  EXPECT_EQ(u32(f, 56), 0xb000u);
  EXPECT_EQ(u32(f, 64), 0xb004u);
  EXPECT_EQ(u32(f, 76), 0xb008u);
  expect_gas_io(f, 116, 0xb00c, 8, 1);
  expect_gas_io(f, 148, 0xb000, 32, 2);
  expect_gas_io(f, 172, 0xb004, 16, 2);
  expect_gas_io(f, 208, 0xb008, 32, 3);
}

TEST(AcpiTables, Facs) {
  Tables t = build_tables({.cpus = 1});
  EXPECT_EQ(t.facs % 64, 0u);
  const size_t off = t.facs - t.base;
  EXPECT_EQ(sig(t.image, off), "FACS");
  EXPECT_EQ(u32(t.image, off + 4), 64u);
  EXPECT_EQ(u8(t.image, off + 32), 2) << "version";
  EXPECT_EQ(u32(t.image, off + 16), 0u) << "global lock free";
}

TEST(AcpiTables, DsdtHoldsS5Package) {
  const std::vector<uint8_t> want = {0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00};
  EXPECT_EQ(dsdt_aml({.cpus = 1}), want) << "no PCI root: \\_S5 only";
  EXPECT_EQ(s5_aml(), want);
  Tables t = build_tables({.cpus = 1});
  auto d = table(t, t.dsdt, "DSDT");
  EXPECT_EQ(d[8], 2) << "revision 2: 64-bit integers";
  ASSERT_EQ(d.size(), 36u + want.size());
  // Decode the package independently: NameOp, NameSeg, PackageOp, 1-byte PkgLength covering the rest.
  EXPECT_EQ(d[36], 0x08);
  EXPECT_EQ(sig(d, 37), "_S5_");
  EXPECT_EQ(d[41], 0x12);
  const uint8_t pkglen = d[42];
  ASSERT_LT(pkglen, 0x40) << "one-byte PkgLength encoding";
  EXPECT_EQ(42u + pkglen, d.size()) << "PkgLength spans to the end of the table";
  EXPECT_EQ(d[43], 4) << "NumElements";
  EXPECT_EQ(d[44], 0x0a) << "BytePrefix";
  EXPECT_EQ(d[45], kSlpTypS5) << "SLP_TYPa";
}

class AcpiMadt : public ::testing::TestWithParam<uint32_t> {};

TEST_P(AcpiMadt, EntriesPerCpu) {
  const uint32_t n = GetParam();
  Tables t = build_tables({.cpus = n});
  auto m = table(t, t.madt, "APIC");
  ASSERT_EQ(m.size(), 44u + 8u * n + 12u + 10u + 6u);
  EXPECT_EQ(u32(m, 36), 0xfee00000u);
  EXPECT_EQ(u32(m, 40), 1u) << "PCAT_COMPAT";
  size_t off = 44;
  uint32_t lapics = 0, ioapics = 0, isos = 0, nmis = 0;
  bool iso9 = false;
  while (off < m.size()) {
    const uint8_t type = m[off], len = m[off + 1];
    ASSERT_GE(len, 2);
    ASSERT_LE(off + len, m.size());
    if (type == 0) {
      ASSERT_EQ(len, 8);
      EXPECT_EQ(m[off + 2], lapics) << "processor UID";
      EXPECT_EQ(m[off + 3], lapics) << "APIC ID = vCPU index";
      EXPECT_EQ(u32(m, off + 4), 1u) << "enabled";
      lapics++;
    } else if (type == 1) {
      ASSERT_EQ(len, 12);
      EXPECT_EQ(m[off + 2], n) << "IOAPIC id = cpus (as the MP table)";
      EXPECT_EQ(u32(m, off + 4), 0xfec00000u);
      EXPECT_EQ(u32(m, off + 8), 0u) << "GSI base";
      ioapics++;
    } else if (type == 2) {
      ASSERT_EQ(len, 10);
      EXPECT_EQ(m[off + 2], 0) << "bus ISA";
      // Only the SCI: IRQ 0 stays identity-mapped (vireo's KVM routing puts ISA IRQ n on IOAPIC pin n).
      if (m[off + 3] == 9) {
        iso9 = true;
        EXPECT_EQ(u32(m, off + 4), 9u);
        EXPECT_EQ(u16(m, off + 8), 0x000d) << "active high, level";
      } else {
        ADD_FAILURE() << "unexpected override of IRQ " << int(m[off + 3]);
      }
      isos++;
    } else if (type == 4) {
      ASSERT_EQ(len, 6);
      EXPECT_EQ(m[off + 2], 0xff);
      EXPECT_EQ(m[off + 5], 1) << "LINT1";
      nmis++;
    } else {
      ADD_FAILURE() << "unexpected MADT entry type " << int(type);
    }
    off += len;
  }
  EXPECT_EQ(lapics, n);
  EXPECT_EQ(ioapics, 1u);
  EXPECT_EQ(isos, 1u);
  EXPECT_TRUE(iso9);
  EXPECT_EQ(nmis, 1u);
}
INSTANTIATE_TEST_SUITE_P(Cpus, AcpiMadt, ::testing::Values(1u, 2u, 3u, 4u, 64u, 254u));

TEST(AcpiTables, TablesDoNotOverlapAndStayBelowLimit) {
  Tables t = build_tables({.cpus = 254});
  struct R {
    uint64_t a, len;
  };
  auto len_at = [&](uint64_t gpa) -> uint64_t { return u32(t.image, gpa - t.base + 4); };
  std::vector<R> rs = {{t.rsdp, 36}, {t.facs, 64}, {t.dsdt, len_at(t.dsdt)}, {t.fadt, len_at(t.fadt)},
                       {t.madt, len_at(t.madt)}, {t.xsdt, len_at(t.xsdt)}, {t.rsdt, len_at(t.rsdt)}};
  for (size_t i = 0; i < rs.size(); i++) {
    EXPECT_LE(rs[i].a + rs[i].len, t.base + t.image.size());
    EXPECT_LE(rs[i].a + rs[i].len, kDefaultLimit);
    for (size_t j = i + 1; j < rs.size(); j++)
      EXPECT_TRUE(rs[i].a + rs[i].len <= rs[j].a || rs[j].a + rs[j].len <= rs[i].a) << i << " overlaps " << j;
  }
}

TEST(AcpiTables, BadConfigsAreErrors) {
  auto msg = [](const TableConfig& c) {
    try {
      build_tables(c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(msg({.cpus = 0}), "acpi: 0 vCPUs cannot be described (1-254 supported)");
  EXPECT_EQ(msg({.cpus = 255}), "acpi: 255 vCPUs cannot be described (1-254 supported)");
  EXPECT_EQ(msg({.cpus = 1, .base = 0xf8004}), "acpi: table base 0xf8004 is not 16-byte aligned");
  EXPECT_NE(msg({.cpus = 254, .base = 0xff000, .limit = 0xff400}).find("beyond the limit 0xff400"), std::string::npos);
  EXPECT_NE(msg({.cpus = 1, .pm_base = 0xfff8}).find("does not fit in I/O space"), std::string::npos);
  EXPECT_NE(msg({.cpus = 1, .base = 0x100000, .limit = 0xf0000}).find("is empty or not inside the low 4 GiB"), std::string::npos);
}

// Writes into a real GuestMemory and finds everything the way a guest does: scan 0xe0000-0xfffff for the RSDP
// on 16-byte boundaries, then follow physical pointers.
TEST(AcpiTables, WriteTablesAndWalkLikeAGuest) {
  GuestMemory mem(MemoryConfig{.size = 4 << 20});
  std::vector<uint8_t> junk(0x8000, 0xaa);
  mem.write(0xf8000, junk);  // stale bytes (e.g. an older writer's tables) must be gone afterwards
  const uint64_t rsdp = write_tables(mem, {.cpus = 3});
  EXPECT_EQ(rsdp, 0xf8000u);
  uint64_t found = 0;
  for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
    char s[8];
    mem.read(a, std::span(reinterpret_cast<uint8_t*>(s), 8));
    if (std::memcmp(s, "RSD PTR ", 8) == 0) {
      found = a;
      break;
    }
  }
  ASSERT_EQ(found, rsdp);
  const uint64_t xsdt = mem.read_obj<uint64_t>(rsdp + 24);
  const uint32_t xlen = mem.read_obj<uint32_t>(xsdt + 4);
  std::vector<uint8_t> x(xlen);
  mem.read(xsdt, x);
  EXPECT_EQ(sum(x, 0, xlen), 0);
  bool saw_fadt = false, saw_madt = false;
  for (size_t off = 36; off + 8 <= xlen; off += 8) {
    const uint64_t p = u64(x, off);
    char s[5] = {};
    mem.read(p, std::span(reinterpret_cast<uint8_t*>(s), 4));
    if (std::string(s) == "FACP") {
      saw_fadt = true;
      const uint64_t dsdt = mem.read_obj<uint64_t>(p + 140);
      char d[5] = {};
      mem.read(dsdt, std::span(reinterpret_cast<uint8_t*>(d), 4));
      EXPECT_STREQ(d, "DSDT");
      EXPECT_EQ(mem.read_obj<uint16_t>(p + 46), 9);
    }
    if (std::string(s) == "APIC") {
      saw_madt = true;
      EXPECT_EQ(mem.read_obj<uint32_t>(p + 4), 44u + 3 * 8 + 12 + 10 + 6);
    }
  }
  EXPECT_TRUE(saw_fadt && saw_madt);
  // The rest of the area up to 1 MiB is zero.
  Tables t = build_tables({.cpus = 3});
  std::vector<uint8_t> tail(0x100000 - 0xf8000 - t.image.size());
  mem.read(0xf8000 + t.image.size(), tail);
  for (size_t i = 0; i < tail.size(); i++) ASSERT_EQ(tail[i], 0) << "at 0x" << std::hex << 0xf8000 + t.image.size() + i;
  std::vector<uint8_t> img(t.image.size());
  mem.read(0xf8000, img);
  EXPECT_EQ(img, t.image);
}

TEST(AcpiTables, WriteOutsideRamIsAnError) {
  GuestMemory mem(MemoryConfig{.size = 2 << 20});
  try {
    write_tables(mem, {.cpus = 1, .base = 0x300000, .limit = 0x308000});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "acpi: table area 0x300000-0x308000 is not guest RAM");
  }
}

}  // namespace
}  // namespace vireo::acpi
