// KVM layer: error messages without KVM; real ioctls where /dev/kvm works (skipped otherwise; the VMM's
// integration tests exercise the same code through the KVM kit).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "common/error.h"
#include "kvm/abi.h"
#include "kvm/kvm.h"
#include "kvm/state.h"
#include "kvm/pvm.h"

namespace vireo::kvm {
namespace {

std::string why_no_kvm() {
  try {
    KvmSystem k;
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

#define REQUIRE_KVM()                                            \
  do {                                                           \
    const std::string why = why_no_kvm();                        \
    if (!why.empty()) GTEST_SKIP() << "no /dev/kvm: " << why;    \
  } while (0)

TEST(KvmSystem, MissingDeviceIsAClearError) {
  try {
    KvmSystem k("/nonexistent/kvm");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/kvm missing (is the kvm module loaded?)");
  }
}

TEST(KvmSystem, NotAKvmDeviceFailsTheVersionCheck) {
  try {
    KvmSystem k("/dev/null");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/null: KVM_GET_API_VERSION"), std::string::npos) << e.what();
  }
}

TEST(KvmAbi, IoctlNumbersEncodeTheCSizes) {
  // The kernel's C definitions: 8-byte kvm_cpuid2/kvm_msrs/kvm_irq_routing headers, 4-byte kvm_msr_list.
  EXPECT_EQ(abi::kGetSupportedCpuid, 0xc008ae05ul);
  EXPECT_EQ(abi::kSetCpuid2, 0x4008ae90ul);
  EXPECT_EQ(abi::kGetCpuid2, 0xc008ae91ul);
  EXPECT_EQ(abi::kGetMsrs, 0xc008ae88ul);
  EXPECT_EQ(abi::kSetMsrs, 0x4008ae89ul);
  EXPECT_EQ(abi::kSetGsiRouting, 0x4008ae6aul);
  EXPECT_EQ(abi::kGetMsrIndexList, 0xc004ae02ul);
  abi::FlexBuffer<abi::CpuidHeader, kvm_cpuid_entry2> b(3);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(b.entries()) - reinterpret_cast<uint8_t*>(b.data()), 8);
}

TEST(Kvm, ExitReasonNames) {
  EXPECT_STREQ(exit_reason_name(KVM_EXIT_SHUTDOWN), "KVM_EXIT_SHUTDOWN");
  EXPECT_STREQ(exit_reason_name(KVM_EXIT_INTERNAL_ERROR), "KVM_EXIT_INTERNAL_ERROR");
  EXPECT_STREQ(exit_reason_name(9999), "KVM_EXIT_(other)");
}

TEST(Kvm, RegisterDumpNamesEveryRegister) {
  kvm_regs r{};
  r.rip = 0x100000;
  r.rax = 0xabc;
  kvm_sregs s{};
  s.cr0 = 0x80000011;
  const std::string d = format_registers(r, s);
  for (const char* k : {"RIP=0000000000100000", "RAX=0000000000000abc", "CR0=0000000080000011", "EFER=", "CS ", "GDT"})
    EXPECT_NE(d.find(k), std::string::npos) << k << "\n" << d;
}

TEST(KvmLive, VmVcpuCpuidMsrsAndRouting) {
  REQUIRE_KVM();
  KvmSystem sys;
  EXPECT_GE(sys.max_vcpus(), 1u);
  const auto cpuid = sys.supported_cpuid();
  ASSERT_FALSE(cpuid.empty());
  Vm vm(sys);
  vm.set_tss_and_identity_map();
  vm.create_irqchip();
  vm.create_pit();
  Vcpu v(sys, vm, 0);
  v.set_cpuid(cpuid);
  // KVM may hand back fewer entries than it offered (PVM drops some leaves it does not virtualise), but
  // every leaf it returns must be one that was set; leaf 0 (max leaf + vendor) must come back unchanged.
  const auto got = v.get_cpuid();
  ASSERT_FALSE(got.empty());
  EXPECT_LE(got.size(), cpuid.size());
  for (const auto& g : got) {
    const kvm_cpuid_entry2* set = nullptr;
    for (const auto& c : cpuid)
      if (c.function == g.function && c.index == g.index) { set = &c; break; }
    EXPECT_NE(set, nullptr) << "leaf " << std::hex << g.function << "." << g.index;
    if (set && g.function == 0) {
      EXPECT_EQ(g.eax, set->eax);
      EXPECT_EQ(g.ebx, set->ebx);
      EXPECT_EQ(g.ecx, set->ecx);
      EXPECT_EQ(g.edx, set->edx);
    }
  }
  v.set_msrs({{0x174, 0x10}});  // SYSENTER_CS
  EXPECT_EQ(v.get_msr(0x174).value_or(0), 0x10u);
  const uint32_t gsi = 24;  // the first MSI GSI (the VMM's allocator hands them out)
  EXPECT_GT(vm.max_gsi(), gsi);
  vm.set_msi_route(gsi, 0xfee00000, 0x40);
  const int efd = eventfd(0, EFD_CLOEXEC);
  vm.add_irqfd(gsi, efd);
  vm.remove_irqfd(gsi, efd);
  vm.add_ioeventfd(IoSpace::Pio, 0x600, 2, std::nullopt, efd);
  vm.remove_ioeventfd(IoSpace::Pio, 0x600, 2, std::nullopt, efd);
  vm.add_ioeventfd(IoSpace::Mmio, 0xd0000000, 4, 7, efd);
  vm.remove_ioeventfd(IoSpace::Mmio, 0xd0000000, 4, 7, efd);
  vm.set_irq_line(4, true);
  vm.set_irq_line(4, false);
  close(efd);
  // PVM detection is harmless on any host.
  const bool pvm = is_pvm_host(v);
  (void)pvm;
}

// Everything save_vcpu reads goes back with restore_vcpu into a fresh VM and reads back the same, and
// VM-wide state (irqchip, PIT, clock) too.
TEST(KvmLive, VcpuAndVmStateRoundTrip) {
  REQUIRE_KVM();
  KvmSystem sys;
  auto make = [&](Vm& vm) {
    vm.set_tss_and_identity_map();
    vm.create_irqchip();
    vm.create_pit();
    auto v = std::make_unique<Vcpu>(sys, vm, 0);
    v->set_cpuid(sys.supported_cpuid());
    return v;
  };
  Vm a(sys), b(sys);
  auto va = make(a), vb = make(b);
  kvm_regs r = va->get_regs();
  r.rax = 0x1122334455667788;
  r.r15 = 0xfeedface;
  r.rip = 0x100000;
  r.rflags = 0x2;
  va->set_regs(r);
  va->set_msrs({{0xc0000102, 0xffff800012345000}, {0x174, 0x10}});  // KERNEL_GS_BASE, SYSENTER_CS
  kvm_lapic_state l = va->get_lapic();
  l.regs[0x80] = 0x20;  // TPR
  va->set_lapic(l);
  kvm_irqchip io = a.get_irqchip(KVM_IRQCHIP_IOAPIC);
  io.chip.ioapic.redirtbl[3].bits = 0x10031;  // masked, vector 0x31
  a.set_irqchip(io);

  const VcpuStateLayout layout = probe_vcpu_state(sys, a, *va);
  EXPECT_GT(layout.msrs.size(), 10u);
  EXPECT_NE(std::find(layout.msrs.begin(), layout.msrs.end(), kMsrTsc), layout.msrs.end());
  if (is_pvm_host(*va)) {
    EXPECT_NE(std::find(layout.msrs.begin(), layout.msrs.end(), kPvmControlMsr), layout.msrs.end());
  } else {
    EXPECT_EQ(std::find(layout.msrs.begin(), layout.msrs.end(), kPvmControlMsr), layout.msrs.end());
  }
  const VcpuState s = save_vcpu(*va, layout);
  const VmState vs = save_vm(a);
  EXPECT_EQ(vs.irqchips.size(), 3u);
  ASSERT_TRUE(vs.pit.has_value());

  restore_vm(b, vs);
  restore_vcpu(*vb, s);
  restore_clock(b, vs);
  const VcpuState t = save_vcpu(*vb, layout);
  EXPECT_EQ(t.regs.rax, 0x1122334455667788u);
  EXPECT_EQ(t.regs.r15, 0xfeedfaceu);
  EXPECT_EQ(t.regs.rip, 0x100000u);
  EXPECT_EQ(std::memcmp(&t.sregs, &s.sregs, sizeof t.sregs), 0);
  EXPECT_EQ(t.lapic.regs[0x80], 0x20);
  EXPECT_EQ(t.xsave.size(), s.xsave.size());
  if (!s.xsave.empty()) {
    EXPECT_EQ(std::memcmp(t.xsave.data(), s.xsave.data(), 512), 0);  // legacy FPU/SSE area
  }
  ASSERT_EQ(t.msrs.size(), s.msrs.size());
  for (size_t i = 0; i < s.msrs.size(); ++i) {
    if (s.msrs[i].index == 0xc0000102 || s.msrs[i].index == 0x174) {
      EXPECT_EQ(t.msrs[i].data, s.msrs[i].data) << std::hex << s.msrs[i].index;
    }
  }
  EXPECT_EQ(t.mp_state.mp_state, s.mp_state.mp_state);
  EXPECT_EQ(b.get_irqchip(KVM_IRQCHIP_IOAPIC).chip.ioapic.redirtbl[3].bits, 0x10031u);
  // kvmclock continues from the saved value (not from the new VM's zero, not jumped by host time).
  const uint64_t c = b.get_clock().clock;
  EXPECT_GE(c, vs.clock.clock);
  EXPECT_LT(c, vs.clock.clock + 5'000'000'000ull);
}

TEST(KvmLive, DirtyLogReportsWrittenPages) {
  REQUIRE_KVM();
  KvmSystem sys;
  Vm vm(sys);
  const size_t size = 64 * 4096;
  void* mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  vm.set_memory_region(0, 0, size, mem, KVM_MEM_LOG_DIRTY_PAGES);
  std::vector<uint64_t> bm;
  vm.get_dirty_log(0, 64, bm);
  ASSERT_EQ(bm.size(), 1u);
  EXPECT_EQ(bm[0], 0u);  // only guest writes count; nothing ran
  ::munmap(mem, size);
}

TEST(KvmLive, IoeventfdArgumentChecks) {
  REQUIRE_KVM();
  KvmSystem sys;
  Vm vm(sys);
  EXPECT_THROW(vm.add_ioeventfd(IoSpace::Pio, 0x600, 8, std::nullopt, 0), Error);
  EXPECT_THROW(vm.add_ioeventfd(IoSpace::Mmio, 0x1000, 3, std::nullopt, 0), Error);
}

}  // namespace
}  // namespace vireo::kvm
