/* virtio_console: writes "virtio_console: hello" on port 0, then (unless `noinput`) reads one line of host
 * input and writes it back as "echo: <line>". Serial lines: "virtio_console: transport=...", "virtio_console:
 * sent", "virtio_console: echoed N bytes". Exit 0, or 0x26 (no device / timeout). */
#include "vdrv.h"

static struct vq rx, tx;

static int send(const char* s, uint32_t n) {
  static char* buf;
  if (!buf) buf = vmem_alloc(512, 16);
  if (n > 512) n = 512;
  memcpy(buf, s, n);
  struct vbuf b = {(uint64_t)(uintptr_t)buf, n, 0};
  return vq_call(&tx, &b, 1, 0);
}

int guest_main(void) {
  struct vdev d;
  if (vdev_find(&d, 3, 0) != 0 || vdev_begin(&d, 0) != 0 || vq_init(&d, &rx, 0, 16) != 0 || vq_init(&d, &tx, 1, 16) != 0) {
    printf("virtio_console: no usable virtio-console device\n");
    return 0x26;
  }
  vdev_ready(&d);
  printf("virtio_console: transport=%s\n", d.transport == VDRV_PCI ? "pci" : "mmio");
  static const char hello[] = "virtio_console: hello\n";
  if (send(hello, sizeof hello - 1) < 0) return 0x26;
  printf("virtio_console: sent\n");
  if (cmdline_has("noinput")) return 0;
  char* in = vmem_alloc(256, 16);
  char line[300] = "echo: ";
  unsigned n = 6;
  for (;;) {
    struct vbuf b = {(uint64_t)(uintptr_t)in, 256, 1};
    uint32_t len = 0;
    vq_add(&rx, &b, 1);
    vq_kick(&rx);
    if (vq_wait(&rx, &len, VDRV_TIMEOUT * 5) < 0) {
      printf("virtio_console: no input\n");
      return 0x26;
    }
    int nl = 0;
    for (uint32_t i = 0; i < len && n < sizeof line - 1; i++) {
      line[n++] = in[i];
      if (in[i] == '\n') {
        nl = 1;
        break;
      }
    }
    if (nl || n >= sizeof line - 1) break;
  }
  if (send(line, n) < 0) return 0x26;
  printf("virtio_console: echoed %u bytes\n", n - 6);
  return 0;
}
