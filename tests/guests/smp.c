/* smp: every vCPU checks in (atomic counter + its APIC id); vCPU 0 waits for cpu_count() check-ins.
 * Lines: "smp: cpu N checked in (apic id A)" (any order), then "smp: C of N vCPUs checked in".
 * Exit 0 when C == N, EXIT_SMP_MISMATCH on a timeout. */
#include "runtime/guest.h"

static volatile uint32_t checked_in;
static volatile uint32_t seen[GUEST_MAX_CPUS];

static void check_in(unsigned cpu) {
  if (cpu < GUEST_MAX_CPUS) seen[cpu] = 1;
  printf("smp: cpu %u checked in\n", cpu);
  atomic_add(&checked_in, 1);
}

void guest_ap_main(unsigned cpu) {
  check_in(cpu);
  halt_forever();
}

int guest_main(void) {
  unsigned n = cpu_count();
  check_in(0);
  /* Timeout in TSC cycles: generous, since emulated vCPUs are slow. */
  uint64_t start = rdtsc(), limit = cmdline_u64("timeout_mcycles", 20000) * 1000000ull;
  while (atomic_load(&checked_in) < n && rdtsc() - start < limit) cpu_relax();
  /* Give stragglers beyond n (should not exist) no chance to confuse the count: read once. */
  uint32_t c = atomic_load(&checked_in);
  printf("smp: %u of %u vCPUs checked in\n", c, n);
  if (c != n) {
    for (unsigned i = 0; i < n && i < GUEST_MAX_CPUS; i++)
      if (!seen[i]) printf("smp: cpu %u missing\n", i);
    return EXIT_SMP_MISMATCH;
  }
  return EXIT_OK;
}
