/* pio_loop: n=N (cmdline, default 100000) 32-bit OUTs to port 0x510 (unassigned: each is one VMM exit),
 * bracketed by boot markers 0x10 (start) and 0x11 (done). Lines: "pio_loop: n=N", "pio_loop: done". */
#include "runtime/guest.h"

int guest_main(void) {
  uint64_t n = cmdline_u64("n", 100000);
  printf("pio_loop: n=%lu\n", n);
  boot_marker(0x10);
  for (uint64_t i = 0; i < n; i++) outl(0x510, (uint32_t)i);
  boot_marker(0x11);
  printf("pio_loop: done\n");
  return EXIT_OK;
}
