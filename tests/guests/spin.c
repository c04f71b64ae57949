/* spin: prints "spin: tick N" forever (N from 0), one line every 2^period cycles (cmdline period=, default
 * 26, ~20-70 ms), for pause/resume tests. "spin: start" first. Never exits by itself. */
#include "runtime/guest.h"

int guest_main(void) {
  uint64_t period = cmdline_u64("period", 26);
  if (period > 40) period = 40;
  printf("spin: start\n");
  for (uint64_t n = 0;; n++) {
    printf("spin: tick %lu\n", n);
    uint64_t t = rdtsc();
    while (rdtsc() - t < (1ull << period)) cpu_relax();
  }
}
