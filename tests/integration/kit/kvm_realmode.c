/* Smallest real KVM user: a VM with one page of RAM and one vCPU running 16 bytes of real-mode code that
 * adds two registers, writes the ASCII digit of the sum to port 0x3f8, a newline, and halts. Prints every exit it
 * sees, one per line, so the test can assert the bytes that reached the port. With VCPUS > 1 every vCPU runs the
 * same code in its own thread (vCPU i adds i more). Built and run by test_kit.py. */
#include <errno.h>
#include <pthread.h>
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

struct vcpu_job {
  int kvm, vm, index, a, b, status;
  char log[256];
};

/* Runs one vCPU until HLT; records what it saw in job->log (printed by main, so lines do not interleave). */
static void *run_vcpu(void *arg) {
  struct vcpu_job *job = arg;
  size_t used = 0;
#define LOG(...) used += (size_t)snprintf(job->log + used, sizeof job->log - used, __VA_ARGS__)
  job->status = 1;
  int vcpu = ioctl(job->vm, KVM_CREATE_VCPU, (unsigned long)job->index);
  if (vcpu < 0) {
    LOG("FAIL KVM_CREATE_VCPU: %s\n", strerror(errno));
    return NULL;
  }
  int run_size = ioctl(job->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = run_size < (int)sizeof(struct kvm_run)
                            ? MAP_FAILED
                            : mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) {
    LOG("FAIL mmap kvm_run: %s\n", strerror(errno));
    return NULL;
  }
  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
    LOG("FAIL KVM_GET_SREGS: %s\n", strerror(errno));
    return NULL;
  }
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  struct kvm_regs regs = {.rip = 0x1000, .rax = (uint64_t)job->a, .rbx = (uint64_t)(job->b + job->index),
                          .rflags = 0x2};
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0) {
    LOG("FAIL KVM_SET_(S)REGS: %s\n", strerror(errno));
    return NULL;
  }
  for (int exits = 0; exits < 16; exits++) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      LOG("FAIL KVM_RUN: %s\n", strerror(errno));
      return NULL;
    }
    if (run->exit_reason == KVM_EXIT_IO) {
      const uint8_t *data = (const uint8_t *)run + run->io.data_offset;
      LOG("vcpu%d io %s port=0x%x size=%u count=%u data=0x%02x\n", job->index,
          run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in", run->io.port, run->io.size, run->io.count, data[0]);
    } else if (run->exit_reason == KVM_EXIT_HLT) {
      if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0) {
        LOG("FAIL KVM_GET_REGS: %s\n", strerror(errno));
        return NULL;
      }
      LOG("vcpu%d hlt rip=0x%llx\n", job->index, (unsigned long long)regs.rip);
      job->status = 0;
      return NULL;
    } else {
      LOG("FAIL vcpu%d unexpected exit reason %u\n", job->index, run->exit_reason);
      return NULL;
    }
  }
  LOG("FAIL vcpu%d no HLT after 16 exits\n", job->index);
  return NULL;
#undef LOG
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s A B [VCPUS]   (vCPU i prints the digit A+B+i)\n", argv[0]);
    return 2;
  }
  int nvcpus = argc == 4 ? atoi(argv[3]) : 1;
  if (nvcpus < 1 || nvcpus > 8) {
    fprintf(stderr, "VCPUS must be 1..8\n");
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
  struct vcpu_job jobs[8];
  pthread_t threads[8];
  for (int i = 0; i < nvcpus; i++) {
    jobs[i] = (struct vcpu_job){.kvm = kvm, .vm = vm, .index = i, .a = atoi(argv[1]), .b = atoi(argv[2])};
    if (pthread_create(&threads[i], NULL, run_vcpu, &jobs[i]) != 0) return die("pthread_create");
  }
  int status = 0;
  for (int i = 0; i < nvcpus; i++) {
    pthread_join(threads[i], NULL);
    fputs(jobs[i].log, stdout);
    status |= jobs[i].status;
  }
  return status;
}
