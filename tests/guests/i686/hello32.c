/* hello32: prints on the serial port, checks that CPUID shows no long mode and that it runs in 32-bit
 * protected mode without paging, and exits through the debug-exit port (docs/test-guests.md). Standalone:
 * the shared runtime is 64-bit only. No 64-bit division (there is no libgcc here). */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

_Static_assert(sizeof(void*) == 4, "hello32 must be built with -m32");

/* Xen's public hvm_start_info (version 1) and its memory map entries. */
struct hvm_start_info {
  u32 magic, version, flags, nr_modules;
  u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
  u32 memmap_entries, reserved;
};
struct hvm_memmap_entry {
  u64 addr, size;
  u32 type, reserved;
};
#define PVH_MAGIC 0x336ec578u

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
  u8 v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline void cpuid(u32 leaf, u32* a, u32* b, u32* c, u32* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static void putc_serial(char ch) {
  while (!(inb(0x3f8 + 5) & 0x20)) {  /* LSR: transmit holding register empty */
  }
  outb(0x3f8, (u8)ch);
}
static void puts_raw(const char* s) {
  while (*s) putc_serial(*s++);
}
static void put_uint(u32 v) {
  char buf[11];
  int n = 0;
  do buf[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
  while (n) putc_serial(buf[--n]);
}

static u32 done(const char* line, u32 status) {
  puts_raw(line);
  return status;
}

u32 hello32_main(const struct hvm_start_info* si) {
  puts_raw("Hello from the Vireo 32-bit test guest!\n");
  if (!si || si->magic != PVH_MAGIC) return done("hello32: no PVH start info\n", 0x10);

  u64 ram = 0;
  const struct hvm_memmap_entry* mm = (const struct hvm_memmap_entry*)(u32)si->memmap_paddr;
  for (u32 i = 0; si->memmap_paddr && i < si->memmap_entries; i++)
    if (mm[i].type == 1) ram += mm[i].size;
  puts_raw("hello32: entry=pvh32 mem=");
  put_uint((u32)(ram >> 20));
  puts_raw(" MiB cmdline=\"");
  if (si->cmdline_paddr) puts_raw((const char*)(u32)si->cmdline_paddr);
  puts_raw("\"\n");

  u32 a, b, c, d, edx = 0;
  cpuid(0x80000000, &a, &b, &c, &d);
  if (a >= 0x80000001 && a < 0x8000ffff) cpuid(0x80000001, &a, &b, &c, &edx);
  const u32 lm = (edx >> 29) & 1, sc = (edx >> 11) & 1;
  puts_raw("hello32: cpuid 80000001: lm=");
  put_uint(lm);
  puts_raw(" syscall=");
  put_uint(sc);
  puts_raw("\n");

  u32 cr0;
  __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
  if ((cr0 & 0x80000001u) != 1u) return done("hello32: not in protected mode with paging off\n", 0x18);
  if (lm) return done("hello32: long mode is visible\n", 0x18);
  return done("hello32: 32-bit protected mode, paging off, no long mode\n", 0);
}
