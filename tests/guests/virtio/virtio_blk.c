/* virtio_blk: exercises the first virtio-blk device (PCI or MMIO). cmdline mode=
 *   pattern (default): write `sectors=` (128) sectors from `start=` (8) with a pattern (`seed=`), flush, read
 *            back and compare. Lines: "virtio_blk: capacity=N transport=pci|mmio", "virtio_blk: wrote N
 *            sectors at S", "virtio_blk: flush ok", "virtio_blk: readback ok". Exit 0, or 0x20.
 *   errors:  GET_ID ("virtio_blk: serial=..."), read past the end -> IOERR, unknown type -> UNSUPP, discard,
 *            write-zeroes (reads back zeroes), flush -> OK. "virtio_blk: errors ok". Exit 0, or 0x21.
 *   readonly: RO feature offered; write, write-zeroes -> IOERR; discard -> IOERR or OK ("virtio_blk: readonly
 *            discard status=N"); read -> OK. "virtio_blk: readonly ok".
 *            Exit 0, or 0x22.
 *   malformed: submits a looping chain; expects DEVICE_NEEDS_RESET, then reads bytes from virtio-rng to show
 *            other devices still work. "virtio_blk: device needs reset", "virtio_blk: rng still works".
 *            Exit 0, or 0x23.
 *   bench:   `iops_reqs=` 4 KiB random reads and `seq_mib=` MiB of 1 MiB sequential writes then reads, with
 *            `depth=` requests in flight; prints TSC cycle counts per phase (see bench/virtio). Exit 0. */
#include "vdrv.h"

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define F_RO 5
#define F_BLK_SIZE 6
#define F_FLUSH 9
#define F_DISCARD 13
#define F_WRITE_ZEROES 14

struct req_hdr {
  uint32_t type, reserved;
  uint64_t sector;
};

static struct vdev dev;
static struct vq q;
static struct req_hdr* hdr;
static uint8_t* status;
static uint8_t* data;
#define DATA_BYTES (1u << 20)

static int request(uint32_t type, uint64_t sector, void* buf, uint32_t len, int device_writes) {
  hdr->type = type;
  hdr->reserved = 0;
  hdr->sector = sector;
  *status = 0xee;
  struct vbuf b[3];
  int n = 0;
  b[n++] = (struct vbuf){(uint64_t)(uintptr_t)hdr, sizeof *hdr, 0};
  if (len) b[n++] = (struct vbuf){(uint64_t)(uintptr_t)buf, len, device_writes};
  b[n++] = (struct vbuf){(uint64_t)(uintptr_t)status, 1, 1};
  uint32_t used;
  if (vq_call(&q, b, n, &used) < 0) {
    printf("virtio_blk: request type %u timed out\n", type);
    return -1;
  }
  return *status;
}

static uint8_t pattern_byte(uint64_t off, uint64_t seed) { return (uint8_t)((off * 131 + seed) ^ (off >> 9)); }

static int mode_pattern(void) {
  uint64_t sectors = cmdline_u64("sectors", 128), start = cmdline_u64("start", 8), seed = cmdline_u64("seed", 1);
  for (uint64_t s = 0; s < sectors; s += 8) {
    uint32_t n = (uint32_t)((sectors - s < 8 ? sectors - s : 8) * 512);
    for (uint32_t i = 0; i < n; i++) data[i] = pattern_byte((start + s) * 512 + i, seed);
    if (request(T_OUT, start + s, data, n, 0) != 0) {
      printf("virtio_blk: write at sector %lu failed\n", start + s);
      return 0x20;
    }
  }
  printf("virtio_blk: wrote %lu sectors at %lu\n", sectors, start);
  if ((dev.features & (1ull << F_FLUSH)) && request(T_FLUSH, 0, 0, 0, 0) != 0) return 0x20;
  printf("virtio_blk: flush ok\n");
  for (uint64_t s = 0; s < sectors; s += 8) {
    uint32_t n = (uint32_t)((sectors - s < 8 ? sectors - s : 8) * 512);
    memset(data, 0, n);
    if (request(T_IN, start + s, data, n, 1) != 0) return 0x20;
    for (uint32_t i = 0; i < n; i++) {
      if (data[i] != pattern_byte((start + s) * 512 + i, seed)) {
        printf("virtio_blk: mismatch at byte %lu\n", (start + s) * 512 + i);
        return 0x20;
      }
    }
  }
  printf("virtio_blk: readback ok\n");
  return 0;
}

static int expect(const char* what, int got, int want) {
  if (got == want) return 0;
  printf("virtio_blk: %s: status %d, expected %d\n", what, got, want);
  return 1;
}

static int mode_errors(void) {
  int bad = 0;
  memset(data, 0, 32);
  bad |= expect("get_id", request(T_GET_ID, 0, data, 20, 1), 0);
  data[20] = 0;
  printf("virtio_blk: serial=%s\n", (char*)data);
  uint64_t cap = vdev_cfg64(&dev, 0);
  bad |= expect("read past end", request(T_IN, cap, data, 512, 1), 1);
  bad |= expect("unknown type", request(0x7f, 0, data, 512, 1), 2);
  bad |= expect("flush", request(T_FLUSH, 0, 0, 0, 0), 0);
  struct {
    uint64_t sector;
    uint32_t num, flags;
  } seg = {16, 8, 0};
  if (dev.features & (1ull << F_DISCARD)) bad |= expect("discard", request(T_DISCARD, 0, &seg, sizeof seg, 0), 0);
  if (dev.features & (1ull << F_WRITE_ZEROES)) {
    memset(data, 0xff, 4096);
    bad |= expect("write", request(T_OUT, 32, data, 4096, 0), 0);
    seg.sector = 32;
    seg.flags = 1;
    bad |= expect("write-zeroes", request(T_WRITE_ZEROES, 0, &seg, sizeof seg, 0), 0);
    bad |= expect("read zeroes", request(T_IN, 32, data, 4096, 1), 0);
    for (int i = 0; i < 4096; i++)
      if (data[i]) {
        printf("virtio_blk: write-zeroes left byte %d = %d\n", i, data[i]);
        bad = 1;
        break;
      }
  }
  if (bad) return 0x21;
  printf("virtio_blk: errors ok\n");
  return 0;
}

static int mode_readonly(void) {
  int bad = 0;
  if (!(vdev_offered(&dev) & (1ull << F_RO))) {
    printf("virtio_blk: RO feature not offered\n");
    bad = 1;
  }
  memset(data, 0x5a, 512);
  bad |= expect("write", request(T_OUT, 0, data, 512, 0), 1);
  struct {
    uint64_t sector;
    uint32_t num, flags;
  } seg = {0, 8, 0};
  if (dev.features & (1ull << F_DISCARD)) {
    /* Discard is a hint: a device may fail it (IOERR, as Vireo does) or ignore it (OK, as QEMU does). */
    int st = request(T_DISCARD, 0, &seg, sizeof seg, 0);
    printf("virtio_blk: readonly discard status=%d\n", st);
    if (st != 0 && st != 1) bad = 1;
  }
  if (dev.features & (1ull << F_WRITE_ZEROES)) bad |= expect("write-zeroes", request(T_WRITE_ZEROES, 0, &seg, sizeof seg, 0), 1);
  bad |= expect("read", request(T_IN, 0, data, 512, 1), 0);
  if (bad) return 0x22;
  printf("virtio_blk: readonly ok\n");
  return 0;
}

static int mode_malformed(void) {
  /* Descriptor 0 -> 1 -> 0: a loop. */
  q.desc[0].addr = (uint64_t)(uintptr_t)hdr;
  q.desc[0].len = 16;
  q.desc[0].flags = VDESC_NEXT;
  q.desc[0].next = 1;
  q.desc[1].addr = (uint64_t)(uintptr_t)data;
  q.desc[1].len = 512;
  q.desc[1].flags = VDESC_NEXT;
  q.desc[1].next = 0;
  vq_publish(&q, 0);
  vq_kick(&q);
  uint64_t end = rdtsc() + VDRV_TIMEOUT * 1000000ull;
  while (!(vdev_status(&dev) & VSTAT_NEEDS_RESET)) {
    if (rdtsc() > end) {
      printf("virtio_blk: device did not report NEEDS_RESET\n");
      return 0x23;
    }
    cpu_relax();
  }
  printf("virtio_blk: device needs reset\n");
  struct vdev rng;
  struct vq rq;
  if (vdev_find(&rng, 4, 0) != 0 || vdev_begin(&rng, 0) != 0 || vq_init(&rng, &rq, 0, 8) != 0) {
    printf("virtio_blk: no rng device\n");
    return 0x23;
  }
  vdev_ready(&rng);
  memset(data, 0, 64);
  struct vbuf b = {(uint64_t)(uintptr_t)data, 64, 1};
  uint32_t len = 0;
  if (vq_call(&rq, &b, 1, &len) < 0 || len == 0) {
    printf("virtio_blk: rng did not answer\n");
    return 0x23;
  }
  printf("virtio_blk: rng still works\n");
  /* And the broken device recovers after a reset. */
  if (vdev_begin(&dev, 0) != 0 || vq_init(&dev, &q, 0, 64) != 0) return 0x23;
  vdev_ready(&dev);
  if (request(T_IN, 0, data, 512, 1) != 0) return 0x23;
  printf("virtio_blk: reset recovers the device\n");
  return 0;
}

/* Benchmark: `depth` requests in flight, each with its own header/status/buffer slot. */
static uint64_t lcg = 88172645463325252ull;
static uint64_t rnd(void) {
  lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
  return lcg >> 17;
}

static uint64_t run_phase(uint32_t type, uint64_t reqs, uint32_t bytes, int random, uint64_t cap_sectors, unsigned depth) {
  static struct req_hdr* hdrs;
  static uint8_t* stats;
  if (!hdrs) {
    hdrs = vmem_alloc(sizeof(struct req_hdr) * 64, 64);
    stats = vmem_alloc(64, 64);
  }
  uint64_t span = bytes / 512, next_seq = 0, issued = 0, done = 0;
  uint64_t t0 = rdtsc();
  while (done < reqs) {
    while (issued < reqs && issued - done < depth) {
      unsigned slot = (unsigned)(issued % depth);
      uint64_t sector;
      if (random) sector = (rnd() % (cap_sectors / span)) * span;
      else {
        sector = next_seq;
        next_seq = (next_seq + span) % (cap_sectors - cap_sectors % span);
      }
      hdrs[slot] = (struct req_hdr){type, 0, sector};
      struct vbuf b[3] = {{(uint64_t)(uintptr_t)&hdrs[slot], 16, 0},
                          {(uint64_t)(uintptr_t)data + (uint64_t)slot * bytes % DATA_BYTES, bytes, type == T_IN},
                          {(uint64_t)(uintptr_t)&stats[slot], 1, 1}};
      vq_add(&q, b, 3);
      issued++;
      if (issued - done == depth || issued == reqs) vq_kick(&q);
    }
    if (vq_wait(&q, 0, VDRV_TIMEOUT) < 0) {
      printf("virtio_blk: bench request timed out\n");
      debug_exit(0x20);
    }
    done++;
  }
  return rdtsc() - t0;
}

static int mode_bench(void) {
  uint64_t cap = vdev_cfg64(&dev, 0);
  unsigned depth = (unsigned)cmdline_u64("depth", 8);
  if (depth > 16) depth = 16;
  uint64_t iops_reqs = cmdline_u64("iops_reqs", 20000), seq_mib = cmdline_u64("seq_mib", 64);
  /* Boot markers 0x20/0x21, 0x22/0x23, 0x24/0x25 bracket the phases (vireo-vmm timestamps them). */
  boot_marker(0x20);
  uint64_t c_rand = run_phase(T_IN, iops_reqs, 4096, 1, cap, depth);
  boot_marker(0x21);
  boot_marker(0x22);
  uint64_t c_seqw = run_phase(T_OUT, seq_mib, 1 << 20, 0, cap, depth > 4 ? 4 : depth);
  boot_marker(0x23);
  boot_marker(0x24);
  uint64_t c_seqr = run_phase(T_IN, seq_mib, 1 << 20, 0, cap, depth > 4 ? 4 : depth);
  boot_marker(0x25);
  printf("virtio_blk: bench randread4k reqs=%lu cycles=%lu\n", iops_reqs, c_rand);
  printf("virtio_blk: bench seqwrite1m mib=%lu cycles=%lu\n", seq_mib, c_seqw);
  printf("virtio_blk: bench seqread1m mib=%lu cycles=%lu\n", seq_mib, c_seqr);
  return 0;
}

int guest_main(void) {
  if (vdev_find(&dev, 2, 0) != 0) {
    printf("virtio_blk: no virtio-blk device\n");
    return 0x20;
  }
  uint64_t want = (1ull << F_FLUSH) | (1ull << F_DISCARD) | (1ull << F_WRITE_ZEROES) | (1ull << F_BLK_SIZE) |
                  (1ull << F_RO);
  if (vdev_begin(&dev, want) != 0 || vq_init(&dev, &q, 0, 64) != 0) {
    printf("virtio_blk: device refused set-up\n");
    return 0x20;
  }
  vdev_ready(&dev);
  hdr = vmem_alloc(sizeof *hdr, 16);
  status = vmem_alloc(1, 1);
  data = vmem_alloc(DATA_BYTES, 4096);
  printf("virtio_blk: capacity=%lu transport=%s\n", vdev_cfg64(&dev, 0), dev.transport == VDRV_PCI ? "pci" : "mmio");
  if (cmdline_has("mode=errors")) return mode_errors();
  if (cmdline_has("mode=readonly")) return mode_readonly();
  if (cmdline_has("mode=malformed")) return mode_malformed();
  if (cmdline_has("mode=bench")) return mode_bench();
  return mode_pattern();
}
