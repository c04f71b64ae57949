// i686 VMs (BootConfig::long_mode false): the 32-bit test guest (ELF32 + PVH note), the Linux 32-bit boot
// protocol on a copy of the real Debian bzImage marked as a 32-bit kernel, and the one-line refusals of
// kernels that need long mode.
#include <elf.h>
#include <glob.h>

#include <algorithm>
#include <cstring>

#include "boot/internal.h"
#include "boot_helpers.h"

using namespace boot_test;
using namespace vireo;
using namespace vireo::boot;

namespace {

std::string guest(const std::string& name) { return std::string(VIREO_BUILD_DIR) + "/tests/guests/" + name + ".elf"; }

std::string real_kernel() {
  glob_t g{};
  std::string found;
  if (::glob("/boot/vmlinuz-*", 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc && found.empty(); i++)
      if (::access(g.gl_pathv[i], R_OK) == 0) found = g.gl_pathv[i];
  globfree(&g);
  return found;
}

BootConfig i686(const std::string& kernel, uint32_t cpus = 1) {
  BootConfig c{kernel, "", "console=ttyS0", cpus};
  c.long_mode = false;
  return c;
}

TEST(Boot32, Elf32GuestEntersThroughPvh) {
  const std::string g = guest("hello32");
  if (::access(g.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built (" << g << ")";
  const auto bytes = read_file(g);
  ASSERT_EQ(bytes[EI_CLASS], ELFCLASS32);
  const auto eh = le<Elf32_Ehdr>(bytes, 0);
  EXPECT_EQ(eh.e_machine, EM_386);
  // Both arches take the PVH entry: it is the only one an ELF32 file has.
  EXPECT_EQ(probe_kernel(g), KernelKind::PvhElf);
  EXPECT_EQ(probe_kernel(g, false), KernelKind::PvhElf);
  auto mem = make_memory(64 << 20);
  BootPlan p = load(*mem, i686(g, 2));
  EXPECT_EQ(p.kind, KernelKind::PvhElf);
  EXPECT_EQ(p.entry, eh.e_entry);  // pvh_start32 is the ELF entry too (link32.ld)
  EXPECT_FALSE(p.long_mode_entry);
  const auto& bsp = p.vcpus.at(0);
  EXPECT_TRUE(bsp.runnable);
  EXPECT_EQ(bsp.regs.rip, eh.e_entry);
  EXPECT_EQ(bsp.regs.rbx, addr::kBootParams);
  EXPECT_EQ(bsp.sregs.cr0 & (kCr0Pe | kCr0Pg), kCr0Pe);
  EXPECT_EQ(bsp.sregs.efer, 0u);
  EXPECT_EQ(bsp.sregs.cs.db, 1);
  EXPECT_EQ(bsp.sregs.cs.l, 0);
  EXPECT_FALSE(p.vcpus.at(1).runnable);
  EXPECT_EQ(gread<uint32_t>(*mem, addr::kBootParams), kPvhMagic);
  // The first text bytes: the file's segment, copied to its physical address.
  const auto ph = le<Elf32_Phdr>(bytes, eh.e_phoff);
  ASSERT_EQ(ph.p_type, static_cast<uint32_t>(PT_LOAD));
  EXPECT_EQ(gbytes(*mem, ph.p_paddr, 16), std::vector<uint8_t>(bytes.begin() + ph.p_offset, bytes.begin() + ph.p_offset + 16));
}

TEST(Boot32, TestGuestWithBothNotesUsesPvhOnI686) {
  const std::string g = guest("hello");
  if (::access(g.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built (" << g << ")";
  EXPECT_EQ(probe_kernel(g), KernelKind::TestGuestElf64);
  EXPECT_EQ(probe_kernel(g, false), KernelKind::PvhElf);
  auto mem = make_memory(64 << 20);
  BootPlan p = load(*mem, i686(g));
  EXPECT_EQ(p.kind, KernelKind::PvhElf);
  EXPECT_EQ(p.vcpus.at(0).sregs.efer, 0u);
}

TEST(Boot32, LongModeOnlyElfIsRefused) {
  const std::string g = guest("hello");
  if (::access(g.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built (" << g << ")";
  auto bytes = read_file(g);
  // Rename Xen's note ("Xen" -> "Nen"): what is left is an ELF64 with only the Vireo 64-bit note.
  const char xen[4] = {'X', 'e', 'n', 0};
  auto it = std::search(bytes.begin(), bytes.end(), xen, xen + 4);
  ASSERT_NE(it, bytes.end());
  *it = 'N';
  TempDir dir;
  const auto p = dir.file("vireo64-only.elf", bytes);
  EXPECT_EQ(probe_kernel(p), KernelKind::TestGuestElf64);
  const std::string want = "kernel " + p +
                           ": a 64-bit ELF kernel without a PVH entry note cannot run on an i686 VM (its CPU has no long mode)";
  EXPECT_EQ(expect_error([&] { probe_kernel(p, false); }, "i686"), want);
  auto mem = make_memory(64 << 20);
  EXPECT_EQ(expect_error([&] { load(*mem, i686(p)); }, "i686"), want);
}

TEST(Boot32, Elf32WithoutPvhNoteIsRefused) {
  const std::string g = guest("hello32");
  if (::access(g.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built (" << g << ")";
  auto bytes = read_file(g);
  const char xen[4] = {'X', 'e', 'n', 0};
  auto it = std::search(bytes.begin(), bytes.end(), xen, xen + 4);
  ASSERT_NE(it, bytes.end());
  *it = 'N';
  TempDir dir;
  const auto p = dir.file("elf32-no-pvh.elf", bytes);
  EXPECT_EQ(expect_error([&] { probe_kernel(p); }, "PVH"),
            "kernel " + p + ": 32-bit ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): no known way to enter it");
}

class Boot32BzImage : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = real_kernel();
    if (path_.empty()) GTEST_SKIP() << "no readable /boot/vmlinuz-* (install linux-image-cloud-amd64)";
  }
  std::string path_;
};

TEST_F(Boot32BzImage, SixtyFourBitKernelIsRefusedOnI686) {
  const std::string want = "kernel " + path_ + ": a 64-bit (x86_64) bzImage cannot run on an i686 VM (its CPU has no long mode)";
  EXPECT_EQ(expect_error([&] { probe_kernel(path_, false); }, "i686"), want);
  auto mem = make_memory(256 << 20);
  EXPECT_EQ(expect_error([&] { load(*mem, i686(path_)); }, "i686"), want);
}

// The real kernel with XLF_KERNEL_64 cleared stands in for a 32-bit one: same header layout, and only the
// header decides the entry state (the guest is not run here).
TEST_F(Boot32BzImage, ThirtyTwoBitProtocolState) {
  auto bytes = read_file(path_);
  const uint16_t xlf = le<uint16_t>(bytes, 0x236) & ~1u;
  std::memcpy(&bytes[0x236], &xlf, 2);
  TempDir dir;
  const auto p = dir.file("vmlinuz32", bytes);
  EXPECT_EQ(probe_kernel(p, false), KernelKind::LinuxBzImage);
  expect_error([&] { probe_kernel(p); }, "XLF_KERNEL_64 clear");  // an x86_64 VM still wants the 64-bit entry

  auto mem = make_memory(256 << 20);
  BootPlan plan = load(*mem, i686(p, 2));
  InputFile f("kernel", p);
  const BzImageInfo b = parse_bzimage(f, false);
  EXPECT_EQ(plan.kind, KernelKind::LinuxBzImage);
  EXPECT_EQ(plan.entry, b.load_addr);
  EXPECT_FALSE(plan.long_mode_entry);
  EXPECT_EQ(gread<uint32_t>(*mem, addr::kBootParams + 0x214), b.load_addr) << "code32_start = where the kernel is";
  EXPECT_EQ(gread<uint64_t>(*mem, addr::kGdt + 0x10), 0x00cf9b000000ffffull) << "__BOOT_CS: flat 32-bit code";
  EXPECT_EQ(gread<uint64_t>(*mem, addr::kGdt + 0x18), 0x00cf93000000ffffull) << "__BOOT_DS: flat data";
  // Zero page as for the 64-bit protocol.
  EXPECT_EQ(gread<uint32_t>(*mem, addr::kBootParams + 0x228), addr::kCmdline);
  EXPECT_EQ(gread<uint8_t>(*mem, addr::kBootParams + 0x1e8), plan.e820.size());

  const auto& bsp = plan.vcpus.at(0);
  EXPECT_TRUE(bsp.runnable);
  EXPECT_EQ(bsp.regs.rip, b.load_addr);
  EXPECT_EQ(bsp.regs.rsi, addr::kBootParams);
  EXPECT_EQ(bsp.regs.rbx | bsp.regs.rbp | bsp.regs.rdi, 0u);
  EXPECT_EQ(bsp.regs.rflags, 2u) << "interrupts off";
  EXPECT_EQ(bsp.sregs.cs.selector, 0x10);
  EXPECT_EQ(bsp.sregs.cs.db, 1);
  EXPECT_EQ(bsp.sregs.cs.l, 0);
  EXPECT_EQ(bsp.sregs.cs.base, 0u);
  EXPECT_EQ(bsp.sregs.cs.limit, 0xffffffffu);
  EXPECT_EQ(bsp.sregs.ds.selector, 0x18);
  EXPECT_EQ(bsp.sregs.ss.selector, 0x18);
  EXPECT_EQ(bsp.sregs.es.selector, 0x18);
  EXPECT_EQ(bsp.sregs.cr0 & (kCr0Pe | kCr0Pg), kCr0Pe) << "protected mode, paging off";
  EXPECT_EQ(bsp.sregs.cr4 & kCr4Pae, 0u);
  EXPECT_EQ(bsp.sregs.efer, 0u);
  EXPECT_FALSE(plan.vcpus.at(1).runnable);
  EXPECT_NE(plan.description.find("32-bit entry"), std::string::npos) << plan.description;
}

}  // namespace
