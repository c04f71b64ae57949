/* irq: interrupt delivery. Tests selected on the cmdline: "lapic" (LAPIC timer one-shot, vector 0x40) and/or
 * "serial" (16550 THR-empty interrupt, ISA IRQ 4 routed through IOAPIC pin 4 to vector 0x41); both when
 * neither is given. Lines: "irq: lapic timer vector 0x40 received (count C)" /
 * "irq: serial thre vector 0x41 received (count C)", then "irq: ok". On a timeout:
 * "irq: timeout waiting for <what>" and exit EXIT_IRQ_TIMEOUT. Run it emulated on PVM (--native off). */
#include "runtime/guest.h"

#define VEC_TIMER 0x40
#define VEC_SERIAL 0x41

static volatile uint32_t timer_count, serial_count;

static void on_timer(struct irq_frame* f) {
  (void)f;
  timer_count++;
  lapic_eoi();
}

static void on_serial(struct irq_frame* f) {
  (void)f;
  uint8_t iir = inb(PORT_SERIAL + 2);
  if ((iir & 0x0f) == 0x02) serial_count++;
  outb(PORT_SERIAL + 1, 0x00); /* disable further THRE interrupts */
  lapic_eoi();
}

static int wait_for(volatile uint32_t* counter, const char* what) {
  uint64_t start = rdtsc(), limit = cmdline_u64("timeout_mcycles", 20000) * 1000000ull;
  irq_enable();
  while (!*counter && rdtsc() - start < limit) cpu_relax();
  irq_disable();
  if (!*counter) {
    printf("irq: timeout waiting for %s\n", what);
    return 0;
  }
  return 1;
}

int guest_main(void) {
  int lapic = cmdline_has("lapic"), serial = cmdline_has("serial");
  if (!lapic && !serial) lapic = serial = 1;
  pic_mask_all();
  lapic_enable();
  irq_set_handler(VEC_TIMER, on_timer);
  irq_set_handler(VEC_SERIAL, on_serial);
  printf("irq: start (lapic=%d serial=%d apic_id=%u)\n", lapic, serial, lapic_id());

  if (lapic) {
    lapic_write(LAPIC_TIMER_DIV, 0xb);          /* divide by 1 */
    lapic_write(LAPIC_LVT_TIMER, VEC_TIMER);    /* one-shot, unmasked */
    lapic_write(LAPIC_TIMER_INIT, (uint32_t)cmdline_u64("timer_count", 100000));
    if (!wait_for(&timer_count, "lapic timer")) return EXIT_IRQ_TIMEOUT;
    printf("irq: lapic timer vector 0x%x received (count %u)\n", VEC_TIMER, timer_count);
  }
  if (serial) {
    ioapic_route(4, VEC_SERIAL, lapic_id());
    outb(PORT_SERIAL + 4, 0x0b);  /* OUT2: IRQ line enabled */
    outb(PORT_SERIAL + 1, 0x02);  /* IER: THR empty */
    if (!wait_for(&serial_count, "serial thre")) return EXIT_IRQ_TIMEOUT;
    printf("irq: serial thre vector 0x%x received (count %u)\n", VEC_SERIAL, serial_count);
  }
  printf("irq: ok\n");
  return EXIT_OK;
}
