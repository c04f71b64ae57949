/* triple: loads an empty IDT and executes ud2: #UD cannot be delivered -> #DF -> triple fault (shutdown).
 * Line before: "triple: faulting". If execution continues: "triple: still running", EXIT_TRIPLE_RETURNED. */
#include "runtime/guest.h"

int guest_main(void) {
  printf("triple: faulting\n");
  struct {
    uint16_t limit;
    uint64_t base;
  } __attribute__((packed)) d = {0, 0};
  __asm__ volatile("lidt %0; ud2" ::"m"(d));
  printf("triple: still running\n");
  return EXIT_TRIPLE_RETURNED;
}
