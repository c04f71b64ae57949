/* Smallest real KVM user: a VM with one page of RAM and one vCPU running 16 bytes of real-mode code that
 * adds two registers, writes the ASCII digit of the sum to port 0x3f8, a newline, and halts. Prints every exit it
 * sees, one per line, so the test can assert the bytes that reached the port. Built and run by test_kit.py. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int die(const char *what) {
  printf("FAIL %s: %s\n", what, strerror(errno));
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s A B (single digits)\n", argv[0]);
    return 2;
  }
  const uint8_t code[16] = {
      0xba, 0xf8, 0x03, /* mov $0x3f8, %dx */
      0x00, 0xd8,       /* add %bl, %al */
      0x04, '0',        /* add $'0', %al */
      0xee,             /* out %al, (%dx) */
      0xb0, '\n',       /* mov $'\n', %al */
      0xee,             /* out %al, (%dx) */
      0xf4,             /* hlt */
      0xf4, 0xf4, 0xf4, 0xf4,
  };
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return die("open /dev/kvm");
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  printf("api %d\n", api);
  if (api != 12) return die("KVM_GET_API_VERSION");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
  if (vm < 0) return die("KVM_CREATE_VM");
  uint8_t *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return die("mmap guest memory");
  memcpy(mem, code, sizeof code);
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000, .userspace_addr = (uint64_t)(uintptr_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return die("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
  if (vcpu < 0) return die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < (int)sizeof(struct kvm_run)) return die("KVM_GET_VCPU_MMAP_SIZE");
  struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) return die("mmap kvm_run");
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return die("KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return die("KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0x1000, .rax = (uint64_t)atoi(argv[1]), .rbx = (uint64_t)atoi(argv[2]),
                          .rflags = 0x2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return die("KVM_SET_REGS");
  for (int exits = 0; exits < 16; exits++) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) return die("KVM_RUN");
    switch (run->exit_reason) {
      case KVM_EXIT_IO: {
        const uint8_t *data = (const uint8_t *)run + run->io.data_offset;
        printf("io %s port=0x%x size=%u count=%u data=0x%02x\n", run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in",
               run->io.port, run->io.size, run->io.count, data[0]);
        break;
      }
      case KVM_EXIT_HLT:
        if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0) return die("KVM_GET_REGS");
        printf("hlt rip=0x%llx\n", (unsigned long long)regs.rip);
        return 0;
      default:
        printf("FAIL unexpected exit reason %u\n", run->exit_reason);
        return 1;
    }
  }
  printf("FAIL no HLT after 16 exits\n");
  return 1;
}
