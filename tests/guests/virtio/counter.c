/* counter: counts and keeps changing memory, for snapshot/restore and migration tests (docs/test-guests.md).
 * Tick t (0, 1, ...) checks page (t % pages) of a RAM area at 16 MiB still holds what tick t - pages wrote
 * (zero before that), rewrites it with a pattern of t, optionally reads 16 bytes from virtio-rng (cmdline
 * `rng`: a device with live queue state across the save), prints "counter: tick T", then waits 2^period TSC
 * cycles. With ticks=N it stops after tick N-1, re-checks every page against the pattern the ticks must have
 * left ("counter: memory ok ticks=N") and exits 0. A lost or repeated tick shows in the printed sequence, a
 * lost page write as "counter: memory corrupt at tick T page P word W" (exit 0x28); rng errors exit 0x28 too.
 * cmdline: ticks= (0 = forever), pages= (default 256 = 1 MiB, at most 4096), period= (default 20), rng. */
#include "vdrv.h"

#define AREA ((volatile uint64_t*)0x1000000ul)
#define WORDS (4096 / 8)

static uint64_t pattern(uint64_t t, uint64_t w) {
  uint64_t x = (t + 1) * 0x9e3779b97f4a7c15ull ^ (w * 0xc2b2ae3d27d4eb4full);
  x ^= x >> 31;
  return x | 1; /* never 0: a page of zeros is always "not written" */
}

/* What page p must hold after `done` ticks (ticks 0..done-1): the pattern of the last tick that wrote it. */
static int check_page(uint64_t done, uint64_t pages, uint64_t p, uint64_t* bad_word) {
  volatile uint64_t* page = AREA + p * WORDS;
  int written = done > p;
  uint64_t t = written ? p + ((done - 1 - p) / pages) * pages : 0;
  for (uint64_t w = 0; w < WORDS; w++) {
    uint64_t want = written ? pattern(t, w) : 0;
    if (page[w] != want) {
      *bad_word = w;
      return -1;
    }
  }
  return 0;
}

int guest_main(void) {
  uint64_t ticks = cmdline_u64("ticks", 0), pages = cmdline_u64("pages", 256), period = cmdline_u64("period", 20);
  if (pages == 0 || pages > 4096 || period > 40) {
    printf("counter: bad cmdline\n");
    return 0x17;
  }
  if (boot_page()->mem_size < 0x1000000ul + pages * 4096) {
    printf("counter: needs at least %lu MiB of RAM\n", (0x1000000ul + pages * 4096) >> 20);
    return 0x17;
  }
  struct vdev d;
  struct vq q;
  int rng = cmdline_has("rng");
  uint8_t* buf = 0;
  if (rng) {
    if (vdev_find(&d, 4, 0) != 0 || vdev_begin(&d, 0) != 0 || vq_init(&d, &q, 0, 8) != 0) {
      printf("counter: no usable virtio-rng device\n");
      return 0x28;
    }
    vdev_ready(&d);
    buf = vmem_alloc(16, 16);
  }
  printf("counter: start pages=%lu rng=%d\n", pages, rng);
  for (uint64_t t = 0; ticks == 0 || t < ticks; t++) {
    uint64_t p = t % pages, w;
    if (check_page(t, pages, p, &w) != 0) {
      printf("counter: memory corrupt at tick %lu page %lu word %lu\n", t, p, w);
      return 0x28;
    }
    volatile uint64_t* page = AREA + p * WORDS;
    for (w = 0; w < WORDS; w++) page[w] = pattern(t, w);
    if (rng) {
      struct vbuf b = {(uint64_t)(uintptr_t)buf, 16, 1};
      uint32_t len = 0;
      if (vq_call(&q, &b, 1, &len) < 0 || len != 16) {
        printf("counter: virtio-rng failed at tick %lu (len %u)\n", t, len);
        return 0x28;
      }
    }
    printf("counter: tick %lu\n", t);
    uint64_t start = rdtsc();
    while (rdtsc() - start < (1ull << period)) cpu_relax();
  }
  for (uint64_t p = 0; p < pages; p++) {
    uint64_t w;
    if (check_page(ticks, pages, p, &w) != 0) {
      printf("counter: memory corrupt at the end, page %lu word %lu\n", p, w);
      return 0x28;
    }
  }
  printf("counter: memory ok ticks=%lu\n", ticks);
  return 0;
}
