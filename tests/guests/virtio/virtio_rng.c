/* virtio_rng: reads 32 bytes twice from the first virtio-rng device. Lines: "virtio_rng: transport=pci|mmio",
 * "virtio_rng: bytes=<hex>" (twice; random), "virtio_rng: ok". Exit 0, or 0x24 (no device, timeout, all-zero
 * or repeated output). */
#include "vdrv.h"

int guest_main(void) {
  struct vdev d;
  struct vq q;
  if (vdev_find(&d, 4, 0) != 0 || vdev_begin(&d, 0) != 0 || vq_init(&d, &q, 0, 8) != 0) {
    printf("virtio_rng: no usable virtio-rng device\n");
    return 0x24;
  }
  vdev_ready(&d);
  printf("virtio_rng: transport=%s\n", d.transport == VDRV_PCI ? "pci" : "mmio");
  uint8_t* a = vmem_alloc(32, 16);
  uint8_t* b = vmem_alloc(32, 16);
  struct vbuf va = {(uint64_t)(uintptr_t)a, 32, 1}, vb = {(uint64_t)(uintptr_t)b, 32, 1};
  uint32_t la = 0, lb = 0;
  if (vq_call(&q, &va, 1, &la) < 0 || vq_call(&q, &vb, 1, &lb) < 0) {
    printf("virtio_rng: timeout\n");
    return 0x24;
  }
  hexdump_line("virtio_rng: bytes=", a, la);
  hexdump_line("virtio_rng: bytes=", b, lb);
  static const uint8_t zero[32];
  if (la != 32 || lb != 32 || !memcmp(a, b, 32) || !memcmp(a, zero, 32)) {
    printf("virtio_rng: bad output (len %u/%u)\n", la, lb);
    return 0x24;
  }
  printf("virtio_rng: ok\n");
  return 0;
}
