/* raw_kvm_loop: the lower bound for exit-dispatch cost. A minimal KVM_RUN loop with one vCPU in 64-bit long
 * mode (identity-mapped low 4 GiB, U/S=1 page tables, like vireo-vmm's test-guest entry) running
 *   pio:  N x `out %eax, $0x510`     (each a KVM_EXIT_IO to this program)
 *   mmio: N x `mov %eax, 0xd0000000` (each a KVM_EXIT_MMIO)
 * bracketed by writes to port 0x80 that this program timestamps. On a PVM host the vCPU is switched to
 * native mode exactly as vireo-vmm does; the VM has an in-kernel irqchip as vireo-vmm's does (MSR 0x4b564d10 bit 0 when MSR 0x4b564d11 reads "PVM").
 * Usage: raw_kvm_loop pio|mmio N   -> prints "raw <mode> n=N ns_per_exit=X pvm=<native|no>" */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define DIE(...) do { fprintf(stderr, "raw_kvm_loop: " __VA_ARGS__); fprintf(stderr, ": %s\n", strerror(errno)); exit(1); } while (0)

static const uint8_t code_pio[] = {0x66, 0xba, 0x80, 0x00, 0xee, 0x66, 0xba, 0x10, 0x05, 0xef, 0x48, 0xff, 0xcb,
                                   0x75, 0xfa, 0x66, 0xba, 0x80, 0x00, 0xee, 0x66, 0xba, 0x01, 0x05, 0xee, 0xf4};
static const uint8_t code_mmio[] = {0x66, 0xba, 0x80, 0x00, 0xee, 0x89, 0x06, 0x48, 0xff, 0xcb, 0x75, 0xf9,
                                    0x66, 0xba, 0x80, 0x00, 0xee, 0x66, 0xba, 0x01, 0x05, 0xee, 0xf4};

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* struct kvm_msrs with one entry, laid out by hand (the C header is fine in C, this is just explicit). */
struct one_msr {
  uint32_t nmsrs, pad;
  struct kvm_msr_entry e;
};

int main(int argc, char** argv) {
  if (argc != 3 || (strcmp(argv[1], "pio") && strcmp(argv[1], "mmio"))) {
    fprintf(stderr, "usage: raw_kvm_loop pio|mmio N\n");
    return 2;
  }
  const int mmio = !strcmp(argv[1], "mmio");
  const uint64_t n = strtoull(argv[2], NULL, 0);
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) DIE("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) DIE("KVM_CREATE_VM");
  /* Same VM shape as vireo-vmm (in-kernel irqchip), so only the userspace exit path differs. */
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) DIE("KVM_CREATE_IRQCHIP");
  const size_t msz = 2 << 20;
  uint8_t* mem = mmap(NULL, msz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) DIE("mmap");
  uint64_t* pml4 = (uint64_t*)(mem + 0x1000);
  uint64_t* pdpt = (uint64_t*)(mem + 0x2000);
  pml4[0] = 0x2000 | 7;
  for (int j = 0; j < 4; j++) {
    uint64_t* pd = (uint64_t*)(mem + 0x3000 + j * 0x1000);
    pdpt[j] = (0x3000 + j * 0x1000) | 7;
    for (int i = 0; i < 512; i++) pd[i] = ((uint64_t)j << 30) | ((uint64_t)i << 21) | 0x87;
  }
  memcpy(mem + 0x10000, mmio ? code_mmio : code_pio, mmio ? sizeof code_mmio : sizeof code_pio);
  struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = msz,
                                          .userspace_addr = (uint64_t)(uintptr_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) DIE("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) DIE("KVM_CREATE_VCPU");
  int run_sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run* run = mmap(NULL, (size_t)run_sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) DIE("mmap kvm_run");

  struct kvm_sregs s;
  if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0) DIE("KVM_GET_SREGS");
  struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 0x10, .present = 1, .type = 11, .dpl = 0,
                           .db = 0, .s = 1, .l = 1, .g = 1};
  struct kvm_segment ds = cs;
  ds.type = 3;
  ds.selector = 0x18;
  ds.l = 0;
  ds.db = 1;
  s.cs = cs;
  s.ds = s.es = s.fs = s.gs = s.ss = ds;
  s.cr3 = 0x1000;
  s.cr4 = 0x20;
  s.cr0 = 0x80050033;
  s.efer = 0xd01;
  if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0) DIE("KVM_SET_SREGS");
  struct kvm_regs g = {.rip = 0x10000, .rflags = 2, .rsp = 0x8000, .rbx = n, .rsi = 0xd0000000};
  if (ioctl(vcpu, KVM_SET_REGS, &g) < 0) DIE("KVM_SET_REGS");

  const char* pvm = "no";
  struct one_msr m = {.nmsrs = 1, .e = {.index = 0x4b564d11}};
  if (ioctl(vcpu, KVM_GET_MSRS, &m) == 1 && m.e.data == 0x4d5650) {
    struct one_msr w = {.nmsrs = 1, .e = {.index = 0x4b564d10, .data = 1}};
    if (ioctl(vcpu, KVM_SET_MSRS, &w) != 1) DIE("KVM_SET_MSRS (PVM native)");
    pvm = "native";
  }

  uint64_t t_start = 0, t_end = 0, exits = 0;
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      DIE("KVM_RUN");
    }
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x80) {
      if (!t_start) t_start = now_ns();
      else t_end = now_ns();
      continue;
    }
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x501) break;
    if (run->exit_reason == KVM_EXIT_IO || run->exit_reason == KVM_EXIT_MMIO) {
      exits++;
      continue;
    }
    fprintf(stderr, "raw_kvm_loop: unexpected exit %u\n", run->exit_reason);
    return 1;
  }
  if (exits != n || !t_end) {
    fprintf(stderr, "raw_kvm_loop: saw %llu exits, expected %llu\n", (unsigned long long)exits, (unsigned long long)n);
    return 1;
  }
  printf("raw %s n=%llu ns_per_exit=%.1f pvm=%s\n", argv[1], (unsigned long long)n,
         (double)(t_end - t_start) / (double)n, pvm);
  return 0;
}
