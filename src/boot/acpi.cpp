// vireo/boot: minimal ACPI tables (ACPI 6.x, hardware-reduced): RSDP, XSDT, FADT, DSDT (only \_S5), MADT.
// Enough for a kernel without MP-table support (e.g. Debian's cloud kernel) to find the APs and the IOAPIC,
// and for an ACPI S5 power-off through the sleep control register.
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
  // Generic address structure: system I/O, 8-bit.
  void gas_io8(uint64_t port) { u8(1), u8(8), u8(0), u8(1), u64(port); }
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
  f.u32(0);                       // 36 FIRMWARE_CTRL
  f.u32(static_cast<uint32_t>(dsdt));  // 40 DSDT
  f.zeros(109 - 44);              // 44..108: legacy fixed hardware, unused (hardware-reduced)
  f.u16(0x3);                     // 109 IAPC_BOOT_ARCH: legacy devices, 8042
  f.u8(0);                        // 111
  f.u32(1u << 20);                // 112 flags: HW_REDUCED_ACPI
  f.zeros(12);                    // 116 RESET_REG (not supported: resets go through the i8042)
  f.u8(0);                        // 128 RESET_VALUE
  f.u16(0);                       // 129 ARM_BOOT_ARCH
  f.u8(0);                        // 131 FADT minor version
  f.u64(0);                       // 132 X_FIRMWARE_CTRL
  f.u64(dsdt);                    // 140 X_DSDT
  f.zeros(244 - 148);             // 148..243 X_PM*/X_GPE* blocks: none
  f.gas_io8(kAcpiSleepPort);      // 244 SLEEP_CONTROL_REG
  f.gas_io8(kAcpiSleepPort);      // 256 SLEEP_STATUS_REG
  f.u64(0);                       // 268 hypervisor vendor identity
  auto fadt_b = finish(f);

  Buf m = header("APIC", 5);
  m.u32(0xfee00000);              // local APIC address
  m.u32(1);                       // PCAT_COMPAT: dual 8259s present
  for (uint32_t i = 0; i < cpus; i++) {  // processor local APIC: uid, APIC id, enabled
    m.u8(0), m.u8(8), m.u8(static_cast<uint8_t>(i)), m.u8(static_cast<uint8_t>(i)), m.u32(1);
  }
  m.u8(1), m.u8(12), m.u8(static_cast<uint8_t>(cpus)), m.u8(0), m.u32(0xfec00000), m.u32(0);  // IOAPIC, GSI base 0
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
