/* hello: prints the greeting and the boot facts, exits 0. */
#include "runtime/guest.h"

int guest_main(void) {
  printf("Hello from the Vireo test guest!\n");
  printf("hello: cpus=%u mem=%lu MiB entry=%s cmdline=\"%s\"\n", cpu_count(), boot_page()->mem_size >> 20,
         entered_via_pvh() ? "pvh" : "vireo64", cmdline());
  return EXIT_OK;
}
