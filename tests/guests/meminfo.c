/* meminfo: prints the memory size and the e820 map from the boot page, then writes and reads back a pattern
 * at the start and the end of every RAM range below 4 GiB (above 1 MiB).
 * Lines: "meminfo: mem_size=0x... (N MiB) e820_count=K", "e820[i]: addr=0x%016lx size=0x%016lx type=T",
 *        "meminfo: ram_total=0x... (N MiB)", "meminfo: probe ok" | "meminfo: probe failed at 0x...". */
#include "runtime/guest.h"

extern char guest_stacks[];

static int probe(uint64_t a) {
  volatile uint64_t* p = (volatile uint64_t*)a;
  uint64_t old = *p, pat = 0x5a5aa5a5deadbeefull ^ a;
  *p = pat;
  int ok = *p == pat;
  *p = old;
  return ok;
}

int guest_main(void) {
  const struct vireo_boot_page* bp = boot_page();
  printf("meminfo: mem_size=0x%lx (%lu MiB) e820_count=%u\n", bp->mem_size, bp->mem_size >> 20, bp->e820_count);
  uint64_t total = 0;
  int ok = 1;
  for (uint32_t i = 0; i < bp->e820_count; i++) {
    const struct vireo_e820_entry* e = &bp->e820[i];
    printf("e820[%u]: addr=0x%016lx size=0x%016lx type=%u\n", i, e->addr, e->size, e->type);
    if (e->type != 1) continue;
    total += e->size;
    uint64_t lo = e->addr < 0x100000 ? 0x100000 : e->addr, hi = e->addr + e->size;
    if (hi > 0x100000000ull) hi = 0x100000000ull; /* only the low 4 GiB is mapped */
    if (lo + 8 > hi) continue;
    /* skip our own image/stacks: probe the last 8 bytes and one page above the image if inside */
    if (!probe(hi - 8)) {
      printf("meminfo: probe failed at 0x%lx\n", hi - 8);
      ok = 0;
    }
    uint64_t mid = lo + ((hi - lo) / 2 & ~7ull);
    if (mid >= (uint64_t)guest_stacks + GUEST_MAX_CPUS * GUEST_STACK_SIZE && !probe(mid)) {
      printf("meminfo: probe failed at 0x%lx\n", mid);
      ok = 0;
    }
  }
  printf("meminfo: ram_total=0x%lx (%lu MiB)\n", total, total >> 20);
  if (!ok) return EXIT_MEM_PROBE;
  printf("meminfo: probe ok\n");
  return EXIT_OK;
}
