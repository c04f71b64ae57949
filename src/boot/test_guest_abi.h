/* vireo/boot: the boot-parameter page a Vireo test guest receives (RSI on entry, see docs/test-guests.md).
 * Plain C, usable from freestanding guest code and from the VMM. All fields little-endian, fixed layout. */
#ifndef VIREO_BOOT_TEST_GUEST_ABI_H
#define VIREO_BOOT_TEST_GUEST_ABI_H
#include <stdint.h>

#define VIREO_BOOT_MAGIC 0x544f4f424f524956ull /* "VIROBOOT" little-endian */
#define VIREO_BOOT_VERSION 1u
#define VIREO_BOOT_E820_MAX 64u

/* ELF note that marks a Vireo test guest: name "Vireo", type 1, desc = 4-byte protocol version (1). */
#define VIREO_ELFNOTE_NAME "Vireo"
#define VIREO_ELFNOTE_TEST_GUEST 1u

/* flags */
#define VIREO_BOOT_FLAG_PVH 1u /* set by the guest runtime when it synthesised this page from PVH start info */

struct vireo_e820_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type; /* 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable */
  uint32_t reserved;
};

struct vireo_boot_page {
  uint64_t magic;        /* VIREO_BOOT_MAGIC */
  uint32_t version;      /* VIREO_BOOT_VERSION */
  uint32_t cpu_count;    /* vCPUs started (all runnable at entry) */
  uint64_t mem_size;     /* bytes of guest RAM (sum of RAM regions) */
  uint64_t cmdline_addr; /* guest-physical address of the NUL-terminated command line (0 if none) */
  uint32_t cmdline_len;  /* length without the NUL */
  uint32_t e820_count;   /* valid entries in e820[] */
  uint64_t flags;        /* VIREO_BOOT_FLAG_* */
  uint64_t reserved[8];  /* zero; room to grow */
  struct vireo_e820_entry e820[VIREO_BOOT_E820_MAX];
};

#ifdef __cplusplus
static_assert(sizeof(struct vireo_e820_entry) == 24, "abi");
static_assert(sizeof(struct vireo_boot_page) == 112 + 24 * VIREO_BOOT_E820_MAX, "abi");
#endif
#endif
