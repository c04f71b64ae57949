// The AML encoder (src/acpi/aml.h): exact bytes of small pieces, worked out by hand from ACPI 6.x 20.2 and 6.4,
// and the PCI parts of the tables (DSDT \_SB.PCI0 / \_SB.MRES, MCFG), including a disassembly by ACPICA's iasl
// (an independent AML parser) when CMake found it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "acpi/aml.h"
#include "acpi/tables.h"
#include "common/error.h"

namespace vireo::acpi {
namespace {

using aml::Bytes;

Bytes bytes(std::initializer_list<int> v) {
  Bytes out;
  for (int x : v) out.push_back(static_cast<uint8_t>(x));
  return out;
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Aml, PkgLengthOneTwoThreeFourBytes) {
  EXPECT_EQ(aml::pkg_length(0), bytes({0x01}));
  EXPECT_EQ(aml::pkg_length(62), bytes({0x3f})) << "63 = the largest one-byte length";
  // 63 body bytes + 2 = 65 = 0x41: lead 0x40 | low nibble 1, then 0x41 >> 4.
  EXPECT_EQ(aml::pkg_length(63), bytes({0x41, 0x04}));
  EXPECT_EQ(aml::pkg_length(4093), bytes({0x4f, 0xff})) << "4095 = the largest two-byte length";
  EXPECT_EQ(aml::pkg_length(4094), bytes({0x81, 0x00, 0x01})) << "4097 in three bytes";
  EXPECT_EQ(aml::pkg_length(0xffffc), bytes({0x8f, 0xff, 0xff})) << "0xfffff: the largest three-byte length";
  EXPECT_EQ(aml::pkg_length(0xffffd), bytes({0xc1, 0x00, 0x00, 0x01})) << "0x100001 in four bytes";
  EXPECT_NE(error_of([] { aml::pkg_length(0x10000000); }), "no error");
}

TEST(Aml, Integers) {
  EXPECT_EQ(aml::integer(0), bytes({0x00}));
  EXPECT_EQ(aml::integer(1), bytes({0x01}));
  EXPECT_EQ(aml::integer(2), bytes({0x0a, 0x02}));
  EXPECT_EQ(aml::integer(0xff), bytes({0x0a, 0xff}));
  EXPECT_EQ(aml::integer(0x100), bytes({0x0b, 0x00, 0x01}));
  EXPECT_EQ(aml::integer(0x12345678), bytes({0x0c, 0x78, 0x56, 0x34, 0x12}));
  EXPECT_EQ(aml::integer(0x100000000), bytes({0x0e, 0, 0, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(aml::dword(5), bytes({0x0c, 0x05, 0, 0, 0}));
  EXPECT_EQ(aml::string("ab"), bytes({0x0d, 'a', 'b', 0}));
}

TEST(Aml, EisaId) {
  // The well-known value: EISAID("PNP0A03") = 0x030ad041 (bytes 41 d0 0a 03).
  EXPECT_EQ(aml::eisa_id_value("PNP0A03"), 0x030ad041u);
  EXPECT_EQ(aml::eisa_id("PNP0A08"), bytes({0x0c, 0x41, 0xd0, 0x0a, 0x08}));
  EXPECT_EQ(aml::eisa_id("PNP0C02"), bytes({0x0c, 0x41, 0xd0, 0x0c, 0x02}));
  EXPECT_NE(error_of([] { aml::eisa_id("pnp0a03"); }), "no error");
  EXPECT_NE(error_of([] { aml::eisa_id("PNP0A0"); }), "no error");
  EXPECT_NE(error_of([] { aml::eisa_id("PNP0A0G"); }), "no error");
}

TEST(Aml, NameStrings) {
  EXPECT_EQ(aml::name_string("_HID"), bytes({'_', 'H', 'I', 'D'}));
  EXPECT_EQ(aml::name_string("PCI"), bytes({'P', 'C', 'I', '_'})) << "padded like ASL";
  EXPECT_EQ(aml::name_string("\\_SB_"), bytes({0x5c, '_', 'S', 'B', '_'}));
  EXPECT_EQ(aml::name_string("\\_SB.PCI0"), bytes({0x5c, 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0'}));
  EXPECT_EQ(aml::name_string("A.B.C"), bytes({0x2f, 3, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_', '_', '_'}));
  EXPECT_EQ(aml::name_string("^^X"), bytes({0x5e, 0x5e, 'X', '_', '_', '_'}));
  for (const char* bad : {"", "\\", "1ABC", "ABCDE", "A..B", "pci0", "A-B"})
    EXPECT_NE(error_of([&] { aml::name_string(bad); }), "no error") << bad;
}

TEST(Aml, NamePackageBufferDeviceMethodScope) {
  EXPECT_EQ(aml::name("_UID", aml::integer(0)), bytes({0x08, '_', 'U', 'I', 'D', 0x00}));
  EXPECT_EQ(aml::package({aml::integer(5), aml::integer(0)}), bytes({0x12, 0x05, 0x02, 0x0a, 0x05, 0x00}));
  EXPECT_EQ(aml::package({}), bytes({0x12, 0x02, 0x00}));
  EXPECT_EQ(aml::buffer(bytes({1, 2, 3})), bytes({0x11, 0x06, 0x0a, 0x03, 1, 2, 3}));
  // Device: ExtOpPrefix + DeviceOp, PkgLength over the name (4) and the terms (6) = 11.
  EXPECT_EQ(aml::device("PCI0", {aml::name("_UID", aml::integer(0))}),
            bytes({0x5b, 0x82, 0x0b, 'P', 'C', 'I', '0', 0x08, '_', 'U', 'I', 'D', 0x00}));
  EXPECT_EQ(aml::method("_STA", 0, false, {aml::return_value(aml::integer(0x0f))}),
            bytes({0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f}));
  EXPECT_EQ(aml::method("_OSC", 4, true, {})[6], 0x0c) << "4 arguments | Serialized";
  EXPECT_EQ(aml::scope("\\_SB_", {}), bytes({0x10, 0x06, 0x5c, '_', 'S', 'B', '_'}));
  // A package big enough for a 2-byte PkgLength: 40 DWordConsts = 200 bytes + NumElements.
  std::vector<Bytes> many(40, aml::dword(0x01020304));
  const Bytes p = aml::package(many);
  ASSERT_EQ(p.size(), 1u + 2 + 1 + 200);
  EXPECT_EQ(p[1], 0x40 | ((203 & 0xf)));
  EXPECT_EQ(p[2], 203 >> 4);
  EXPECT_EQ(p[3], 40);
}

TEST(Aml, ResourceDescriptors) {
  aml::ResourceTemplate bus;
  bus.word_bus_number(0, 0xff);
  EXPECT_EQ(bus.descriptors(), bytes({0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00,
                                      0x00, 0x00, 0x01}));
  aml::ResourceTemplate io;
  io.word_io(0, 0x0cf7);
  EXPECT_EQ(io.descriptors(), bytes({0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x00, 0xf7, 0x0c, 0x00,
                                     0x00, 0xf8, 0x0c}));
  aml::ResourceTemplate mem;
  mem.dword_memory(0xc0000000, 0xcfffffff, false);
  EXPECT_EQ(mem.descriptors(), bytes({0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff,
                                      0xff, 0xff, 0xcf, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x10}));
  aml::ResourceTemplate q;
  q.qword_memory(0x100000000, 0x1ffffffff, true);
  ASSERT_EQ(q.descriptors().size(), 46u);
  EXPECT_EQ(q.descriptors()[0], 0x8a);
  EXPECT_EQ(q.descriptors()[1], 43);
  EXPECT_EQ(q.descriptors()[5], 0x03) << "ReadWrite | Cacheable";
  EXPECT_EQ(q.descriptors()[38], 0x00);  // length 0x100000000: bytes 38..45, byte 42 = 1
  EXPECT_EQ(q.descriptors()[42], 0x01);
  aml::ResourceTemplate fixed;
  fixed.memory32_fixed(0xe0000000, 0x100000, true).io(0xcf8, 0xcf8, 1, 8);
  EXPECT_EQ(fixed.descriptors(), bytes({0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00, 0x47,
                                        0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08}));
  aml::ResourceTemplate one;
  one.io(0xcf8, 0xcf8, 1, 8);
  EXPECT_EQ(one.to_buffer(), bytes({0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08, 0x79, 0x00}));
  EXPECT_NE(error_of([] { aml::ResourceTemplate().word_io(2, 1); }), "no error");
}

// ---- the PCI root in the tables

uint32_t u32(const Bytes& b, size_t off) {
  return b.at(off) | b.at(off + 1) << 8 | b.at(off + 2) << 16 | static_cast<uint32_t>(b.at(off + 3)) << 24;
}
uint64_t u64(const Bytes& b, size_t off) { return u32(b, off) | static_cast<uint64_t>(u32(b, off + 4)) << 32; }
uint8_t sum(const Bytes& b) {
  uint8_t s = 0;
  for (uint8_t x : b) s = static_cast<uint8_t>(s + x);
  return s;
}
Bytes cut(const Tables& t, uint64_t gpa) {
  const size_t off = gpa - t.base;
  return {t.image.begin() + static_cast<ptrdiff_t>(off), t.image.begin() + static_cast<ptrdiff_t>(off + u32(t.image, off + 4))};
}
bool contains(const Bytes& hay, const Bytes& needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

// vireo-vmm's layout (src/common/layout.h) with two virtio-pci devices on lines 5 and 6.
TableConfig vmm_like(uint32_t cpus = 2) {
  PciRoot p;
  p.ecam_base = 0xe0000000;
  p.ecam_size = 1 << 20;
  p.mem32_base = 0xc0000000;
  p.mem32_size = 0x10000000;
  p.io_base = 0xc000;
  p.io_size = 0x4000;
  p.intx = {{1, 0, 5}, {2, 0, 6}};
  return {.cpus = cpus, .pci = p};
}

TEST(AcpiPciTables, McfgListedAndDescribesEcam) {
  const Tables t = build_tables(vmm_like());
  ASSERT_NE(t.mcfg, 0u);
  const Bytes m = cut(t, t.mcfg);
  EXPECT_EQ(std::string(m.begin(), m.begin() + 4), "MCFG");
  ASSERT_EQ(m.size(), 60u);
  EXPECT_EQ(sum(m), 0);
  EXPECT_EQ(u64(m, 44), 0xe0000000u) << "base";
  EXPECT_EQ(m[52] | m[53] << 8, 0) << "segment";
  EXPECT_EQ(m[54], 0) << "start bus";
  EXPECT_EQ(m[55], 0) << "end bus: 1 MiB of ECAM = bus 0 only";
  const Bytes x = cut(t, t.xsdt);
  ASSERT_EQ(x.size(), 36u + 3 * 8);
  EXPECT_EQ(u64(x, 52), t.mcfg);
  const Bytes r = cut(t, t.rsdt);
  ASSERT_EQ(r.size(), 36u + 3 * 4);
  EXPECT_EQ(u32(r, 44), t.mcfg);
  EXPECT_EQ(sum(x), 0);
  EXPECT_EQ(sum(r), 0);
  // 16 MiB of ECAM: buses 0-15 in the MCFG and in _CRS.
  TableConfig big = vmm_like();
  big.pci->ecam_size = 16 << 20;
  const Tables b = build_tables(big);
  EXPECT_EQ(cut(b, b.mcfg)[55], 15);
  aml::ResourceTemplate bus;
  bus.word_bus_number(0, 15);
  EXPECT_TRUE(contains(cut(b, b.dsdt), bus.descriptors()));
}

TEST(AcpiPciTables, DsdtHoldsPci0WithWindowsAndPrt) {
  const Tables t = build_tables(vmm_like());
  const Bytes d = cut(t, t.dsdt);
  EXPECT_EQ(sum(d), 0);
  EXPECT_TRUE(contains(d, bytes({0x5b, 0x82})));
  EXPECT_TRUE(contains(d, bytes({'P', 'C', 'I', '0', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x08})));
  EXPECT_TRUE(contains(d, bytes({0x08, '_', 'C', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03})));
  for (const char* n : {"_ADR", "_UID", "_SEG", "_BBN"})
    EXPECT_TRUE(contains(d, bytes({0x08, n[0], n[1], n[2], n[3], 0x00}))) << n;
  aml::ResourceTemplate windows;
  windows.word_bus_number(0, 0).io(0xcf8, 0xcf8, 1, 8).word_io(0, 0xcf7).word_io(0xc000, 0xffff)
      .dword_memory(0xc0000000, 0xcfffffff, false);
  EXPECT_TRUE(contains(d, windows.descriptors())) << "_CRS: bus, CF8, I/O, I/O BAR and memory BAR windows in order";
  // _PRT entries: Package (4) { 0x0001ffff, 0 (INTA), 0, 5 } and slot 2 on line 6.
  EXPECT_TRUE(contains(d, bytes({0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x05})));
  EXPECT_TRUE(contains(d, bytes({0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x06})));
  // The motherboard resource device reserving the ECAM.
  EXPECT_TRUE(contains(d, bytes({'M', 'R', 'E', 'S', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x02})));
  EXPECT_TRUE(contains(d, bytes({0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00})));
  // \_S5 is still there, at the end.
  const Bytes s5 = s5_aml();
  EXPECT_TRUE(std::equal(s5.rbegin(), s5.rend(), d.rbegin()));
}

TEST(AcpiPciTables, BadPciLayoutsAreRefused) {
  auto err = [](auto change) {
    TableConfig c = vmm_like();
    change(*c.pci);
    return error_of([&] { build_tables(c); });
  };
  EXPECT_EQ(err([](PciRoot& p) { p.ecam_size = 0x80000; }),
            "acpi: ECAM 0xe0000000+0x80000 is not 1-256 MiB, 1 MiB aligned, below 4 GiB");
  EXPECT_EQ(err([](PciRoot& p) { p.ecam_base = 0xfff00000, p.ecam_size = 2 << 20; }),
            "acpi: ECAM 0xfff00000+0x200000 is not 1-256 MiB, 1 MiB aligned, below 4 GiB");
  EXPECT_EQ(err([](PciRoot& p) { p.mem32_size = 0; }),
            "acpi: PCI memory window 0xc0000000+0x0 is empty or not below 4 GiB");
  EXPECT_EQ(err([](PciRoot& p) { p.io_base = 0x800; }),
            "acpi: PCI I/O window 0x800+0x4000 is empty or not in 0xd00-0xffff");
  EXPECT_EQ(err([](PciRoot& p) { p.intx.push_back({32, 0, 5}); }),
            "acpi: PCI interrupt slot 32 pin 0 gsi 5 out of range (slots 1-31, pins 0-3, IOAPIC GSIs 0-23)");
  EXPECT_EQ(err([](PciRoot& p) { p.intx.push_back({3, 0, 24}); }),
            "acpi: PCI interrupt slot 3 pin 0 gsi 24 out of range (slots 1-31, pins 0-3, IOAPIC GSIs 0-23)");
  // 31 devices with a line each still fit below 1 MiB with 254 vCPUs.
  TableConfig full = vmm_like(254);
  full.pci->intx.clear();
  for (uint8_t s = 1; s <= 31; s++) full.pci->intx.push_back({s, 0, static_cast<uint32_t>(16 + s % 8)});
  EXPECT_EQ(error_of([&] { build_tables(full); }), "no error");
}

#ifdef VIREO_IASL
// ACPICA's disassembler parses our AML independently: no errors, and the objects come out as ASL.
std::string disassemble(const Bytes& table, const std::string& stem) {
  const auto dir = std::filesystem::temp_directory_path() / ("vireo-aml-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto dat = dir / (stem + ".dat");
  std::ofstream(dat, std::ios::binary).write(reinterpret_cast<const char*>(table.data()),
                                             static_cast<std::streamsize>(table.size()));
  const std::string cmd = std::string(VIREO_IASL) + " -d " + dat.string() + " 2>&1";
  std::string log;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  for (size_t n; p && (n = fread(buf, 1, sizeof buf, p)) > 0;) log.append(buf, n);
  const int rc = p ? pclose(p) : -1;
  std::ifstream in(dir / (stem + ".dsl"));
  std::string dsl((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  EXPECT_EQ(rc, 0) << log;
  EXPECT_EQ(log.find("Error"), std::string::npos) << log;
  return dsl;
}

TEST(AcpiPciTables, IaslDisassemblesDsdtAndMcfg) {
  const Tables t = build_tables(vmm_like());
  const std::string dsl = disassemble(cut(t, t.dsdt), "dsdt");
  for (const char* want : {
           "Scope (\\_SB)",
           "Device (PCI0)",
           "Name (_HID, EisaId (\"PNP0A08\")",
           "Name (_CID, EisaId (\"PNP0A03\")",
           "Name (_SEG, Zero)",
           "Name (_BBN, Zero)",
           "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
           "IO (Decode16,\n                    0x0CF8,",
           "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,",
           "0x0CF7,             // Range Maximum",
           "0xC000,             // Range Minimum",
           "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
           "0xCFFFFFFF,         // Range Maximum",
           "Name (_PRT, Package (0x02)",
           "0x0001FFFF,",
           "0x0002FFFF,",
           "Device (MRES)",
           "Name (_HID, EisaId (\"PNP0C02\")",
           "Memory32Fixed (ReadWrite,\n                    0xE0000000,",
           "Name (_S5, Package (0x04)",
       })
    EXPECT_NE(dsl.find(want), std::string::npos) << "missing: " << want << "\n" << dsl;
  const std::string mcfg = disassemble(cut(t, t.mcfg), "mcfg");
  EXPECT_NE(mcfg.find("Base Address : 00000000E0000000"), std::string::npos) << mcfg;
  EXPECT_NE(mcfg.find("End Bus Number : 00"), std::string::npos) << mcfg;
}
#endif

}  // namespace
}  // namespace vireo::acpi
