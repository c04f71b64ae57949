/* Vireo test-guest runtime: C part (boot-page handling, serial, printf-lite, IDT, APIC helpers). */
#include "guest.h"

/* ------------------------------------------------------------------------------------------ libc bits */
void* memset(void* d, int c, size_t n) {
  unsigned char* p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  unsigned char* p = d;
  const unsigned char* q = s;
  while (n--) *p++ = *q++;
  return d;
}
int memcmp(const void* a, const void* b, size_t n) {
  const unsigned char *p = a, *q = b;
  for (; n; n--, p++, q++)
    if (*p != *q) return *p - *q;
  return 0;
}
size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}
int strncmp(const char* a, const char* b, size_t n) {
  for (; n; n--, a++, b++) {
    if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
    if (!*a) return 0;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ spin lock */
void spin_lock(spinlock_t* l) {
  while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
    while (__atomic_load_n(&l->v, __ATOMIC_RELAXED)) cpu_relax();
}
void spin_unlock(spinlock_t* l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }

/* ------------------------------------------------------------------------------------------ serial */
static spinlock_t print_lock;

void serial_init(void) {
  outb(PORT_SERIAL + 1, 0x00); /* IER: no interrupts */
  outb(PORT_SERIAL + 3, 0x80); /* LCR: DLAB */
  outb(PORT_SERIAL + 0, 0x01); /* divisor 1: 115200 baud */
  outb(PORT_SERIAL + 1, 0x00);
  outb(PORT_SERIAL + 3, 0x03); /* 8N1 */
  outb(PORT_SERIAL + 4, 0x0b); /* DTR | RTS | OUT2 */
}

void serial_putc(char c) {
  /* Wait for THR empty, but never forever: a VMM without the LSR still gets the bytes. */
  for (int i = 0; i < 100000 && !(inb(PORT_SERIAL + 5) & 0x20); i++) cpu_relax();
  outb(PORT_SERIAL, (uint8_t)c);
}

void puts_raw(const char* s) {
  while (*s) serial_putc(*s++);
}

/* ------------------------------------------------------------------------------------------ printf-lite */
struct out {
  char* buf; /* NULL: serial */
  size_t n, len;
};
static void emit(struct out* o, char c) {
  if (o->buf) {
    if (o->len + 1 < o->n) o->buf[o->len] = c;
  } else {
    serial_putc(c);
  }
  o->len++;
}

static void emit_num(struct out* o, uint64_t v, unsigned base, int upper, int neg, int width, char pad) {
  char tmp[24];
  int n = 0;
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  do {
    tmp[n++] = digits[v % base];
    v /= base;
  } while (v);
  int len = n + neg;
  if (neg && pad == '0') emit(o, '-');
  for (; width > len; width--) emit(o, pad);
  if (neg && pad != '0') emit(o, '-');
  while (n) emit(o, tmp[--n]);
}

static int format(struct out* o, const char* f, va_list ap) {
  for (; *f; f++) {
    if (*f != '%') {
      emit(o, *f);
      continue;
    }
    f++;
    char pad = ' ';
    int width = 0, lng = 0;
    if (*f == '0') pad = '0', f++;
    while (*f >= '0' && *f <= '9') width = width * 10 + (*f++ - '0');
    while (*f == 'l' || *f == 'z') lng++, f++;
    switch (*f) {
      case 'd':
      case 'i': {
        int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
        emit_num(o, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, 10, 0, v < 0, width, pad);
        break;
      }
      case 'u': emit_num(o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, 0, 0, width, pad); break;
      case 'x':
      case 'X':
        emit_num(o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, *f == 'X', 0, width, pad);
        break;
      case 'p':
        emit(o, '0'), emit(o, 'x');
        emit_num(o, (uint64_t)va_arg(ap, void*), 16, 0, 0, width, pad);
        break;
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        int len = (int)strlen(s);
        for (; width > len; width--) emit(o, ' ');
        while (*s) emit(o, *s++);
        break;
      }
      case 'c': emit(o, (char)va_arg(ap, int)); break;
      case '%': emit(o, '%'); break;
      case 0: return (int)o->len;
      default: emit(o, '%'), emit(o, *f); break;
    }
  }
  return (int)o->len;
}

int vprintf(const char* fmt, va_list ap) {
  struct out o = {0, 0, 0};
  spin_lock(&print_lock);
  int n = format(&o, fmt, ap);
  spin_unlock(&print_lock);
  return n;
}
int printf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vprintf(fmt, ap);
  va_end(ap);
  return n;
}
int snprintf(char* buf, size_t n, const char* fmt, ...) {
  struct out o = {buf, n, 0};
  va_list ap;
  va_start(ap, fmt);
  format(&o, fmt, ap);
  va_end(ap);
  if (n) buf[o.len < n ? o.len : n - 1] = 0;
  return (int)o.len;
}

/* ------------------------------------------------------------------------------------------ exit */
void halt_forever(void) {
  for (;;) __asm__ volatile("cli; hlt");
}
void debug_exit(uint8_t status) {
  outb(PORT_DEBUG_EXIT, status);
  halt_forever();
}
void boot_marker(uint8_t id) { outb(PORT_BOOT_MARKER, id); }

/* ------------------------------------------------------------------------------------------ boot info */
static const struct vireo_boot_page* g_boot;
static struct vireo_boot_page g_pvh_page; /* synthesised under PVH */
static char g_cmdline[1024];
static volatile uint32_t g_ready;

const struct vireo_boot_page* boot_page(void) { return g_boot; }
unsigned cpu_count(void) { return g_boot ? g_boot->cpu_count : 1; }
int entered_via_pvh(void) { return g_boot && (g_boot->flags & VIREO_BOOT_FLAG_PVH); }
const char* cmdline(void) { return g_cmdline; }

static void copy_cmdline(uint64_t addr, uint64_t len) {
  if (!addr) return;
  if (len >= sizeof g_cmdline) len = sizeof g_cmdline - 1;
  memcpy(g_cmdline, (const char*)addr, len);
  g_cmdline[len] = 0;
}

static const char* find_token(const char* key, size_t* keylen_out) {
  size_t kl = strlen(key);
  const char* p = g_cmdline;
  while (*p) {
    while (*p == ' ') p++;
    if (!*p) break;
    if (!strncmp(p, key, kl) && (p[kl] == 0 || p[kl] == ' ' || p[kl] == '=')) {
      *keylen_out = kl;
      return p;
    }
    while (*p && *p != ' ') p++;
  }
  return 0;
}

int cmdline_has(const char* word) {
  size_t kl;
  return find_token(word, &kl) != 0;
}

uint64_t cmdline_u64(const char* key, uint64_t def) {
  size_t kl;
  const char* p = find_token(key, &kl);
  if (!p || p[kl] != '=') return def;
  p += kl + 1;
  uint64_t v = 0;
  unsigned base = 10;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) base = 16, p += 2;
  int any = 0;
  for (;; p++) {
    unsigned d;
    if (*p >= '0' && *p <= '9') d = (unsigned)(*p - '0');
    else if (base == 16 && *p >= 'a' && *p <= 'f') d = (unsigned)(*p - 'a' + 10);
    else if (base == 16 && *p >= 'A' && *p <= 'F') d = (unsigned)(*p - 'A' + 10);
    else break;
    v = v * base + d;
    any = 1;
  }
  if (!any || (*p && *p != ' ')) {
    printf("guest: bad number in cmdline argument %s\n", key);
    debug_exit(EXIT_BAD_ARGS);
  }
  return v;
}

/* ------------------------------------------------------------------------------------------ IDT */
struct idt_entry {
  uint16_t off0, sel;
  uint8_t ist, type;
  uint16_t off1;
  uint32_t off2, zero;
} __attribute__((packed));
static struct idt_entry g_idt[256] __attribute__((aligned(16)));
static irq_handler_t g_handlers[256];
extern char irq_stubs[];

static const char* const exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31"};

void irq_dispatch(struct irq_frame* f) {
  uint8_t v = (uint8_t)f->vector;
  if (g_handlers[v]) {
    g_handlers[v](f);
    return;
  }
  if (v < 32) {
    printf("exception %u (%s) at rip=0x%lx err=0x%lx cr2=0x%lx\n", v, exc_names[v], f->rip, f->error_code,
           read_cr2());
    debug_exit(EXIT_EXCEPTION);
  }
  printf("spurious interrupt vector 0x%x\n", v);
  if (v != 0xff) lapic_eoi();
}

void irq_set_handler(uint8_t vector, irq_handler_t h) { g_handlers[vector] = h; }

static void idt_build(void) {
  uint16_t cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  for (int i = 0; i < 256; i++) {
    uint64_t a = (uint64_t)(irq_stubs + 16 * i);
    g_idt[i].off0 = (uint16_t)a;
    g_idt[i].sel = cs;
    g_idt[i].ist = 0;
    g_idt[i].type = 0x8e; /* present, DPL0, 64-bit interrupt gate */
    g_idt[i].off1 = (uint16_t)(a >> 16);
    g_idt[i].off2 = (uint32_t)(a >> 32);
    g_idt[i].zero = 0;
  }
}

static void idt_load(void) {
  struct {
    uint16_t limit;
    uint64_t base;
  } __attribute__((packed)) d = {sizeof g_idt - 1, (uint64_t)g_idt};
  __asm__ volatile("lidt %0" ::"m"(d));
}

/* ------------------------------------------------------------------------------------------ APIC */
void lapic_enable(void) { lapic_write(LAPIC_SVR, 0x100 | 0xff); }
uint32_t ioapic_read(uint32_t reg) {
  mmio_write32(IOAPIC_BASE, reg);
  return mmio_read32(IOAPIC_BASE + 0x10);
}
void ioapic_write(uint32_t reg, uint32_t v) {
  mmio_write32(IOAPIC_BASE, reg);
  mmio_write32(IOAPIC_BASE + 0x10, v);
}
void ioapic_route(unsigned pin, uint8_t vector, unsigned dest_apic) {
  ioapic_write(0x10 + 2 * pin + 1, dest_apic << 24);
  ioapic_write(0x10 + 2 * pin, vector); /* fixed, physical, edge, active high, unmasked */
}
void pic_mask_all(void) {
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
}

/* ------------------------------------------------------------------------------------------ entry */
__attribute__((weak)) void guest_ap_main(unsigned cpu) {
  (void)cpu;
  halt_forever();
}

static __attribute__((noreturn)) void bsp_start(void) {
  boot_marker(MARKER_MAIN);
  __atomic_store_n(&g_ready, 1, __ATOMIC_RELEASE);
  int rc = guest_main();
  debug_exit((uint8_t)rc);
}

void guest_entry64(uint64_t cpu, const struct vireo_boot_page* bp) {
  if (cpu == 0) {
    boot_marker(MARKER_RUNTIME_ENTRY);
    idt_build();
    idt_load();
    serial_init();
    if (!bp || bp->magic != VIREO_BOOT_MAGIC || bp->version < 1 || bp->e820_count > VIREO_BOOT_E820_MAX) {
      puts_raw("guest: bad boot page\n");
      debug_exit(EXIT_BAD_BOOT);
    }
    g_boot = bp;
    copy_cmdline(bp->cmdline_addr, bp->cmdline_len);
    bsp_start();
  }
  while (!__atomic_load_n(&g_ready, __ATOMIC_ACQUIRE)) cpu_relax();
  idt_load();
  guest_ap_main((unsigned)cpu);
  halt_forever();
}

/* PVH: struct hvm_start_info (Xen public/arch-x86/hvm/start_info.h, version >= 1). */
struct hvm_start_info {
  uint32_t magic, version, flags, nr_modules;
  uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
  uint32_t memmap_entries, reserved;
};
struct hvm_memmap_entry {
  uint64_t addr, size;
  uint32_t type, reserved;
};

/* ---- AP discovery and start-up on the PVH path (ACPI MADT, else the MP table) ---- */
#define AP_TRAMP_ADDR 0x8000
uint8_t g_apic_to_cpu[256];
extern char ap_tramp_start[], ap_tramp_end[];

/* A pointer to guest-physical memory the compiler cannot reason about (low addresses are valid here). */
static inline const uint8_t* phys(uint64_t a) {
  __asm__("" : "+r"(a));
  return (const uint8_t*)a;
}

static int checksum_ok(const uint8_t* p, uint32_t n) {
  uint8_t s = 0;
  for (uint32_t i = 0; i < n; i++) s = (uint8_t)(s + p[i]);
  return s == 0;
}

/* Fills ids[] with the enabled APIC IDs; returns how many (0 if no table was found). */
static unsigned mp_table_cpus(uint8_t* ids, unsigned max) {
  const uint64_t ranges[3][2] = {{0xf0000, 0x100000}, {0x9fc00, 0xa0000}, {0, 0}};
  uint64_t ebda = (uint64_t)(*(const volatile uint16_t*)phys(0x40e)) << 4;
  uint64_t r[3][2] = {{ranges[0][0], ranges[0][1]}, {ranges[1][0], ranges[1][1]}, {ebda, ebda ? ebda + 1024 : 0}};
  for (int k = 0; k < 3; k++) {
    for (uint64_t a = r[k][0]; a + 16 <= r[k][1]; a += 16) {
      const uint8_t* fp = phys(a);
      if (memcmp(fp, "_MP_", 4) || !checksum_ok(fp, 16)) continue;
      uint32_t t = *(const uint32_t*)(fp + 4);
      if (!t || t >= 0x100000000ull - 0x10000) return 0;
      const uint8_t* ct = phys(t);
      uint16_t len = *(const uint16_t*)(ct + 4), count = *(const uint16_t*)(ct + 34);
      if (memcmp(ct, "PCMP", 4) || len < 44 || !checksum_ok(ct, len)) return 0;
      unsigned n = 0;
      uint32_t at = 44;
      for (uint16_t i = 0; i < count && at < len; i++) {
        if (ct[at] == 0) {
          if (at + 20 > len) break;
          if ((ct[at + 3] & 1) && n < max) ids[n++] = ct[at + 1];
          at += 20;
        } else {
          at += 8;
        }
      }
      return n;
    }
  }
  return 0;
}

static const uint8_t* find_rsdp(uint64_t hint) {
  if (hint && hint < 0x100000000ull && !memcmp(phys(hint), "RSD PTR ", 8)) return phys(hint);
  for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
    if (!memcmp(phys(a), "RSD PTR ", 8) && checksum_ok(phys(a), 20)) return phys(a);
  return 0;
}

static unsigned madt_cpus(uint64_t rsdp_hint, uint8_t* ids, unsigned max) {
  const uint8_t* rsdp = find_rsdp(rsdp_hint);
  if (!rsdp) return 0;
  uint64_t sdt = *(const uint32_t*)(rsdp + 16);
  unsigned esz = 4;
  if (rsdp[15] >= 2 && *(const uint64_t*)(rsdp + 24)) sdt = *(const uint64_t*)(rsdp + 24), esz = 8;
  if (!sdt || sdt >= 0x100000000ull) return 0;
  uint32_t len = *(const uint32_t*)phys(sdt + 4);
  for (uint32_t at = 36; at + esz <= len && at < 4096; at += esz) {
    uint64_t t = esz == 8 ? *(const uint64_t*)phys(sdt + at) : *(const uint32_t*)phys(sdt + at);
    if (!t || t >= 0x100000000ull || memcmp(phys(t), "APIC", 4)) continue;
    const uint8_t* m = phys(t);
    uint32_t mlen = *(const uint32_t*)(m + 4);
    unsigned n = 0;
    for (uint32_t e = 44; e + 2 <= mlen && e < 65536;) {
      uint8_t type = m[e], elen = m[e + 1];
      if (elen < 2) break;
      if (type == 0 && elen >= 8 && (*(const uint32_t*)(m + e + 4) & 1) && n < max) ids[n++] = m[e + 3];
      e += elen;
    }
    return n;
  }
  return 0;
}

static void delay_cycles(uint64_t c) {
  uint64_t t = rdtsc();
  while (rdtsc() - t < c) cpu_relax();
}

static void ipi(uint8_t apic, uint32_t low) {
  lapic_write(0x310, (uint32_t)apic << 24);
  lapic_write(0x300, low);
  for (int i = 0; i < 100000 && (lapic_read(0x300) & (1u << 12)); i++) cpu_relax();
}

/* Returns the number of vCPUs (>= 1). */
static unsigned start_aps(uint64_t rsdp_hint) {
  uint8_t ids[GUEST_MAX_CPUS];
  unsigned n = madt_cpus(rsdp_hint, ids, GUEST_MAX_CPUS);
  if (!n) n = mp_table_cpus(ids, GUEST_MAX_CPUS);
  memset(g_apic_to_cpu, 0xff, sizeof g_apic_to_cpu);
  unsigned self = lapic_id();
  if (n <= 1) {
    g_apic_to_cpu[self] = 0;
    return 1;
  }
  /* vCPU 0 is this one; the others get indices in table order. */
  unsigned next = 1;
  g_apic_to_cpu[self] = 0;
  for (unsigned i = 0; i < n; i++)
    if (ids[i] != self) g_apic_to_cpu[ids[i]] = (uint8_t)next++;
  memcpy((void*)phys(AP_TRAMP_ADDR), ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
  lapic_enable();
  for (unsigned i = 0; i < n; i++) {
    if (ids[i] == self) continue;
    ipi(ids[i], 0x4500); /* INIT, level assert */
    delay_cycles(10000000);
    ipi(ids[i], 0x4600 | (AP_TRAMP_ADDR >> 12)); /* SIPI */
    delay_cycles(1000000);
    ipi(ids[i], 0x4600 | (AP_TRAMP_ADDR >> 12));
  }
  return next;
}

void guest_entry_pvh(const struct hvm_start_info* si) {
  boot_marker(MARKER_RUNTIME_ENTRY);
  idt_build();
  idt_load();
  serial_init();
  if (!si || si->magic != 0x336ec578) {
    puts_raw("guest: bad PVH start info\n");
    debug_exit(EXIT_BAD_BOOT);
  }
  struct vireo_boot_page* p = &g_pvh_page;
  p->magic = VIREO_BOOT_MAGIC;
  p->version = VIREO_BOOT_VERSION;
  p->cpu_count = 1;
  p->flags = VIREO_BOOT_FLAG_PVH;
  if (si->cmdline_paddr) {
    const char* c = (const char*)si->cmdline_paddr;
    p->cmdline_addr = si->cmdline_paddr;
    p->cmdline_len = (uint32_t)strlen(c);
  }
  if (si->version >= 1 && si->memmap_paddr) {
    const struct hvm_memmap_entry* m = (const struct hvm_memmap_entry*)si->memmap_paddr;
    uint32_t n = si->memmap_entries < VIREO_BOOT_E820_MAX ? si->memmap_entries : VIREO_BOOT_E820_MAX;
    for (uint32_t i = 0; i < n; i++) {
      p->e820[i].addr = m[i].addr;
      p->e820[i].size = m[i].size;
      p->e820[i].type = m[i].type;
      if (m[i].type == 1) p->mem_size += m[i].size;
    }
    p->e820_count = n;
  }
  copy_cmdline(p->cmdline_addr, p->cmdline_len);
  p->cmdline_addr = (uint64_t)g_cmdline; /* the original may be overwritten below */
  g_boot = p;
  if (!cmdline_has("nosmp")) p->cpu_count = start_aps(si->version >= 1 ? si->rsdp_paddr : 0);
  bsp_start();
}
