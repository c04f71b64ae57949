#include "vdrv.h"

static uint8_t pool[2u << 20] __attribute__((aligned(4096)));
static uint64_t pool_used;

void* vmem_alloc(uint64_t size, uint64_t align) {
  uint64_t at = (pool_used + align - 1) & ~(align - 1);
  if (at + size > sizeof pool) {
    printf("vdrv: out of pool memory\n");
    debug_exit(0x2f);
  }
  pool_used = at + size;
  memset(pool + at, 0, size);
  return pool + at;
}

/* ---------------------------------------------------------------- PCI */

static uint32_t pci_read32(int slot, uint8_t off) {
  outl(0xcf8, 0x80000000u | (uint32_t)slot << 11 | (off & 0xfc));
  return inl(0xcfc);
}
static void pci_write32(int slot, uint8_t off, uint32_t v) {
  outl(0xcf8, 0x80000000u | (uint32_t)slot << 11 | (off & 0xfc));
  outl(0xcfc, v);
}
static uint8_t pci_read8(int slot, uint8_t off) { return (uint8_t)(pci_read32(slot, off) >> ((off & 3) * 8)); }

static uint64_t pci_bar(int slot, int bar) {
  uint32_t lo = pci_read32(slot, (uint8_t)(0x10 + 4 * bar));
  if (lo & 1) return 0; /* I/O BAR: not used for virtio structures here */
  uint64_t a = lo & ~0xfu;
  if ((lo & 6) == 4) a |= (uint64_t)pci_read32(slot, (uint8_t)(0x14 + 4 * bar)) << 32;
  return a;
}

static int pci_find(struct vdev* d, uint32_t type, unsigned* nth) {
  for (int slot = 0; slot < 32; slot++) {
    uint32_t id = pci_read32(slot, 0);
    if ((id & 0xffff) != 0x1af4 || (id >> 16) != 0x1040 + type) continue;
    if ((*nth)-- != 0) continue;
    d->transport = VDRV_PCI;
    d->type = type;
    d->pci_slot = slot;
    /* Memory decode + bus master on (firmware usually did it already). */
    uint32_t cmd = pci_read32(slot, 4);
    pci_write32(slot, 4, (cmd & 0xffff) | 0x6);
    for (uint8_t p = pci_read8(slot, 0x34); p; p = pci_read8(slot, (uint8_t)(p + 1))) {
      if (pci_read8(slot, p) != 0x09) continue;
      uint8_t cfg_type = pci_read8(slot, (uint8_t)(p + 3));
      uint8_t bar = pci_read8(slot, (uint8_t)(p + 4));
      uint32_t off = pci_read32(slot, (uint8_t)(p + 8));
      if (bar > 5) continue;
      uint64_t addr = pci_bar(slot, bar) + off;
      if (cfg_type == 1 && !d->common) d->common = addr;
      if (cfg_type == 2 && !d->notify) {
        d->notify = addr;
        d->notify_mult = pci_read32(slot, (uint8_t)(p + 16));
      }
      if (cfg_type == 3 && !d->isr) d->isr = addr;
      if (cfg_type == 4 && !d->devcfg) d->devcfg = addr;
    }
    if (!d->common || !d->notify) {
      printf("vdrv: pci slot %d: virtio capabilities missing\n", slot);
      return -1;
    }
    return 0;
  }
  return -1;
}

/* ---------------------------------------------------------------- MMIO */

static uint64_t parse_num(const char** s) {
  uint64_t v = 0;
  const char* p = *s;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    p += 2;
    for (;; p++) {
      char c = *p;
      if (c >= '0' && c <= '9') v = v * 16 + (uint64_t)(c - '0');
      else if (c >= 'a' && c <= 'f') v = v * 16 + (uint64_t)(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v = v * 16 + (uint64_t)(c - 'A' + 10);
      else break;
    }
  } else {
    while (*p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
  }
  *s = p;
  return v;
}

static int mmio_find(struct vdev* d, uint32_t type, unsigned* nth) {
  static const char key[] = "virtio_mmio.device=";
  const char* c = cmdline();
  for (const char* p = c; *p; p++) {
    if ((p != c && p[-1] != ' ') || strncmp(p, key, sizeof key - 1) != 0) continue;
    const char* q = p + sizeof key - 1;
    parse_num(&q); /* size */
    if (*q == 'K' || *q == 'k' || *q == 'M') q++;
    if (*q++ != '@') continue;
    uint64_t base = parse_num(&q);
    if (mmio_read32(base) != 0x74726976 || mmio_read32(base + 4) != 2) continue;
    if (mmio_read32(base + 8) != type) continue;
    if ((*nth)-- != 0) continue;
    d->transport = VDRV_MMIO;
    d->type = type;
    d->base = base;
    return 0;
  }
  return -1;
}

int vdev_find(struct vdev* d, uint32_t type, unsigned nth) {
  memset(d, 0, sizeof *d);
  if (pci_find(d, type, &nth) == 0) return 0;
  memset(d, 0, sizeof *d);
  return mmio_find(d, type, &nth);
}

/* ---------------------------------------------------------------- common operations */

uint8_t vdev_status(struct vdev* d) {
  return d->transport == VDRV_PCI ? mmio_read8(d->common + 20) : (uint8_t)mmio_read32(d->base + 0x70);
}
void vdev_set_status(struct vdev* d, uint8_t s) {
  if (d->transport == VDRV_PCI) mmio_write8(d->common + 20, s);
  else mmio_write32(d->base + 0x70, s);
}

uint64_t vdev_offered(struct vdev* d) {
  uint64_t f;
  if (d->transport == VDRV_PCI) {
    mmio_write32(d->common + 0, 0);
    f = mmio_read32(d->common + 4);
    mmio_write32(d->common + 0, 1);
    f |= (uint64_t)mmio_read32(d->common + 4) << 32;
  } else {
    mmio_write32(d->base + 0x14, 0);
    f = mmio_read32(d->base + 0x10);
    mmio_write32(d->base + 0x14, 1);
    f |= (uint64_t)mmio_read32(d->base + 0x10) << 32;
  }
  return f;
}

int vdev_begin(struct vdev* d, uint64_t want) {
  vdev_set_status(d, 0);
  while (vdev_status(d) != 0) cpu_relax();
  vdev_set_status(d, VSTAT_ACK);
  vdev_set_status(d, VSTAT_ACK | VSTAT_DRIVER);
  uint64_t f = (vdev_offered(d) & want) | (1ull << VIRTIO_F_VERSION_1);
  if (d->transport == VDRV_PCI) {
    mmio_write32(d->common + 8, 0);
    mmio_write32(d->common + 12, (uint32_t)f);
    mmio_write32(d->common + 8, 1);
    mmio_write32(d->common + 12, (uint32_t)(f >> 32));
  } else {
    mmio_write32(d->base + 0x24, 0);
    mmio_write32(d->base + 0x20, (uint32_t)f);
    mmio_write32(d->base + 0x24, 1);
    mmio_write32(d->base + 0x20, (uint32_t)(f >> 32));
  }
  vdev_set_status(d, VSTAT_ACK | VSTAT_DRIVER | VSTAT_FEATURES_OK);
  if (!(vdev_status(d) & VSTAT_FEATURES_OK)) return -1;
  d->features = f;
  return 0;
}

void vdev_ready(struct vdev* d) { vdev_set_status(d, VSTAT_ACK | VSTAT_DRIVER | VSTAT_FEATURES_OK | VSTAT_DRIVER_OK); }

int vq_init(struct vdev* d, struct vq* q, uint16_t index, uint16_t size) {
  memset(q, 0, sizeof *q);
  q->d = d;
  q->index = index;
  uint16_t max;
  if (d->transport == VDRV_PCI) {
    mmio_write16(d->common + 22, index);
    max = mmio_read16(d->common + 24);
  } else {
    mmio_write32(d->base + 0x30, index);
    max = (uint16_t)mmio_read32(d->base + 0x34);
  }
  if (max == 0) return -1;
  if (size > max) size = max;
  q->size = size;
  q->desc = vmem_alloc(16ull * size, 4096);
  q->avail = vmem_alloc(6 + 2ull * size, 4096);
  q->used = vmem_alloc(6 + 8ull * size, 4096);
  uint64_t da = (uint64_t)(uintptr_t)q->desc, aa = (uint64_t)(uintptr_t)q->avail, ua = (uint64_t)(uintptr_t)q->used;
  if (d->transport == VDRV_PCI) {
    mmio_write16(d->common + 24, size);
    mmio_write32(d->common + 32, (uint32_t)da);
    mmio_write32(d->common + 36, (uint32_t)(da >> 32));
    mmio_write32(d->common + 40, (uint32_t)aa);
    mmio_write32(d->common + 44, (uint32_t)(aa >> 32));
    mmio_write32(d->common + 48, (uint32_t)ua);
    mmio_write32(d->common + 52, (uint32_t)(ua >> 32));
    uint16_t off = mmio_read16(d->common + 30);
    q->notify_addr = d->notify + (uint64_t)off * d->notify_mult;
    mmio_write16(d->common + 28, 1);
  } else {
    mmio_write32(d->base + 0x38, size);
    mmio_write32(d->base + 0x80, (uint32_t)da);
    mmio_write32(d->base + 0x84, (uint32_t)(da >> 32));
    mmio_write32(d->base + 0x90, (uint32_t)aa);
    mmio_write32(d->base + 0x94, (uint32_t)(aa >> 32));
    mmio_write32(d->base + 0xa0, (uint32_t)ua);
    mmio_write32(d->base + 0xa4, (uint32_t)(ua >> 32));
    mmio_write32(d->base + 0x44, 1);
    q->notify_addr = d->base + 0x50;
  }
  return 0;
}

uint8_t vdev_cfg8(struct vdev* d, uint32_t off) {
  return d->transport == VDRV_PCI ? mmio_read8(d->devcfg + off) : mmio_read8(d->base + 0x100 + off);
}
uint16_t vdev_cfg16(struct vdev* d, uint32_t off) {
  return d->transport == VDRV_PCI ? mmio_read16(d->devcfg + off) : mmio_read16(d->base + 0x100 + off);
}
uint32_t vdev_cfg32(struct vdev* d, uint32_t off) {
  return d->transport == VDRV_PCI ? mmio_read32(d->devcfg + off) : mmio_read32(d->base + 0x100 + off);
}
uint64_t vdev_cfg64(struct vdev* d, uint32_t off) {
  return vdev_cfg32(d, off) | (uint64_t)vdev_cfg32(d, off + 4) << 32;
}
void vdev_cfg_write32(struct vdev* d, uint32_t off, uint32_t v) {
  if (d->transport == VDRV_PCI) mmio_write32(d->devcfg + off, v);
  else mmio_write32(d->base + 0x100 + off, v);
}

void vq_publish(struct vq* q, uint16_t head) {
  q->avail[2 + q->avail_idx % q->size] = head;
  mb();
  q->avail_idx++;
  q->avail[1] = q->avail_idx;
  mb();
}

int vq_add(struct vq* q, const struct vbuf* bufs, int n) {
  uint16_t head = q->next_desc;
  for (int i = 0; i < n; i++) {
    uint16_t at = (uint16_t)((head + i) % q->size);
    q->desc[at].addr = bufs[i].addr;
    q->desc[at].len = bufs[i].len;
    q->desc[at].flags = (uint16_t)((bufs[i].writable ? VDESC_WRITE : 0) | (i + 1 < n ? VDESC_NEXT : 0));
    q->desc[at].next = (uint16_t)((at + 1) % q->size);
  }
  q->next_desc = (uint16_t)((head + n) % q->size);
  vq_publish(q, head);
  return head;
}

void vq_kick(struct vq* q) {
  if (q->d->transport == VDRV_PCI) mmio_write16(q->notify_addr, q->index);
  else mmio_write32(q->notify_addr, q->index);
}

int vq_wait(struct vq* q, uint32_t* len, uint64_t timeout_mcycles) {
  uint64_t end = rdtsc() + timeout_mcycles * 1000000ull;
  volatile uint16_t* used_idx = (volatile uint16_t*)(q->used + 2);
  while (*used_idx == q->last_used) {
    if (rdtsc() > end) return -1;
    cpu_relax();
  }
  mb();
  volatile uint32_t* e = (volatile uint32_t*)(q->used + 4 + 8 * (q->last_used % q->size));
  int id = (int)e[0];
  if (len) *len = e[1];
  q->last_used++;
  return id;
}

int vq_call(struct vq* q, const struct vbuf* bufs, int n, uint32_t* len) {
  vq_add(q, bufs, n);
  vq_kick(q);
  return vq_wait(q, len, VDRV_TIMEOUT);
}

void hexdump_line(const char* prefix, const uint8_t* p, unsigned n) {
  char line[200];
  unsigned o = 0;
  for (unsigned i = 0; i < n && o + 3 < sizeof line; i++) o += (unsigned)snprintf(line + o, sizeof line - o, "%02x", p[i]);
  line[o] = 0;
  printf("%s%s\n", prefix, line);
}
