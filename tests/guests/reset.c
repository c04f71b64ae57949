/* reset: asks for a CPU reset through the i8042 (0xFE to port 0x64). Must not return: if it does, prints
 * "reset: still running" and exits EXIT_RESET_RETURNED. Line before: "reset: pulsing i8042 reset line". */
#include "runtime/guest.h"

int guest_main(void) {
  printf("reset: pulsing i8042 reset line\n");
  outb(PORT_I8042_CMD, 0xfe);
  for (volatile int i = 0; i < 1000000; i++) cpu_relax();
  printf("reset: still running\n");
  return EXIT_RESET_RETURNED;
}
