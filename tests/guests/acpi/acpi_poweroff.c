/* acpi_poweroff: the ACPI test guest (docs/acpi.md).
 *
 * Finds the RSDP (scan of 0xe0000-0xfffff on 16-byte boundaries, checksum checked), walks the XSDT (or the RSDT
 * of a revision-0 RSDP) to the FADT and the MADT, reads the PM1a event/control blocks, SCI_INT and the reset
 * register from the FADT and SLP_TYPa of \_S5 from the DSDT's AML, and prints what it found:
 *
 *   acpi: rsdp=0x... rev=R xsdt=0x... rsdt=0x...
 *   acpi: madt lapics=N ioapic_id=I sci_override=G/0xFLAGS
 *   acpi: fadt rev=R pm1a_evt=0x... pm1a_cnt=0x... pm_tmr=0x... sci=N smi_cmd=0x... flags=0x... reset=0x.../0x..
 *   acpi: dsdt=0x... s5 slp_typ=T
 *
 * Then, by cmdline mode:
 *   (default) enables PWRBTN_EN, prints "acpi: waiting for the power button", polls PM1 status for PWRBTN_STS;
 *             on it prints "acpi: power button", acknowledges it (write 1 to clear), prints
 *             "acpi: entering S5" and writes SLP_TYPa|SLP_EN to PM1a_CNT. If it is still running a while later
 *             it prints "acpi: still running after S5" and exits EXIT_S5_RETURNED.
 *   ignore    the same, but on each press prints "acpi: power button ignored (N)", acknowledges it and keeps
 *             polling forever.
 *   reset     prints "acpi: resetting via the reset register", writes RESET_VALUE to RESET_REG; if it is still
 *             running a while later prints "acpi: still running after reset" and exits EXIT_RESET_RETURNED.
 * Any table problem prints "acpi: error: <what>" and exits EXIT_NO_ACPI.
 */
#include "runtime/guest.h"

#define EXIT_NO_ACPI 0x20     /* tables missing or malformed */
#define EXIT_S5_RETURNED 0x21 /* still running after writing SLP_EN with the S5 type */

#define PWRBTN_STS (1u << 8)
#define PWRBTN_EN (1u << 8)
#define SLP_EN (1u << 13)
#define SLP_TYP_SHIFT 10
#define SLP_TYP_MASK (7u << 10)

static inline const uint8_t* phys(uint64_t a) {
  __asm__("" : "+r"(a));
  return (const uint8_t*)a;
}
static uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t* p) { return rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t* p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static int sum_ok(const uint8_t* p, uint32_t n) {
  uint8_t s = 0;
  for (uint32_t i = 0; i < n; i++) s = (uint8_t)(s + p[i]);
  return s == 0;
}

__attribute__((noreturn)) static void die(const char* what) {
  printf("acpi: error: %s\n", what);
  debug_exit(EXIT_NO_ACPI);
}

/* A table at a physical address: signature, sane length (below 64 KiB, inside the low 4 GiB), checksum. */
static const uint8_t* sdt(uint64_t addr, const char* sig) {
  if (!addr || addr >= 0xfff00000ull) return 0;
  const uint8_t* t = phys(addr);
  if (memcmp(t, sig, 4)) return 0;
  uint32_t len = rd32(t + 4);
  if (len < 36 || len > 0x10000 || !sum_ok(t, len)) return 0;
  return t;
}

static const uint8_t* find_rsdp(void) {
  for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
    const uint8_t* p = phys(a);
    if (memcmp(p, "RSD PTR ", 8) || !sum_ok(p, 20)) continue;
    if (p[15] >= 2 && !sum_ok(p, 36)) continue;
    return p;
  }
  return 0;
}

/* Port of a FADT block: the X_ GAS (system I/O) when set, else the 32-bit field. */
static uint16_t fadt_port(const uint8_t* f, uint32_t flen, uint32_t x_off, uint32_t legacy_off) {
  if (x_off + 12 <= flen && f[x_off] == 1 && rd64(f + x_off + 4)) return (uint16_t)rd64(f + x_off + 4);
  return (uint16_t)rd32(f + legacy_off);
}

/* SLP_TYPa of \_S5 from AML: finds NameSeg "_S5_" followed by PackageOp, decodes PkgLength and the first
 * element (ZeroOp, OneOp, BytePrefix, WordPrefix). Returns -1 when absent/undecodable. */
static int s5_slp_typ(const uint8_t* dsdt) {
  uint32_t len = rd32(dsdt + 4);
  for (uint32_t i = 36; i + 4 + 4 <= len; i++) {
    const uint8_t* p = dsdt + i;
    if (memcmp(p, "_S5_", 4) || p[4] != 0x12) continue;
    const uint8_t* q = p + 5;
    uint32_t follow = q[0] >> 6; /* PkgLength: bytes that follow the lead byte */
    q += 1 + follow;
    if ((uint32_t)(q - dsdt) + 2 > len) return -1;
    if (q[0] < 1) return -1; /* NumElements */
    q++;
    switch (q[0]) {
      case 0x00: return 0;
      case 0x01: return 1;
      case 0x0a: return q[1];
      case 0x0b: return rd16(q + 1);
      default: return -1;
    }
  }
  return -1;
}

int guest_main(void) {
  const uint8_t* rsdp = find_rsdp();
  if (!rsdp) die("no RSDP in 0xe0000-0xfffff");
  uint64_t rsdt_addr = rd32(rsdp + 16), xsdt_addr = rsdp[15] >= 2 ? rd64(rsdp + 24) : 0;
  printf("acpi: rsdp=0x%lx rev=%u xsdt=0x%lx rsdt=0x%lx\n", (uint64_t)rsdp, rsdp[15], xsdt_addr, rsdt_addr);
  const uint8_t* root = xsdt_addr ? sdt(xsdt_addr, "XSDT") : sdt(rsdt_addr, "RSDT");
  if (!root) die("bad XSDT/RSDT");
  uint32_t esz = xsdt_addr ? 8 : 4, rlen = rd32(root + 4);
  const uint8_t *fadt = 0, *madt = 0;
  for (uint32_t at = 36; at + esz <= rlen; at += esz) {
    uint64_t a = esz == 8 ? rd64(root + at) : rd32(root + at);
    if (!fadt) fadt = sdt(a, "FACP");
    if (!madt) madt = sdt(a, "APIC");
  }
  if (!fadt) die("no FADT");

  if (madt) {
    uint32_t mlen = rd32(madt + 4), lapics = 0, sci_gsi = 0, sci_flags = 0;
    int ioapic_id = -1;
    for (uint32_t at = 44; at + 2 <= mlen && madt[at + 1] >= 2; at += madt[at + 1]) {
      const uint8_t* e = madt + at;
      if (e[0] == 0 && e[1] >= 8 && (rd32(e + 4) & 1)) lapics++;
      if (e[0] == 1 && e[1] >= 12 && ioapic_id < 0) ioapic_id = e[2];
      if (e[0] == 2 && e[1] >= 10 && e[3] == rd16(fadt + 46)) sci_gsi = rd32(e + 4), sci_flags = rd16(e + 8);
    }
    printf("acpi: madt lapics=%u ioapic_id=%d sci_override=%u/0x%x\n", lapics, ioapic_id, sci_gsi, sci_flags);
  } else {
    printf("acpi: madt none\n");
  }

  uint32_t flen = rd32(fadt + 4);
  if (flen < 129) die("FADT too short");
  uint16_t pm1a_evt = fadt_port(fadt, flen, 148, 56), pm1a_cnt = fadt_port(fadt, flen, 172, 64);
  uint16_t pm_tmr = fadt_port(fadt, flen, 208, 76);
  uint8_t evt_len = fadt[88];
  uint16_t sci = rd16(fadt + 46);
  uint32_t smi_cmd = rd32(fadt + 48), flags = rd32(fadt + 112);
  const uint8_t* rr = fadt + 116;
  uint64_t reset_addr = rd64(rr + 4);
  uint8_t reset_value = fadt[128];
  printf("acpi: fadt rev=%u pm1a_evt=0x%x pm1a_cnt=0x%x pm_tmr=0x%x sci=%u smi_cmd=0x%x flags=0x%x reset=0x%lx/0x%x\n",
         fadt[8], pm1a_evt, pm1a_cnt, pm_tmr, sci, smi_cmd, flags, reset_addr, reset_value);
  uint64_t dsdt_addr = (flen >= 148 && rd64(fadt + 140)) ? rd64(fadt + 140) : rd32(fadt + 40);
  const uint8_t* dsdt = sdt(dsdt_addr, "DSDT");
  if (!dsdt) die("no DSDT");
  int slp_typ = s5_slp_typ(dsdt);
  if (slp_typ < 0 || slp_typ > 7) die("no \\_S5 package in the DSDT");
  printf("acpi: dsdt=0x%lx s5 slp_typ=%d\n", dsdt_addr, slp_typ);
  if (!pm1a_evt || !pm1a_cnt || evt_len < 4) die("no PM1a blocks");

  if (cmdline_has("reset")) {
    if (!(flags & (1u << 10)) || rr[0] != 1 || !reset_addr || reset_addr > 0xffff) die("no I/O reset register");
    printf("acpi: resetting via the reset register\n");
    outb((uint16_t)reset_addr, reset_value);
    for (uint64_t t = rdtsc(); rdtsc() - t < (1ull << 32);) cpu_relax();
    printf("acpi: still running after reset\n");
    return EXIT_RESET_RETURNED;
  }

  const int ignore = cmdline_has("ignore");
  const uint16_t pm1a_en = (uint16_t)(pm1a_evt + evt_len / 2);
  outw(pm1a_en, (uint16_t)(inw(pm1a_en) | PWRBTN_EN));
  printf("acpi: waiting for the power button%s\n", ignore ? " (ignore mode)" : "");
  for (unsigned presses = 1;; presses++) {
    while (!(inw(pm1a_evt) & PWRBTN_STS)) /* poll every 2^20 TSC cycles: few exits */
      for (uint64_t t = rdtsc(); rdtsc() - t < (1ull << 20);) cpu_relax();
    outw(pm1a_evt, PWRBTN_STS); /* acknowledge: write 1 to clear */
    if (inw(pm1a_evt) & PWRBTN_STS) die("PWRBTN_STS did not clear");
    if (ignore) {
      printf("acpi: power button ignored (%u)\n", presses);
      continue;
    }
    printf("acpi: power button\n");
    break;
  }
  printf("acpi: entering S5\n");
  uint16_t cnt = inw(pm1a_cnt);
  outw(pm1a_cnt, (uint16_t)((cnt & ~SLP_TYP_MASK) | ((unsigned)slp_typ << SLP_TYP_SHIFT) | SLP_EN));
  for (uint64_t t = rdtsc(); rdtsc() - t < (1ull << 32);) cpu_relax();
  printf("acpi: still running after S5\n");
  return EXIT_S5_RETURNED;
}
