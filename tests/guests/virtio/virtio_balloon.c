/* virtio_balloon: touches `pages=` (4096) 4 KiB pages at `addr=` (0x2000000), holds `hold_mcycles=` (3000),
 * inflates the balloon with all of them, holds again, then exits. The host test samples the VMM's RSS at
 * each line. Lines: "virtio_balloon: transport=...", "virtio_balloon: touched N pages",
 * "virtio_balloon: inflated N pages", "virtio_balloon: done". Exit 0, or 0x27. */
#include "vdrv.h"

static void hold(void) {
  uint64_t end = rdtsc() + cmdline_u64("hold_mcycles", 3000) * 1000000ull;
  while (rdtsc() < end) cpu_relax();
}

int guest_main(void) {
  struct vdev d;
  struct vq inflate, deflate;
  uint64_t pages = cmdline_u64("pages", 4096), addr = cmdline_u64("addr", 0x2000000);
  if (addr + pages * 4096 > boot_page()->mem_size || addr < 0x1000000) {
    printf("virtio_balloon: area 0x%lx+%lu pages does not fit in RAM\n", addr, pages);
    return 0x17;
  }
  if (vdev_find(&d, 5, 0) != 0 || vdev_begin(&d, 0) != 0 || vq_init(&d, &inflate, 0, 64) != 0 ||
      vq_init(&d, &deflate, 1, 64) != 0) {
    printf("virtio_balloon: no usable virtio-balloon device\n");
    return 0x27;
  }
  vdev_ready(&d);
  printf("virtio_balloon: transport=%s\n", d.transport == VDRV_PCI ? "pci" : "mmio");
  for (uint64_t p = 0; p < pages; p++) memset((void*)(uintptr_t)(addr + p * 4096), 0xa5, 4096);
  printf("virtio_balloon: touched %lu pages\n", pages);
  hold();
  uint32_t* pfns = vmem_alloc(256 * 4, 64);
  for (uint64_t p = 0; p < pages;) {
    uint32_t n = 0;
    while (n < 256 && p < pages) pfns[n++] = (uint32_t)((addr >> 12) + p++);
    struct vbuf b = {(uint64_t)(uintptr_t)pfns, n * 4, 0};
    if (vq_call(&inflate, &b, 1, 0) < 0) {
      printf("virtio_balloon: inflate timed out\n");
      return 0x27;
    }
  }
  vdev_cfg_write32(&d, 4, (uint32_t)pages); /* actual */
  printf("virtio_balloon: inflated %lu pages\n", pages);
  hold();
  printf("virtio_balloon: done\n");
  return 0;
}
