/* mmio_loop: n=N (cmdline, default 100000) 32-bit writes to 0xd0000000 (unassigned MMIO in the 3-4 GiB hole),
 * bracketed by boot markers 0x10 and 0x11. Lines: "mmio_loop: n=N", "mmio_loop: done". */
#include "runtime/guest.h"

int guest_main(void) {
  uint64_t n = cmdline_u64("n", 100000);
  uint64_t addr = cmdline_u64("addr", 0xd0000000);
  printf("mmio_loop: n=%lu addr=0x%lx\n", n, addr);
  boot_marker(0x10);
  for (uint64_t i = 0; i < n; i++) mmio_write32(addr, (uint32_t)i);
  boot_marker(0x11);
  printf("mmio_loop: done\n");
  return EXIT_OK;
}
