/* cpuid: prints the vendor and leaves 0, 1, 7.0, 0xd.0, 0x80000001 and the hypervisor leaf 0x40000000.
 * Lines: "cpuid: vendor=GenuineIntel", "cpuid LLLLLLLL.S: eax=XXXXXXXX ebx=XXXXXXXX ecx=XXXXXXXX edx=XXXXXXXX",
 *        "cpuid: hypervisor=KVMKVMKVM" (leaf 0x40000000 signature, empty if absent). Run it emulated on PVM:
 *        natively, CPUID returns the outer host's values. */
#include "runtime/guest.h"

static void leaf(uint32_t l, uint32_t s) {
  uint32_t r[4];
  cpuid(l, s, r);
  printf("cpuid %08x.%x: eax=%08x ebx=%08x ecx=%08x edx=%08x\n", l, s, r[0], r[1], r[2], r[3]);
}

int guest_main(void) {
  uint32_t r[4];
  char v[13];
  cpuid(0, 0, r);
  memcpy(v, &r[1], 4), memcpy(v + 4, &r[3], 4), memcpy(v + 8, &r[2], 4);
  v[12] = 0;
  printf("cpuid: vendor=%s\n", v);
  uint32_t max = r[0];
  leaf(0, 0);
  leaf(1, 0);
  if (max >= 7) leaf(7, 0);
  if (max >= 0xd) leaf(0xd, 0);
  cpuid(0x80000000, 0, r);
  if (r[0] >= 0x80000001) leaf(0x80000001, 0);
  uint32_t l1[4];
  cpuid(1, 0, l1);
  char h[13] = {0};
  if (l1[2] & (1u << 31)) {
    cpuid(0x40000000, 0, r);
    memcpy(h, &r[1], 4), memcpy(h + 4, &r[2], 4), memcpy(h + 8, &r[3], 4);
    for (int i = 0; i < 12; i++)
      if (h[i] && (h[i] < 0x20 || h[i] > 0x7e)) h[i] = '?';
    leaf(0x40000000, 0);
    leaf(0x40000001, 0);
  }
  printf("cpuid: hypervisor=%s\n", h);
  return EXIT_OK;
}
