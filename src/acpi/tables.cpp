// vireo/acpi: table builder. Layouts from the ACPI 6.x specification (5.2.5 RSDP, 5.2.6 SDT header, 5.2.7/8
// RSDT/XSDT, 5.2.9 FADT, 5.2.10 FACS, 5.2.12 MADT, 20.x AML encoding, 6.1/6.2/6.4 device objects and
// resources) and the PCI Firmware Specification 3.x (4.1.2 MCFG).
#include "acpi/tables.h"

#include <algorithm>
#include <cstring>

#include "acpi/aml.h"
#include "common/error.h"

namespace vireo::acpi {

namespace {

constexpr char kOemId[] = "VIREO ";      // 6 bytes
constexpr char kOemTableId[] = "VIREOVMM";  // 8 bytes
constexpr char kCreatorId[] = "VIRO";    // 4 bytes

constexpr size_t kHeaderLen = 36;
constexpr size_t kFadtLen = 276;  // revision 6
constexpr size_t kFacsLen = 64;

// Little-endian byte writer.
struct Buf {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { u8(static_cast<uint8_t>(v)), u8(static_cast<uint8_t>(v >> 8)); }
  void u32(uint32_t v) { u16(static_cast<uint16_t>(v)), u16(static_cast<uint16_t>(v >> 16)); }
  void u64(uint64_t v) { u32(static_cast<uint32_t>(v)), u32(static_cast<uint32_t>(v >> 32)); }
  void str(const char* s, size_t n) {
    for (size_t i = 0; i < n; i++) u8(static_cast<uint8_t>(s[i]));
  }
  void zeros(size_t n) { b.insert(b.end(), n, 0); }
  void bytes(std::span<const uint8_t> s) { b.insert(b.end(), s.begin(), s.end()); }
  // Generic Address Structure (5.2.3.2): space 1 = system I/O; access size 1 byte, 2 word, 3 dword.
  void gas_io(uint16_t port, uint8_t bit_width, uint8_t access_size) {
    if (port == 0) return zeros(12);
    u8(1), u8(bit_width), u8(0), u8(access_size), u64(port);
  }
};

// The standard 36-byte header; length and checksum are filled in by finish().
Buf sdt_header(const char* sig, uint8_t revision) {
  Buf h;
  h.str(sig, 4);
  h.u32(0);         // length
  h.u8(revision);
  h.u8(0);          // checksum
  h.str(kOemId, 6);
  h.str(kOemTableId, 8);
  h.u32(1);         // OEM revision
  h.str(kCreatorId, 4);
  h.u32(1);         // creator revision
  return h;
}

std::vector<uint8_t> finish(Buf t) {
  const auto len = static_cast<uint32_t>(t.b.size());
  std::memcpy(&t.b[4], &len, 4);
  t.b[9] = static_cast<uint8_t>(0x100 - checksum(t.b));
  return std::move(t.b);
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

std::vector<uint8_t> build_facs() {
  Buf f;
  f.str("FACS", 4);
  f.u32(kFacsLen);
  f.u32(0);   // hardware signature
  f.u32(0);   // firmware waking vector
  f.u32(0);   // global lock
  f.u32(0);   // flags
  f.u64(0);   // X firmware waking vector
  f.u8(2);    // version
  f.zeros(3);
  f.u32(0);   // OSPM flags
  f.zeros(24);
  return std::move(f.b);
}

std::vector<uint8_t> build_fadt(const TableConfig& cfg, uint64_t facs, uint64_t dsdt) {
  const uint16_t evt = cfg.pm_base + kPm1EvtOffset, cnt = cfg.pm_base + kPm1CntOffset,
                 tmr = cfg.pm_base + kPmTmrOffset, rst = cfg.pm_base + kResetOffset;
  Buf f = sdt_header("FACP", 6);
  f.u32(static_cast<uint32_t>(facs));  // 36 FIRMWARE_CTRL
  f.u32(static_cast<uint32_t>(dsdt));  // 40 DSDT
  f.u8(0);                             // 44 reserved (INT_MODEL in ACPI 1.0)
  f.u8(0);                             // 45 Preferred_PM_Profile: unspecified
  f.u16(kSciIrq);                      // 46 SCI_INT
  f.u32(0);                            // 48 SMI_CMD: none, the platform is always in ACPI mode
  f.u8(0), f.u8(0), f.u8(0), f.u8(0);  // 52 ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
  f.u32(evt);                          // 56 PM1a_EVT_BLK
  f.u32(0);                            // 60 PM1b_EVT_BLK
  f.u32(cnt);                          // 64 PM1a_CNT_BLK
  f.u32(0);                            // 68 PM1b_CNT_BLK
  f.u32(0);                            // 72 PM2_CNT_BLK
  f.u32(tmr);                          // 76 PM_TMR_BLK
  f.u32(0);                            // 80 GPE0_BLK
  f.u32(0);                            // 84 GPE1_BLK
  f.u8(kPm1EvtLen);                    // 88 PM1_EVT_LEN
  f.u8(kPm1CntLen);                    // 89 PM1_CNT_LEN
  f.u8(0);                             // 90 PM2_CNT_LEN
  f.u8(kPmTmrLen);                     // 91 PM_TMR_LEN
  f.u8(0), f.u8(0), f.u8(0);           // 92 GPE0_BLK_LEN, GPE1_BLK_LEN, GPE1_BASE
  f.u8(0);                             // 95 CST_CNT
  f.u16(101);                          // 96 P_LVL2_LAT > 100: no C2
  f.u16(1001);                         // 98 P_LVL3_LAT > 1000: no C3
  f.u16(0), f.u16(0);                  // 100 FLUSH_SIZE, FLUSH_STRIDE
  f.u8(0), f.u8(0);                    // 104 DUTY_OFFSET, DUTY_WIDTH
  f.u8(0), f.u8(0);                    // 106 DAY_ALRM, MON_ALRM
  f.u8(0x32);                          // 108 CENTURY: CMOS register 0x32
  f.u16(kBootArchLegacyDevices | kBootArch8042 | kBootArchNoVga);  // 109 IAPC_BOOT_ARCH
  f.u8(0);                             // 111 reserved
  f.u32(kFadtFlags);                   // 112 Flags
  f.gas_io(rst, 8, 1);                 // 116 RESET_REG: one byte in I/O space
  f.u8(kResetValue);                   // 128 RESET_VALUE
  f.u16(0);                            // 129 ARM_BOOT_ARCH
  f.u8(0);                             // 131 FADT minor version (6.0)
  f.u64(facs);                         // 132 X_FIRMWARE_CTRL
  f.u64(dsdt);                         // 140 X_DSDT
  f.gas_io(evt, 32, 2);                // 148 X_PM1a_EVT_BLK (status + enable: 2 x 16 bits)
  f.gas_io(0, 0, 0);                   // 160 X_PM1b_EVT_BLK
  f.gas_io(cnt, 16, 2);                // 172 X_PM1a_CNT_BLK
  f.gas_io(0, 0, 0);                   // 184 X_PM1b_CNT_BLK
  f.gas_io(0, 0, 0);                   // 196 X_PM2_CNT_BLK
  f.gas_io(tmr, 32, 3);                // 208 X_PM_TMR_BLK
  f.gas_io(0, 0, 0);                   // 220 X_GPE0_BLK
  f.gas_io(0, 0, 0);                   // 232 X_GPE1_BLK
  f.gas_io(0, 0, 0);                   // 244 SLEEP_CONTROL_REG (hardware-reduced only)
  f.gas_io(0, 0, 0);                   // 256 SLEEP_STATUS_REG
  f.str("VIREOVMM", 8);                // 268 hypervisor vendor identity
  auto out = finish(std::move(f));
  if (out.size() != kFadtLen) fail("acpi: internal error: FADT is {} bytes", out.size());
  return out;
}

std::vector<uint8_t> build_dsdt(const TableConfig& cfg) {
  Buf d = sdt_header("DSDT", 2);  // revision 2: 64-bit AML integers
  d.bytes(dsdt_aml(cfg));
  return finish(std::move(d));
}

// MCFG: header, 8 reserved bytes, one 16-byte allocation (ECAM base, segment 0, first and last bus).
std::vector<uint8_t> build_mcfg(const PciRoot& pci) {
  Buf m = sdt_header("MCFG", 1);
  m.zeros(8);
  m.u64(pci.ecam_base);
  m.u16(0);
  m.u8(0);
  m.u8(pci.end_bus());
  m.u32(0);
  return finish(std::move(m));
}

// \_SB.PCI0: the host bridge as Linux's acpi_pci_root driver and QEMU's q35 DSDT present it. _HID PNP0A08
// (PCI Express root: config space through the MCFG's ECAM) with _CID PNP0A03 (plain PCI) for OSes that only
// know that; _SEG/_BBN/_UID 0. _CRS lists what the bridge forwards to bus 0: the buses the ECAM covers, the
// CF8/CFC ports it decodes itself, all I/O below them (the ISA/platform ports, as on a PC), the I/O BAR
// window, and the memory BAR window(s) the VMM's allocator places BARs in; an OS that finds a BAR outside
// these would move it. No _OSC: Linux then keeps native PCIe hot-plug/AER/PME off, which this bus lacks.
aml::Bytes pci0_aml(const PciRoot& pci) {
  namespace a = aml;
  a::ResourceTemplate crs;
  crs.word_bus_number(0, pci.end_bus());
  crs.io(0x0cf8, 0x0cf8, 1, 8);
  crs.word_io(0x0000, 0x0cf7);
  crs.word_io(static_cast<uint16_t>(pci.io_base), static_cast<uint16_t>(pci.io_base + pci.io_size - 1));
  crs.dword_memory(static_cast<uint32_t>(pci.mem32_base), static_cast<uint32_t>(pci.mem32_base + pci.mem32_size - 1),
                   false);
  if (pci.mem64_size) crs.qword_memory(pci.mem64_base, pci.mem64_base + pci.mem64_size - 1, false);

  // _PRT (6.2.13): { Address (device << 16 | 0xffff: any function), Pin (0 = INTA), Source (0: the next field is
  // a GSI, no link device), Source Index (the GSI) } per pin in use. vireo gives each PCI device its own
  // IOAPIC line (src/virtio/virtio_pci.cpp: allocate_irq_line), so the table lists exactly those.
  std::vector<a::Bytes> prt;
  for (const auto& e : pci.intx)
    prt.push_back(a::package({a::dword(static_cast<uint32_t>(e.slot) << 16 | 0xffff), a::integer(e.pin),
                              a::integer(0), a::integer(e.gsi)}));
  return a::device("PCI0", {a::name("_HID", a::eisa_id("PNP0A08")), a::name("_CID", a::eisa_id("PNP0A03")),
                            a::name("_ADR", a::integer(0)), a::name("_UID", a::integer(0)),
                            a::name("_SEG", a::integer(0)), a::name("_BBN", a::integer(0)),
                            a::name("_CRS", crs.to_buffer()), a::name("_PRT", a::package(prt))});
}

// \_SB.MRES: a motherboard resource device (PNP0C02) claiming the ECAM range. Linux uses the MCFG only if its
// region is reserved by firmware: in the e820 map (src/boot does that too) or, checked later, in the _CRS of
// a PNP0C01/PNP0C02 device ("PCI: MMCONFIG at ... reserved as ACPI motherboard resource").
aml::Bytes mres_aml(const PciRoot& pci) {
  namespace a = aml;
  a::ResourceTemplate crs;
  crs.memory32_fixed(static_cast<uint32_t>(pci.ecam_base), static_cast<uint32_t>(pci.ecam_size), true);
  return a::device("MRES", {a::name("_HID", a::eisa_id("PNP0C02")), a::name("_UID", a::integer(1)),
                            a::name("_CRS", crs.to_buffer())});
}

void check_pci(const PciRoot& p) {
  constexpr uint64_t kMiB = 1 << 20;
  if (p.ecam_size < kMiB || p.ecam_size > 256 * kMiB || p.ecam_size % kMiB || p.ecam_base % kMiB ||
      p.ecam_base + p.ecam_size > 0x100000000ull)
    fail("acpi: ECAM 0x{:x}+0x{:x} is not 1-256 MiB, 1 MiB aligned, below 4 GiB", p.ecam_base, p.ecam_size);
  if (p.mem32_size == 0 || p.mem32_base + p.mem32_size > 0x100000000ull)
    fail("acpi: PCI memory window 0x{:x}+0x{:x} is empty or not below 4 GiB", p.mem32_base, p.mem32_size);
  if (p.mem64_size && p.mem64_base + p.mem64_size < p.mem64_base)
    fail("acpi: PCI 64-bit window 0x{:x}+0x{:x} wraps", p.mem64_base, p.mem64_size);
  if (p.io_size == 0 || p.io_base <= 0xcff || p.io_base + p.io_size > 0x10000)
    fail("acpi: PCI I/O window 0x{:x}+0x{:x} is empty or not in 0xd00-0xffff", p.io_base, p.io_size);
  for (const auto& e : p.intx)
    if (e.slot == 0 || e.slot > 31 || e.pin > 3 || e.gsi >= 24)
      fail("acpi: PCI interrupt slot {} pin {} gsi {} out of range (slots 1-31, pins 0-3, IOAPIC GSIs 0-23)", e.slot,
           e.pin, e.gsi);
}

std::vector<uint8_t> build_madt(const TableConfig& cfg) {
  Buf m = sdt_header("APIC", 5);
  m.u32(static_cast<uint32_t>(cfg.lapic_addr));  // local interrupt controller address
  m.u32(1);                                      // flags: PCAT_COMPAT (dual 8259s present)
  for (uint32_t i = 0; i < cfg.cpus; i++) {
    // Processor Local APIC: type 0, length 8, ACPI processor UID, APIC ID, flags (bit 0 enabled).
    m.u8(0), m.u8(8), m.u8(static_cast<uint8_t>(i)), m.u8(static_cast<uint8_t>(i)), m.u32(1);
  }
  // I/O APIC: type 1, length 12, id, reserved, address, global system interrupt base.
  m.u8(1), m.u8(12), m.u8(static_cast<uint8_t>(cfg.cpus)), m.u8(0);
  m.u32(static_cast<uint32_t>(cfg.ioapic_addr)), m.u32(0);
  // Interrupt source override (type 2, length 10, bus 0 = ISA, source IRQ, GSI, MPS INTI flags) for the SCI.
  // No override for IRQ 0: vireo-vmm's KVM routing sends ISA IRQ n to IOAPIC pin n (src/kvm), so the PIT is on
  // GSI 0 (unlike QEMU, which routes it to pin 2 and says so with an IRQ0 -> GSI2 override).
  m.u8(2), m.u8(10), m.u8(0), m.u8(static_cast<uint8_t>(kSciIrq)), m.u32(kSciIrq),
      m.u16(kMadtActiveHigh | kMadtLevel);                                   // SCI: level, active high
  // Local APIC NMI: type 4, length 6, all processors (0xff), flags conforming, LINT1.
  m.u8(4), m.u8(6), m.u8(0xff), m.u16(0), m.u8(1);
  return finish(std::move(m));
}

std::vector<uint8_t> build_sdt_list(const char* sig, uint8_t rev, std::span<const uint64_t> entries, int width) {
  Buf t = sdt_header(sig, rev);
  for (uint64_t e : entries) {
    if (width == 4) t.u32(static_cast<uint32_t>(e));
    else t.u64(e);
  }
  return finish(std::move(t));
}

}  // namespace

uint8_t checksum(std::span<const uint8_t> bytes) {
  uint8_t s = 0;
  for (uint8_t b : bytes) s = static_cast<uint8_t>(s + b);
  return s;
}

std::vector<uint8_t> s5_aml() {
  // Name (\_S5_, Package (4) { 5 (SLP_TYPa), 0 (SLP_TYPb), 0, 0 (reserved) }): 08 '_S5_' 12 07 04 0a 05 00 00 00.
  // Kept without the root prefix, as before: the DSDT's scope is the root anyway.
  return aml::name("_S5_", aml::package({aml::integer(kSlpTypS5), aml::integer(0), aml::integer(0), aml::integer(0)}));
}

std::vector<uint8_t> dsdt_aml(const TableConfig& cfg) {
  aml::Bytes out;
  if (cfg.pci) out = aml::scope("\\_SB_", {pci0_aml(*cfg.pci), mres_aml(*cfg.pci)});
  const auto s5 = s5_aml();
  out.insert(out.end(), s5.begin(), s5.end());
  return out;
}

Tables build_tables(const TableConfig& cfg) {
  if (cfg.cpus == 0 || cfg.cpus > 254) fail("acpi: {} vCPUs cannot be described (1-254 supported)", cfg.cpus);
  if (cfg.base % 16) fail("acpi: table base 0x{:x} is not 16-byte aligned", cfg.base);
  if (cfg.base > 0xffffffffull || cfg.limit > 0x100000000ull || cfg.limit <= cfg.base)
    fail("acpi: table range 0x{:x}-0x{:x} is empty or not inside the low 4 GiB", cfg.base, cfg.limit);
  if (cfg.pm_base == 0 || cfg.pm_base > 0xffff - kPmBlockLen + 1)
    fail("acpi: PM block at port 0x{:x} does not fit in I/O space", cfg.pm_base);
  if (cfg.pci) check_pci(*cfg.pci);

  Tables t;
  t.base = cfg.base;
  // Layout: RSDP (36 bytes), FACS (64-byte aligned), then 16-byte aligned DSDT, FADT, MADT, [MCFG,] XSDT, RSDT.
  uint64_t at = cfg.base;
  t.rsdp = at;
  at = align_up(at + 36, 64);
  t.facs = at;
  at += kFacsLen;
  const auto facs = build_facs();
  const auto dsdt = build_dsdt(cfg);
  t.dsdt = at;
  at = align_up(at + dsdt.size(), 16);
  t.fadt = at;
  const auto fadt = build_fadt(cfg, t.facs, t.dsdt);
  at = align_up(at + fadt.size(), 16);
  t.madt = at;
  const auto madt = build_madt(cfg);
  at = align_up(at + madt.size(), 16);
  std::vector<uint8_t> mcfg;
  std::vector<uint64_t> entries = {t.fadt, t.madt};
  if (cfg.pci) {
    t.mcfg = at;
    mcfg = build_mcfg(*cfg.pci);
    at = align_up(at + mcfg.size(), 16);
    entries.push_back(t.mcfg);
  }
  t.xsdt = at;
  const auto xsdt = build_sdt_list("XSDT", 1, entries, 8);
  at = align_up(at + xsdt.size(), 16);
  t.rsdt = at;
  const auto rsdt = build_sdt_list("RSDT", 1, entries, 4);
  at += rsdt.size();
  if (at > cfg.limit)
    fail("acpi: tables need 0x{:x}-0x{:x}, beyond the limit 0x{:x}", cfg.base, at, cfg.limit);

  Buf r;  // RSDP, revision 2 (ACPI 2.0+): 36 bytes
  r.str("RSD PTR ", 8);
  r.u8(0);                                   // 8: checksum of bytes 0-19
  r.str(kOemId, 6);                          // 9: OEMID
  r.u8(2);                                   // 15: revision
  r.u32(static_cast<uint32_t>(t.rsdt));      // 16: RSDT address
  r.u32(36);                                 // 20: length
  r.u64(t.xsdt);                             // 24: XSDT address
  r.u8(0);                                   // 32: extended checksum (all 36 bytes)
  r.zeros(3);
  r.b[8] = static_cast<uint8_t>(0x100 - checksum(std::span(r.b).first(20)));
  r.b[32] = static_cast<uint8_t>(0x100 - checksum(r.b));

  t.image.assign(at - cfg.base, 0);
  auto put = [&](uint64_t gpa, const std::vector<uint8_t>& bytes) {
    std::copy(bytes.begin(), bytes.end(), t.image.begin() + static_cast<ptrdiff_t>(gpa - cfg.base));
  };
  put(t.rsdp, r.b);
  put(t.facs, facs);
  put(t.dsdt, dsdt);
  put(t.fadt, fadt);
  put(t.madt, madt);
  if (t.mcfg) put(t.mcfg, mcfg);
  put(t.xsdt, xsdt);
  put(t.rsdt, rsdt);
  return t;
}

uint64_t write_tables(GuestMemory& mem, const TableConfig& cfg) {
  Tables t = build_tables(cfg);
  if (!mem.contains(cfg.base, cfg.limit - cfg.base))
    fail("acpi: table area 0x{:x}-0x{:x} is not guest RAM", cfg.base, cfg.limit);
  std::vector<uint8_t> area(cfg.limit - cfg.base, 0);
  std::copy(t.image.begin(), t.image.end(), area.begin());
  mem.write(cfg.base, area);
  return t.rsdp;
}

}  // namespace vireo::acpi
