/* virtio_net: ARP + ICMP echo with a host peer. cmdline ip=A.B.C.D (10.0.2.15) peer=A.B.C.D (10.0.2.2)
 * count=N (3 echo requests). Answers ARP requests for its own address. Lines: "virtio_net: transport=...
 * mac=xx:..", "virtio_net: arp reply from <mac>", "virtio_net: echo reply seq=N" (per request),
 * "virtio_net: ok". Exit 0, or 0x25 (no device / timeout).
 * flood=N (benchmark): after ARP, sends N UDP datagrams of 1472 payload bytes to peer port 9 with up to 16
 * in flight, between boot markers 0x30/0x31; prints "virtio_net: flood packets=N bytes=B cycles=C". */
#include "vdrv.h"

#define F_MAC 5
#define HDR 12
#define RXBUF 2048
#define NRX 16

static struct vdev d;
static struct vq rxq, txq;
static uint8_t mac[6], peer_mac[6];
static uint32_t my_ip, peer_ip; /* network byte order as bytes in memory */
static uint8_t* rxbufs;
static uint8_t* txbuf;

static uint32_t parse_ip(const char* key, uint32_t def) {
  const char* c = cmdline();
  unsigned kl = (unsigned)strlen(key);
  for (const char* p = c; *p; p++) {
    if ((p != c && p[-1] != ' ') || strncmp(p, key, kl) || p[kl] != '=') continue;
    p += kl + 1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
      uint32_t o = 0;
      while (*p >= '0' && *p <= '9') o = o * 10 + (uint32_t)(*p++ - '0');
      v |= (o & 0xff) << (8 * i);
      if (*p == '.') p++;
    }
    return v;
  }
  return def;
}

static uint16_t csum(const uint8_t* p, unsigned n) {
  uint32_t s = 0;
  for (unsigned i = 0; i + 1 < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) s += (uint32_t)p[n - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

static void post_rx(uint16_t i) {
  struct vbuf b = {(uint64_t)(uintptr_t)(rxbufs + (uint64_t)i * RXBUF), RXBUF, 1};
  vq_add(&rxq, &b, 1);
}

static int send_frame(const uint8_t* frame, unsigned len) {
  memset(txbuf, 0, HDR);
  memcpy(txbuf + HDR, frame, len);
  if (len < 60) {
    memset(txbuf + HDR + len, 0, 60 - len);
    len = 60;
  }
  struct vbuf b = {(uint64_t)(uintptr_t)txbuf, HDR + len, 0};
  return vq_call(&txq, &b, 1, 0);
}

static void eth_header(uint8_t* f, const uint8_t* dst, uint16_t type) {
  memcpy(f, dst, 6);
  memcpy(f + 6, mac, 6);
  f[12] = (uint8_t)(type >> 8);
  f[13] = (uint8_t)type;
}

static int send_arp(uint16_t op, const uint8_t* dst_mac, const uint8_t* target_mac, uint32_t target_ip) {
  uint8_t f[42];
  eth_header(f, dst_mac, 0x0806);
  uint8_t* a = f + 14;
  a[0] = 0, a[1] = 1, a[2] = 8, a[3] = 0, a[4] = 6, a[5] = 4, a[6] = 0, a[7] = (uint8_t)op;
  memcpy(a + 8, mac, 6);
  memcpy(a + 14, &my_ip, 4);
  memcpy(a + 18, target_mac, 6);
  memcpy(a + 24, &target_ip, 4);
  return send_frame(f, sizeof f);
}

static int send_echo(uint16_t seq) {
  uint8_t f[14 + 20 + 8 + 32];
  eth_header(f, peer_mac, 0x0800);
  uint8_t* ip = f + 14;
  memset(ip, 0, 20);
  ip[0] = 0x45;
  uint16_t tot = 20 + 8 + 32;
  ip[2] = (uint8_t)(tot >> 8), ip[3] = (uint8_t)tot;
  ip[8] = 64, ip[9] = 1;
  memcpy(ip + 12, &my_ip, 4);
  memcpy(ip + 16, &peer_ip, 4);
  uint16_t c = csum(ip, 20);
  ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
  uint8_t* icmp = ip + 20;
  memset(icmp, 0, 40);
  icmp[0] = 8;
  icmp[4] = 0x12, icmp[5] = 0x34, icmp[6] = (uint8_t)(seq >> 8), icmp[7] = (uint8_t)seq;
  for (int i = 0; i < 32; i++) icmp[8 + i] = (uint8_t)('a' + i % 26);
  c = csum(icmp, 40);
  icmp[2] = (uint8_t)(c >> 8), icmp[3] = (uint8_t)c;
  return send_frame(f, sizeof f);
}

/* Receives frames until `want` (1 = ARP reply from peer, 2 = echo reply seq) shows up. */
static int receive(int want, uint16_t seq) {
  uint64_t end = rdtsc() + VDRV_TIMEOUT * 1000000ull;
  for (;;) {
    uint64_t now = rdtsc();
    if (now > end) return -1;
    uint32_t len;
    int id = vq_wait(&rxq, &len, (end - now) / 1000000ull + 1);
    if (id < 0) return -1;
    uint8_t* f = rxbufs + (uint64_t)id * RXBUF + HDR;
    int got = 0;
    if (len >= HDR + 42 && f[12] == 0x08 && f[13] == 0x06) {
      uint8_t* a = f + 14;
      uint32_t spa, tpa;
      memcpy(&spa, a + 14, 4);
      memcpy(&tpa, a + 24, 4);
      if (a[7] == 1 && tpa == my_ip) send_arp(2, a + 8, a + 8, spa); /* who-has us: answer */
      if (a[7] == 2 && spa == peer_ip && want == 1) {
        memcpy(peer_mac, a + 8, 6);
        got = 1;
      }
    } else if (len >= HDR + 42 && f[12] == 0x08 && f[13] == 0x00 && f[14 + 9] == 1) {
      uint8_t* icmp = f + 14 + (f[14] & 0xf) * 4;
      if (want == 2 && icmp[0] == 0 && icmp[4] == 0x12 && icmp[5] == 0x34 && (icmp[6] << 8 | icmp[7]) == seq) got = 1;
    }
    post_rx((uint16_t)id);
    vq_kick(&rxq);
    if (got) return 0;
  }
}

int guest_main(void) {
  my_ip = parse_ip("ip", 0x0f02000a);
  peer_ip = parse_ip("peer", 0x0202000a);
  if (vdev_find(&d, 1, 0) != 0 || vdev_begin(&d, 1ull << F_MAC) != 0 || vq_init(&d, &rxq, 0, NRX) != 0 ||
      vq_init(&d, &txq, 1, 16) != 0) {
    printf("virtio_net: no usable virtio-net device\n");
    return 0x25;
  }
  rxbufs = vmem_alloc((uint64_t)NRX * RXBUF, 4096);
  txbuf = vmem_alloc(2048, 64);
  vdev_ready(&d);
  for (int i = 0; i < 6; i++) mac[i] = vdev_cfg8(&d, (uint32_t)i);
  for (uint16_t i = 0; i < NRX; i++) post_rx(i);
  vq_kick(&rxq);
  printf("virtio_net: transport=%s mac=%02x:%02x:%02x:%02x:%02x:%02x\n", d.transport == VDRV_PCI ? "pci" : "mmio",
         mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
  static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, zero[6] = {0};
  int ok = 0;
  for (int attempt = 0; attempt < 5 && !ok; attempt++) {
    if (send_arp(1, bcast, zero, peer_ip) < 0) break;
    ok = receive(1, 0) == 0;
  }
  if (!ok) {
    printf("virtio_net: no arp reply\n");
    return 0x25;
  }
  printf("virtio_net: arp reply from %02x:%02x:%02x:%02x:%02x:%02x\n", peer_mac[0], peer_mac[1], peer_mac[2],
         peer_mac[3], peer_mac[4], peer_mac[5]);
  uint64_t flood = cmdline_u64("flood", 0);
  if (flood) {
    /* UDP frames prepared once per slot (checksum 0 = none, legal for IPv4 UDP). */
    enum { SLOTS = 16, PAYLOAD = 1472, FRAME = 14 + 20 + 8 + PAYLOAD };
    uint8_t* slots = vmem_alloc((uint64_t)SLOTS * 2048, 4096);
    for (int i = 0; i < SLOTS; i++) {
      uint8_t* b = slots + i * 2048;
      memset(b, 0, HDR);
      uint8_t* f = b + HDR;
      eth_header(f, peer_mac, 0x0800);
      uint8_t* ip = f + 14;
      memset(ip, 0, 28);
      ip[0] = 0x45;
      uint16_t tot = 20 + 8 + PAYLOAD;
      ip[2] = (uint8_t)(tot >> 8), ip[3] = (uint8_t)tot;
      ip[8] = 64, ip[9] = 17;
      memcpy(ip + 12, &my_ip, 4);
      memcpy(ip + 16, &peer_ip, 4);
      uint16_t c = csum(ip, 20);
      ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
      uint8_t* udp = ip + 20;
      udp[0] = 0x30, udp[1] = 0x39, udp[2] = 0, udp[3] = 9;
      udp[4] = (uint8_t)((8 + PAYLOAD) >> 8), udp[5] = (uint8_t)(8 + PAYLOAD);
      memset(udp + 8, 'v', PAYLOAD);
    }
    uint64_t issued = 0, done = 0;
    boot_marker(0x30);
    uint64_t t0 = rdtsc();
    while (done < flood) {
      while (issued < flood && issued - done < SLOTS) {
        struct vbuf b = {(uint64_t)(uintptr_t)(slots + (issued % SLOTS) * 2048), HDR + FRAME, 0};
        vq_add(&txq, &b, 1);
        issued++;
      }
      vq_kick(&txq);
      if (vq_wait(&txq, 0, VDRV_TIMEOUT) < 0) {
        printf("virtio_net: flood stalled after %lu packets\n", done);
        return 0x25;
      }
      done++;
      uint32_t l;
      while (*(volatile uint16_t*)(txq.used + 2) != txq.last_used && vq_wait(&txq, &l, 1) >= 0) done++;
    }
    uint64_t cycles = rdtsc() - t0;
    boot_marker(0x31);
    printf("virtio_net: flood packets=%lu bytes=%lu cycles=%lu\n", flood, flood * (uint64_t)(FRAME), cycles);
    return 0;
  }
  uint64_t count = cmdline_u64("count", 3);
  for (uint16_t seq = 1; seq <= count; seq++) {
    if (send_echo(seq) < 0 || receive(2, seq) != 0) {
      printf("virtio_net: no echo reply seq=%u\n", seq);
      return 0x25;
    }
    printf("virtio_net: echo reply seq=%u\n", seq);
  }
  printf("virtio_net: ok\n");
  return 0;
}
