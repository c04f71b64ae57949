// vireo/boot: Intel MultiProcessor Specification 1.4 tables, so a real kernel finds the APs and the IOAPIC.
// Floating pointer at addr::kMpTable (0xf0000, inside the BIOS area Linux scans), config table right after.
#include <cstring>
#include <vector>

#include "boot/internal.h"
#include "common/error.h"

namespace vireo::boot {

namespace {
constexpr uint32_t kLapicBase = 0xfee00000, kIoapicBase = 0xfec00000;
constexpr uint8_t kLapicVersion = 0x14, kIoapicVersion = 0x11;

uint8_t checksum(const std::vector<uint8_t>& b, size_t from, size_t to) {
  uint8_t sum = 0;
  for (size_t i = from; i < to; i++) sum = static_cast<uint8_t>(sum + b[i]);
  return static_cast<uint8_t>(-sum);
}
void put8(std::vector<uint8_t>& b, uint8_t v) { b.push_back(v); }
void put16(std::vector<uint8_t>& b, uint16_t v) { put8(b, v & 0xff), put8(b, static_cast<uint8_t>(v >> 8)); }
void put32(std::vector<uint8_t>& b, uint32_t v) { put16(b, v & 0xffff), put16(b, static_cast<uint16_t>(v >> 16)); }
void puts(std::vector<uint8_t>& b, const char* s, size_t n) {
  for (size_t i = 0; i < n; i++) b.push_back(static_cast<uint8_t>(s[i]));
}
}  // namespace

void write_mptable(GuestMemory& mem, uint32_t cpus) {
  if (cpus == 0 || cpus > 254) fail("MP table: {} vCPUs cannot be described (1-254 supported)", cpus);
  const uint64_t table = addr::kMpTable + 16;
  const uint8_t ioapic_id = static_cast<uint8_t>(cpus);

  std::vector<uint8_t> c;  // configuration table
  puts(c, "PCMP", 4);
  put16(c, 0);  // base table length, patched below
  put8(c, 4);   // spec revision 1.4
  put8(c, 0);   // checksum, patched below
  puts(c, "VIREO   ", 8);
  puts(c, "VIREO-VMM   ", 12);
  put32(c, 0);  // OEM table pointer
  put16(c, 0);  // OEM table size
  put16(c, 0);  // entry count, patched below
  put32(c, kLapicBase);
  put16(c, 0);  // extended table length
  put8(c, 0);   // extended table checksum
  put8(c, 0);
  uint16_t entries = 0;
  for (uint32_t i = 0; i < cpus; i++) {  // processor entries
    put8(c, 0);
    put8(c, static_cast<uint8_t>(i));                   // local APIC id
    put8(c, kLapicVersion);
    put8(c, static_cast<uint8_t>(1 | (i == 0 ? 2 : 0)));  // EN, BP
    put32(c, 0x600);                                     // signature: family 6
    put32(c, 0x201);                                     // features: FPU, APIC
    put32(c, 0), put32(c, 0);
    entries++;
  }
  put8(c, 1), put8(c, 0), puts(c, "ISA   ", 6), entries++;             // bus 0: ISA
  put8(c, 2), put8(c, ioapic_id), put8(c, kIoapicVersion), put8(c, 1);  // IOAPIC, enabled
  put32(c, kIoapicBase), entries++;
  // ISA IRQs 0-15 (but 2, the 8259 cascade) on the IOAPIC pin of the same number: KVM's default GSI routing
  // (the in-kernel PIT raises GSI 0 -> IOAPIC pin 0).
  for (uint8_t irq = 0; irq < 16; irq++) {
    if (irq == 2) continue;
    put8(c, 3), put8(c, 0), put16(c, 0), put8(c, 0), put8(c, irq), put8(c, ioapic_id), put8(c, irq), entries++;
  }
  // local interrupts: LINT0 ExtINT, LINT1 NMI, to all local APICs
  put8(c, 4), put8(c, 3), put16(c, 0), put8(c, 0), put8(c, 0), put8(c, 0xff), put8(c, 0), entries++;
  put8(c, 4), put8(c, 1), put16(c, 0), put8(c, 0), put8(c, 0), put8(c, 0xff), put8(c, 1), entries++;
  uint16_t len = static_cast<uint16_t>(c.size());
  std::memcpy(&c[4], &len, 2);
  std::memcpy(&c[34], &entries, 2);
  c[7] = checksum(c, 0, c.size());
  if (table + c.size() > addr::kBootDataEnd) fail("MP table: too large");

  std::vector<uint8_t> fp;  // floating pointer structure, 16 bytes
  puts(fp, "_MP_", 4);
  put32(fp, static_cast<uint32_t>(table));
  put8(fp, 1);  // length in 16-byte units
  put8(fp, 4);  // spec revision
  put8(fp, 0);  // checksum
  put8(fp, 0);  // feature 1: 0 = a configuration table is present
  put8(fp, 0), put8(fp, 0), put8(fp, 0), put8(fp, 0);
  fp[10] = checksum(fp, 0, fp.size());

  mem.write(addr::kMpTable, fp);
  mem.write(table, c);
}

}  // namespace vireo::boot
