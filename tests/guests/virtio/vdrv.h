/* vdrv: a small polling virtio 1.x driver for Vireo test guests. Finds devices on PCI (CF8/CFC scan,
 * modern virtio-pci capabilities; BARs as the VMM/firmware placed them) or virtio-mmio (announced on the
 * command line as virtio_mmio.device=SIZE@ADDR:IRQ), negotiates features, sets up split queues from a
 * static pool, submits descriptor chains and polls the used ring. No interrupts. */
#ifndef VDRV_H
#define VDRV_H
#include "runtime/guest.h"

#define VDRV_PCI 1
#define VDRV_MMIO 2

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VSTAT_ACK 1
#define VSTAT_DRIVER 2
#define VSTAT_DRIVER_OK 4
#define VSTAT_FEATURES_OK 8
#define VSTAT_NEEDS_RESET 64
#define VSTAT_FAILED 128

#define VDESC_NEXT 1
#define VDESC_WRITE 2
#define VDESC_INDIRECT 4

struct vdesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct vdev {
  int transport;
  uint32_t type;
  int pci_slot;
  uint64_t base;                               /* mmio window */
  uint64_t common, notify, isr, devcfg;        /* pci: absolute addresses */
  uint32_t notify_mult;
  uint64_t features;                           /* negotiated */
};

struct vq {
  struct vdev* d;
  uint16_t index, size;
  volatile struct vdesc* desc;
  volatile uint16_t* avail; /* [0]=flags [1]=idx [2..]=ring, then used_event */
  volatile uint8_t* used;   /* flags, idx, {id,len}[], avail_event */
  uint16_t avail_idx, last_used, next_desc;
  uint64_t notify_addr;
};

struct vbuf {
  uint64_t addr;
  uint32_t len;
  int writable;
};

/* Bump allocator over a static pool (zeroed memory, identity-mapped). */
void* vmem_alloc(uint64_t size, uint64_t align);

/* Finds the nth (0-based) device of `type`: PCI first, then virtio-mmio from the cmdline. 0 or -1. */
int vdev_find(struct vdev* d, uint32_t type, unsigned nth);
/* Reset, ACK|DRIVER, accept (offered & want) | VERSION_1, FEATURES_OK. 0, or -1 if refused. */
int vdev_begin(struct vdev* d, uint64_t want);
uint64_t vdev_offered(struct vdev* d);
/* Queue `index` with `size` entries (capped at the device's maximum). 0 or -1. */
int vq_init(struct vdev* d, struct vq* q, uint16_t index, uint16_t size);
void vdev_ready(struct vdev* d); /* DRIVER_OK */
uint8_t vdev_status(struct vdev* d);
void vdev_set_status(struct vdev* d, uint8_t s);
uint8_t vdev_cfg8(struct vdev* d, uint32_t off);
uint16_t vdev_cfg16(struct vdev* d, uint32_t off);
uint32_t vdev_cfg32(struct vdev* d, uint32_t off);
uint64_t vdev_cfg64(struct vdev* d, uint32_t off);
void vdev_cfg_write32(struct vdev* d, uint32_t off, uint32_t v);

/* Builds a chain from bufs (readable ones first), makes it available (no kick). Returns the head. */
int vq_add(struct vq* q, const struct vbuf* bufs, int n);
void vq_kick(struct vq* q);
/* Waits for the next used element (polling, up to timeout_mcycles million TSC cycles). Returns its id and
 * stores the written length, or -1 on timeout. */
int vq_wait(struct vq* q, uint32_t* len, uint64_t timeout_mcycles);
/* vq_add + kick + wait. */
int vq_call(struct vq* q, const struct vbuf* bufs, int n, uint32_t* len);
/* Raw access for malformed-chain tests. */
void vq_publish(struct vq* q, uint16_t head);

/* Little helpers for guests. */
void hexdump_line(const char* prefix, const uint8_t* p, unsigned n);
#define VDRV_TIMEOUT 20000 /* million cycles */
#endif
