// vireo/boot: minimal ACPI tables (ACPI 6.x): RSDP, XSDT, FADT, DSDT (only \_S5), MADT. Enough for a kernel
// without MP-table support (e.g. Debian's cloud kernel) to find the APs and the IOAPIC, with a PC-style fixed
// hardware block (PM1a event/control at I/O 0x600/0x604, SCI on IRQ 9) so the power button and S5 power-off
// work the way they do on QEMU's PC machines. Not hardware-reduced on purpose: Linux then keeps the legacy
// PIC/PIT (timer fallback) and the identity ISA IRQ mappings that the i8042, RTC and serial drivers need.
#include <cstring>
#include <string>
#include <vector>

#include "boot/internal.h"
#include "common/error.h"

namespace vireo::boot {

namespace {

struct Buf {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { u8(v & 0xff), u8(static_cast<uint8_t>(v >> 8)); }
  void u32(uint32_t v) { u16(v & 0xffff), u16(static_cast<uint16_t>(v >> 16)); }
  void u64(uint64_t v) { u32(static_cast<uint32_t>(v)), u32(static_cast<uint32_t>(v >> 32)); }
  void str(const char* s, size_t n) {
    for (size_t i = 0; i < n; i++) u8(static_cast<uint8_t>(s[i]));
  }
  void zeros(size_t n) { b.insert(b.end(), n, 0); }
  // Generic address structure: system I/O, `bits` wide (access size 1 = byte, 2 = word, 3 = dword).
  void gas_io(uint64_t port, uint8_t bits) { u8(1), u8(bits), u8(0), u8(bits == 8 ? 1 : bits == 16 ? 2 : 3), u64(port); }
};

uint8_t sum(const std::vector<uint8_t>& b, size_t from, size_t to) {
  uint8_t s = 0;
  for (size_t i = from; i < to; i++) s = static_cast<uint8_t>(s + b[i]);
  return s;
}

// Standard 36-byte SDT header; length and checksum are patched by finish().
Buf header(const char* sig, uint8_t rev) {
  Buf h;
  h.str(sig, 4);
  h.u32(0);
  h.u8(rev);
  h.u8(0);
  h.str("VIREO ", 6);
  h.str("VIREOVMM", 8);
  h.u32(1);
  h.str("VIRO", 4);
  h.u32(1);
  return h;
}
std::vector<uint8_t> finish(Buf t) {
  uint32_t len = static_cast<uint32_t>(t.b.size());
  std::memcpy(&t.b[4], &len, 4);
  t.b[9] = static_cast<uint8_t>(-sum(t.b, 0, t.b.size()));
  return t.b;
}

}  // namespace

uint64_t write_acpi(GuestMemory& mem, uint32_t cpus) {
  if (cpus == 0 || cpus > 254) fail("ACPI: {} vCPUs cannot be described (1-254 supported)", cpus);
  const uint64_t rsdp = addr::kAcpi, xsdt = rsdp + 0x40, fadt = xsdt + 0x40, dsdt = fadt + 0x120,
                 madt = dsdt + 0x40;

  // DSDT: Name (_S5, Package (4) { 5, 0, 0, 0 })  -- SLP_TYP 5 for S5 (power off)
  Buf d = header("DSDT", 2);
  const uint8_t s5[] = {0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00};
  d.b.insert(d.b.end(), std::begin(s5), std::end(s5));
  auto dsdt_b = finish(d);

  Buf f = header("FACP", 6);
  f.u32(0);                            // 36 FIRMWARE_CTRL (no FACS)
  f.u32(static_cast<uint32_t>(dsdt));  // 40 DSDT
  f.u8(0);                             // 44 reserved
  f.u8(0);                             // 45 preferred PM profile: unspecified
  f.u16(kAcpiSciIrq);                  // 46 SCI_INT
  f.u32(0);                            // 48 SMI_CMD: 0 = always in ACPI mode
  f.u8(0), f.u8(0), f.u8(0), f.u8(0);  // 52 ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
  f.u32(kAcpiPm1aEvt);                 // 56 PM1a_EVT_BLK
  f.u32(0);                            // 60 PM1b_EVT_BLK
  f.u32(kAcpiPm1aCnt);                 // 64 PM1a_CNT_BLK
  f.u32(0), f.u32(0), f.u32(0);        // 68 PM1b_CNT, 72 PM2_CNT, 76 PM_TMR (none)
  f.u32(0), f.u32(0);                  // 80 GPE0_BLK, 84 GPE1_BLK
  f.u8(4), f.u8(2), f.u8(0), f.u8(0);  // 88 PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN
  f.u8(0), f.u8(0), f.u8(0), f.u8(0);  // 92 GPE0_BLK_LEN, GPE1_BLK_LEN, GPE1_BASE, CST_CNT
  f.u16(0xfff), f.u16(0xfff);          // 96 P_LVL2_LAT, P_LVL3_LAT: C2/C3 not supported
  f.u16(0), f.u16(0);                  // 100 FLUSH_SIZE, FLUSH_STRIDE
  f.u8(0), f.u8(0);                    // 104 DUTY_OFFSET, DUTY_WIDTH
  f.u8(0), f.u8(0), f.u8(0x32);        // 106 DAY_ALRM, MON_ALRM, CENTURY (CMOS 0x32)
  f.u16(0x3);                          // 109 IAPC_BOOT_ARCH: legacy devices, 8042
  f.u8(0);                             // 111
  f.u32((1u << 0) | (1u << 5));        // 112 flags: WBINVD; SLP_BUTTON (none). Fixed power button present.
  f.zeros(12);                         // 116 RESET_REG (not supported: resets go through the i8042)
  f.u8(0);                             // 128 RESET_VALUE
  f.u16(0);                            // 129 ARM_BOOT_ARCH
  f.u8(0);                             // 131 FADT minor version
  f.u64(0);                            // 132 X_FIRMWARE_CTRL
  f.u64(dsdt);                         // 140 X_DSDT
  f.gas_io(kAcpiPm1aEvt, 32);          // 148 X_PM1a_EVT_BLK
  f.zeros(12);                         // 160 X_PM1b_EVT_BLK
  f.gas_io(kAcpiPm1aCnt, 16);          // 172 X_PM1a_CNT_BLK
  f.zeros(244 - 184);                  // 184..243 X_PM1b_CNT, X_PM2_CNT, X_PM_TMR, X_GPE0, X_GPE1: none
  f.zeros(24);                         // 244 SLEEP_CONTROL_REG, 256 SLEEP_STATUS_REG (hardware-reduced only)
  f.u64(0);                            // 268 hypervisor vendor identity
  auto fadt_b = finish(f);

  Buf m = header("APIC", 5);
  m.u32(0xfee00000);              // local APIC address
  m.u32(1);                       // PCAT_COMPAT: dual 8259s present
  for (uint32_t i = 0; i < cpus; i++) {  // processor local APIC: uid, APIC id, enabled
    m.u8(0), m.u8(8), m.u8(static_cast<uint8_t>(i)), m.u8(static_cast<uint8_t>(i)), m.u32(1);
  }
  m.u8(1), m.u8(12), m.u8(static_cast<uint8_t>(cpus)), m.u8(0), m.u32(0xfec00000), m.u32(0);  // IOAPIC, GSI base 0
  // Interrupt source override: the SCI (ISA IRQ 9) on GSI 9, active high, level-triggered.
  m.u8(2), m.u8(10), m.u8(0), m.u8(static_cast<uint8_t>(kAcpiSciIrq)), m.u32(kAcpiSciIrq), m.u16(0x000d);
  m.u8(4), m.u8(6), m.u8(0xff), m.u16(0), m.u8(1);  // local APIC NMI on LINT1 of every processor
  auto madt_b = finish(m);

  Buf x = header("XSDT", 1);
  x.u64(fadt);
  x.u64(madt);
  auto xsdt_b = finish(x);

  Buf r;  // RSDP, revision 2 (36 bytes)
  r.str("RSD PTR ", 8);
  r.u8(0);  // checksum of the first 20 bytes
  r.str("VIREO ", 6);
  r.u8(2);
  r.u32(0);  // RSDT: none (XSDT only)
  r.u32(36);
  r.u64(xsdt);
  r.u8(0);  // extended checksum
  r.zeros(3);
  r.b[8] = static_cast<uint8_t>(-sum(r.b, 0, 20));
  r.b[32] = static_cast<uint8_t>(-sum(r.b, 0, 36));

  if (xsdt_b.size() > 0x40 || fadt_b.size() > 0x120 || dsdt_b.size() > 0x40 ||
      madt + madt_b.size() > addr::kBootDataEnd)
    fail("ACPI: tables do not fit");
  mem.write(rsdp, r.b);
  mem.write(xsdt, xsdt_b);
  mem.write(fadt, fadt_b);
  mem.write(dsdt, dsdt_b);
  mem.write(madt, madt_b);
  return rsdp;
}

}  // namespace vireo::boot
