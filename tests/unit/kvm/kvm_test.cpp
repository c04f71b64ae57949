// KVM layer: error messages without KVM; real ioctls where /dev/kvm works (skipped otherwise; the VMM's
// integration tests exercise the same code through the KVM kit).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <string>

#include "common/error.h"
#include "kvm/abi.h"
#include "kvm/kvm.h"
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
  EXPECT_EQ(v.get_cpuid().size(), cpuid.size());
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

TEST(KvmLive, IoeventfdArgumentChecks) {
  REQUIRE_KVM();
  KvmSystem sys;
  Vm vm(sys);
  EXPECT_THROW(vm.add_ioeventfd(IoSpace::Pio, 0x600, 8, std::nullopt, 0), Error);
  EXPECT_THROW(vm.add_ioeventfd(IoSpace::Mmio, 0x1000, 3, std::nullopt, 0), Error);
}

}  // namespace
}  // namespace vireo::kvm
