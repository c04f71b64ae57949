/* Vireo test-guest runtime: a tiny freestanding environment for 64-bit test guests.
 *
 * A guest program defines `int guest_main(void)` (runs on vCPU 0; its return value goes to the debug-exit
 * port) and optionally `void guest_ap_main(unsigned cpu)` (runs on every other vCPU; default: check in and
 * park). The runtime enters through either
 *   - the Vireo 64-bit protocol (e_entry, long mode, RDI = vCPU index, RSI = struct vireo_boot_page), or
 *   - the PVH 32-bit entry (Xen PHYS32_ENTRY note; EBX = hvm_start_info), used by QEMU: the runtime builds its
 *     own page tables, enters long mode, and synthesises a vireo_boot_page from the start info (cpu_count 1:
 *     APs are not started on this path).
 * See docs/test-guests.md for the line formats and exit codes of every guest.
 */
#ifndef VIREO_GUEST_H
#define VIREO_GUEST_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "boot/test_guest_abi.h"

#define GUEST_MAX_CPUS 64
#define GUEST_STACK_SIZE 16384

/* Ports (see docs/vmm.md). */
#define PORT_SERIAL 0x3f8
#define PORT_DEBUG_EXIT 0x501 /* byte written = VMM exit status (QEMU isa-debug-exit: (v << 1) | 1) */
#define PORT_BOOT_MARKER 0x80 /* byte written = milestone id; the VMM logs a timestamp */
#define PORT_I8042_CMD 0x64

/* Guest exit statuses (debug-exit). 0 = success. */
#define EXIT_OK 0x00
#define EXIT_BAD_BOOT 0x10        /* boot page missing/invalid */
#define EXIT_RESET_RETURNED 0x11  /* reset guest: the reset request did not stop the VM */
#define EXIT_SMP_MISMATCH 0x12    /* smp guest: checked-in count != cpu_count (or timeout) */
#define EXIT_IRQ_TIMEOUT 0x13     /* irq guest: an expected interrupt did not arrive */
#define EXIT_MEM_PROBE 0x14       /* meminfo guest: a RAM probe read back wrong data */
#define EXIT_EXCEPTION 0x15       /* unexpected CPU exception (printed first) */
#define EXIT_TRIPLE_RETURNED 0x16 /* triple guest: still running after the fault */
#define EXIT_BAD_ARGS 0x17        /* bad guest cmdline argument */

/* Boot markers written by the runtime; guests use ids >= 0x10 for their own milestones. */
#define MARKER_RUNTIME_ENTRY 0x01 /* first instruction of C code on vCPU 0 */
#define MARKER_MAIN 0x02          /* right before guest_main */

/* Program hooks. */
int guest_main(void);
void guest_ap_main(unsigned cpu); /* weak default parks the vCPU */

/* Boot information. */
const struct vireo_boot_page* boot_page(void);
unsigned cpu_count(void);
int entered_via_pvh(void);
const char* cmdline(void); /* never NULL */
/* Value of "key=value" in the cmdline as an unsigned number (decimal or 0x hex), or `def` when absent. */
uint64_t cmdline_u64(const char* key, uint64_t def);
int cmdline_has(const char* word); /* word present as a whole token (or as key of key=value) */

/* Port and MMIO access. */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint16_t inw(uint16_t port) {
  uint16_t v;
  __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint32_t inl(uint16_t port) {
  uint32_t v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t*)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t*)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t*)a; }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t*)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t*)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t*)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t*)a = v; }
static inline void mmio_write64(uint64_t a, uint64_t v) { *(volatile uint64_t*)a = v; }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
static inline uint64_t read_cr2(void) {
  uint64_t v;
  __asm__ volatile("mov %%cr2, %0" : "=r"(v));
  return v;
}

/* Atomics and a spin lock (SMP check-in, serial output). */
static inline uint32_t atomic_add(volatile uint32_t* p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t atomic_load(volatile uint32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
typedef struct { volatile uint32_t v; } spinlock_t;
void spin_lock(spinlock_t* l);
void spin_unlock(spinlock_t* l);

/* Serial console (polled 16550 at 0x3f8) and printf-lite: %d %i %u %x %X %p %s %c %%, with l/ll/z
 * modifiers, a width and the 0 flag. Output of one printf call is atomic across vCPUs. */
void serial_init(void);
void serial_putc(char c);
void puts_raw(const char* s);
int printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char* fmt, va_list ap);
int snprintf(char* buf, size_t n, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

/* Ending the VM. */
__attribute__((noreturn)) void debug_exit(uint8_t status); /* writes 0x501, then parks */
__attribute__((noreturn)) void halt_forever(void);         /* cli; hlt loop */
void boot_marker(uint8_t id);

/* Interrupts: the runtime installs an IDT on every vCPU; exceptions without a handler print
 * "exception N at rip=..." and exit with EXIT_EXCEPTION. */
struct irq_frame {
  uint64_t rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11;
  uint64_t vector, error_code, rip, cs, rflags, rsp, ss;
};
typedef void (*irq_handler_t)(struct irq_frame* f);
void irq_set_handler(uint8_t vector, irq_handler_t h);

/* Local APIC (xAPIC MMIO at 0xfee00000) and IOAPIC (0xfec00000). */
#define LAPIC_BASE 0xfee00000ull
#define IOAPIC_BASE 0xfec00000ull
#define LAPIC_ID 0x20
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
static inline uint32_t lapic_read(uint32_t reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t v) { mmio_write32(LAPIC_BASE + reg, v); }
void lapic_enable(void); /* software-enable with spurious vector 0xff */
static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
static inline unsigned lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
uint32_t ioapic_read(uint32_t reg);
void ioapic_write(uint32_t reg, uint32_t v);
void ioapic_route(unsigned pin, uint8_t vector, unsigned dest_apic); /* edge, fixed, unmasked */
void pic_mask_all(void);                                             /* mask both legacy 8259s */

/* Freestanding libc bits. */
void* memset(void* d, int c, size_t n);
void* memcpy(void* d, const void* s, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
int strncmp(const char* a, const char* b, size_t n);

#endif
