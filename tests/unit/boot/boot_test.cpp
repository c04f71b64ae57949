// bzImage parsing/loading against the real Debian kernel, truncated and corrupt copies, e820, MP table.
#include <glob.h>

#include <algorithm>

#include "boot/internal.h"
#include "boot_helpers.h"

using namespace boot_test;
using namespace vireo;
using namespace vireo::boot;

namespace {

std::string real_kernel() {
  glob_t g{};
  std::string found;
  if (::glob("/boot/vmlinuz-*", 0, nullptr, &g) == 0 && g.gl_pathc > 0) {
    for (size_t i = 0; i < g.gl_pathc; i++)
      if (::access(g.gl_pathv[i], R_OK) == 0) {
        found = g.gl_pathv[i];
        break;
      }
  }
  globfree(&g);
  return found;
}

class BootBzImage : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = real_kernel();
    if (path_.empty()) GTEST_SKIP() << "no readable /boot/vmlinuz-* (install linux-image-cloud-amd64)";
    bytes_ = read_file(path_);
    ASSERT_GT(bytes_.size(), 0x1000u);
    // Independent reading of the header fields (Documentation/x86/boot.rst offsets).
    setup_sects_ = bytes_[0x1f1] ? bytes_[0x1f1] : 4;
    setup_size_ = (setup_sects_ + 1) * 512;
    syssize_ = le<uint32_t>(bytes_, 0x1f4);
    version_ = le<uint16_t>(bytes_, 0x206);
    pref_ = le<uint64_t>(bytes_, 0x258);
    init_size_ = le<uint32_t>(bytes_, 0x260);
    align_ = le<uint32_t>(bytes_, 0x230);
  }
  std::string path_;
  std::vector<uint8_t> bytes_;
  uint64_t setup_sects_ = 0, setup_size_ = 0, pref_ = 0;
  uint32_t syssize_ = 0, init_size_ = 0, align_ = 0;
  uint16_t version_ = 0;
};

TEST_F(BootBzImage, HeaderFieldsMatchIndependentRead) {
  EXPECT_EQ(le<uint16_t>(bytes_, 0x1fe), 0xaa55);
  EXPECT_EQ(le<uint32_t>(bytes_, 0x202), 0x53726448u);
  EXPECT_EQ(probe_kernel(path_), KernelKind::LinuxBzImage);
  InputFile f("kernel", path_);
  BzImageInfo b = parse_bzimage(f);
  EXPECT_EQ(b.setup_size, setup_size_);
  EXPECT_EQ(b.syssize, syssize_);
  EXPECT_EQ(b.kernel_size, uint64_t{syssize_} * 16);
  EXPECT_LE(b.setup_size + b.kernel_size, bytes_.size());
  EXPECT_EQ(b.version, version_);
  EXPECT_GE(b.version, 0x20c);
  EXPECT_TRUE(b.xloadflags & 1) << "XLF_KERNEL_64";
  EXPECT_EQ(b.xloadflags, le<uint16_t>(bytes_, 0x236));
  EXPECT_EQ(b.pref_address, pref_);
  EXPECT_EQ(b.init_size, init_size_);
  EXPECT_EQ(b.kernel_alignment, align_);
  EXPECT_EQ(b.relocatable, bytes_[0x234] != 0);
  EXPECT_EQ(b.cmdline_size, le<uint32_t>(bytes_, 0x238));
  EXPECT_EQ(b.initrd_addr_max, le<uint32_t>(bytes_, 0x22c));
  EXPECT_EQ(b.header_end, 0x202u + bytes_[0x201]);
  EXPECT_EQ(b.load_addr, std::max<uint64_t>(pref_, 0x100000));
  EXPECT_EQ(b.load_addr % align_, 0u);
}

TEST_F(BootBzImage, LoadWritesZeroPageKernelCmdlineInitrdE820) {
  TempDir dir;
  std::vector<uint8_t> initrd(3 * 1024 * 1024 + 123);
  for (size_t i = 0; i < initrd.size(); i++) initrd[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
  std::string initrd_path = dir.file("initrd.img", initrd);
  auto mem = make_memory(256 << 20);
  BootConfig cfg{path_, initrd_path, "console=ttyS0 root=/dev/vda rw", 2};
  BootPlan p = load(*mem, cfg);

  EXPECT_EQ(p.kind, KernelKind::LinuxBzImage);
  const uint64_t load_addr = std::max<uint64_t>(pref_, 0x100000);
  // Protected-mode kernel bytes at the load address.
  auto head = gbytes(*mem, load_addr, 4096);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), bytes_.begin() + setup_size_));
  uint64_t ksize = uint64_t{syssize_} * 16;
  auto tail = gbytes(*mem, load_addr + ksize - 4096, 4096);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), bytes_.begin() + setup_size_ + ksize - 4096));

  // Zero page.
  const uint64_t zp = addr::kBootParams;
  EXPECT_EQ(p.boot_params_gpa, zp);
  EXPECT_EQ(gread<uint16_t>(*mem, zp + 0x1fe), 0xaa55);
  EXPECT_EQ(gread<uint32_t>(*mem, zp + 0x202), 0x53726448u);
  EXPECT_EQ(gread<uint16_t>(*mem, zp + 0x206), version_);
  EXPECT_EQ(gread<uint8_t>(*mem, zp + 0x210), 0xff) << "type_of_loader";
  EXPECT_EQ(gread<uint8_t>(*mem, zp + 0x1f1), bytes_[0x1f1]) << "setup header copied";
  EXPECT_EQ(gread<uint32_t>(*mem, zp + 0x260), init_size_);
  // Bytes past the setup header end must not be copied from the file (boot_params fields live there).
  uint32_t cmd_ptr = gread<uint32_t>(*mem, zp + 0x228);
  auto cmd = gbytes(*mem, cmd_ptr, cfg.cmdline.size() + 1);
  EXPECT_EQ(std::string(cmd.begin(), cmd.end() - 1), cfg.cmdline);
  EXPECT_EQ(cmd.back(), 0);
  EXPECT_LT(cmd_ptr, 0x100000u);

  uint32_t rd = gread<uint32_t>(*mem, zp + 0x218), rd_size = gread<uint32_t>(*mem, zp + 0x21c);
  EXPECT_EQ(rd_size, initrd.size());
  EXPECT_EQ(rd % 4096, 0u);
  EXPECT_GE(rd, load_addr + init_size_) << "initrd must not overlap the kernel's init area";
  EXPECT_LE(uint64_t{rd} + rd_size, 256ull << 20);
  EXPECT_LE(uint64_t{rd} + rd_size - 1, le<uint32_t>(bytes_, 0x22c)) << "initrd_addr_max";
  EXPECT_GT(uint64_t{rd} + rd_size, (256ull << 20) - 8192) << "initrd placed as high as possible";
  EXPECT_EQ(gbytes(*mem, rd, initrd.size()), initrd);
  EXPECT_EQ(gread<uint32_t>(*mem, zp + 0xc0), 0u) << "ext_ramdisk_image";
  if (version_ >= 0x20e) {
    EXPECT_EQ(gread<uint64_t>(*mem, zp + 0x70), addr::kAcpi) << "acpi_rsdp_addr";
  }

  // e820 in the zero page equals the plan's map.
  uint8_t n = gread<uint8_t>(*mem, zp + 0x1e8);
  ASSERT_EQ(n, p.e820.size());
  for (uint8_t i = 0; i < n; i++) {
    EXPECT_EQ(gread<uint64_t>(*mem, zp + 0x2d0 + i * 20), p.e820[i].addr);
    EXPECT_EQ(gread<uint64_t>(*mem, zp + 0x2d0 + i * 20 + 8), p.e820[i].size);
    EXPECT_EQ(gread<uint32_t>(*mem, zp + 0x2d0 + i * 20 + 16), p.e820[i].type);
  }

  // vCPUs: BSP in long mode at load + 0x200 with RSI = zero page; APs wait for INIT/SIPI.
  ASSERT_EQ(p.vcpus.size(), 2u);
  EXPECT_TRUE(p.vcpus[0].runnable);
  EXPECT_FALSE(p.vcpus[1].runnable);
  EXPECT_EQ(p.vcpus[0].regs.rip, load_addr + 0x200);
  EXPECT_EQ(p.vcpus[0].regs.rsi, zp);
  EXPECT_EQ(p.vcpus[0].regs.rflags & 0x2, 0x2u);
  EXPECT_EQ(p.vcpus[0].sregs.cs.l, 1);
  EXPECT_EQ(p.vcpus[0].sregs.cs.selector, 0x10);
  EXPECT_EQ(p.vcpus[0].sregs.ds.selector, 0x18);
  EXPECT_TRUE(p.vcpus[0].sregs.cr0 & kCr0Pg);
  EXPECT_TRUE(p.vcpus[0].sregs.efer & kEferLma);
  // The kernel, zero page and cmdline are identity-mapped.
  for (uint64_t va : {load_addr + 0x200, zp, uint64_t{cmd_ptr}, uint64_t{rd}}) {
    Walk w = walk(*mem, p.vcpus[0].sregs.cr3, va);
    EXPECT_TRUE(w.ok) << w.why;
    EXPECT_EQ(w.phys, va);
  }
  EXPECT_FALSE(p.long_mode_entry);
}

TEST_F(BootBzImage, TooLittleRamForInitSizeIsAnError) {
  auto mem = make_memory(32 << 20);
  expect_error([&] { load(*mem, BootConfig{path_, "", "", 1}); }, "kernel needs RAM");
}

TEST_F(BootBzImage, CmdlineLongerThanCmdlineSizeIsAnError) {
  auto mem = make_memory(256 << 20);
  std::string longline(le<uint32_t>(bytes_, 0x238) + 10, 'x');
  expect_error([&] { load(*mem, BootConfig{path_, "", longline, 1}); }, "cmdline");
}

TEST_F(BootBzImage, TruncatedCopiesAreRejectedAtManyCutPoints) {
  TempDir dir;
  const uint64_t full = setup_size_ + uint64_t{syssize_} * 16;
  std::vector<uint64_t> cuts = {2, 64, 0x1f1, 0x1ff, 0x205, 0x250, 0x28f, 0x290, 0x400, setup_size_ - 1,
                                setup_size_, setup_size_ + 1, setup_size_ + 4096, full / 2, full - 4096, full - 1};
  for (uint64_t cut : cuts) {
    std::vector<uint8_t> part(bytes_.begin(), bytes_.begin() + static_cast<long>(cut));
    std::string p = dir.file("cut", part);
    std::string msg = expect_error([&] { probe_kernel(p); }, "truncated");
    EXPECT_EQ(msg.rfind("kernel " + p + ": ", 0), 0u) << msg;
    auto mem = make_memory(128 << 20);
    expect_error([&] { load(*mem, BootConfig{p, "", "", 1}); }, "truncated");
  }
  // Exactly setup + syssize*16 bytes is a complete kernel.
  std::vector<uint8_t> exact(bytes_.begin(), bytes_.begin() + static_cast<long>(full));
  EXPECT_EQ(probe_kernel(dir.file("exact", exact)), KernelKind::LinuxBzImage);
  // Empty / 1-byte files are not kernels at all.
  expect_error([&] { probe_kernel(dir.file("empty", {})); }, "not a bzImage or ELF64 file");
  expect_error([&] { probe_kernel(dir.file("one", {0x4d})); }, "not a bzImage or ELF64 file");
}

TEST_F(BootBzImage, CorruptCopiesGiveSpecificErrors) {
  TempDir dir;
  struct Case {
    const char* what;
    std::function<void(std::vector<uint8_t>&)> corrupt;
    const char* needle;
  };
  auto put16 = [](std::vector<uint8_t>& b, size_t off, uint16_t v) { std::memcpy(&b[off], &v, 2); };
  auto put32 = [](std::vector<uint8_t>& b, size_t off, uint32_t v) { std::memcpy(&b[off], &v, 4); };
  std::vector<Case> cases = {
      {"bad boot flag", [&](auto& b) { put16(b, 0x1fe, 0x1234); }, "boot flag 0x1234"},
      {"bad HdrS", [&](auto& b) { put32(b, 0x202, 0x12345678); }, "HdrS"},
      {"no HdrS but boot flag", [&](auto& b) { put32(b, 0x202, 0); b[0] = 0; }, "HdrS"},
      {"setup_sects huge", [&](auto& b) { b[0x1f1] = 0xff; }, "syssize"},
      {"syssize beyond file", [&](auto& b) { put32(b, 0x1f4, 0x7fffffff); }, "syssize"},
      {"syssize zero", [&](auto& b) { put32(b, 0x1f4, 0); }, "syssize is 0"},
      {"version too old", [&](auto& b) { put16(b, 0x206, 0x0204); }, "2.04 is too old"},
      {"no 64-bit entry", [&](auto& b) { put16(b, 0x236, 0); }, "XLF_KERNEL_64"},
      {"bad alignment", [&](auto& b) { put32(b, 0x230, 0x3000); }, "kernel_alignment"},
      {"header length", [&](auto& b) { b[0x201] = 0xff; }, "setup header length"},
      {"zImage", [&](auto& b) { b[0x211] = 0; }, "zImage"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto copy = bytes_;
    c.corrupt(copy);
    std::string p = dir.file("bad", copy);
    expect_error([&] { probe_kernel(p); }, c.needle);
  }
}

TEST(BootCommon, MissingKernelFile) {
  std::string msg = expect_error([] { probe_kernel("/nonexistent/vmlinuz"); }, "kernel /nonexistent/vmlinuz: ");
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
  expect_error([] { probe_kernel("/tmp"); }, "is a directory");
}

TEST(BootCommon, E820CoversRamAndSkipsTheMmioHole) {
  auto small = make_memory(64 << 20);
  auto e = build_e820(*small);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].addr, 0u);
  EXPECT_EQ(e[0].size, 0x9fc00u);
  EXPECT_EQ(e[0].type, kE820Ram);
  EXPECT_EQ(e[1].type, kE820Reserved);
  EXPECT_EQ(e[2].addr, 0xf0000u);
  EXPECT_EQ(e[2].type, kE820Reserved);
  EXPECT_EQ(e[3].addr, 0x100000u);
  EXPECT_EQ(e[3].addr + e[3].size, 64ull << 20);

  auto big = make_memory(4ull << 30);  // 3 GiB low + 1 GiB high (MAP_NORESERVE: not touched)
  e = build_e820(*big);
  ASSERT_EQ(e.size(), 5u);
  EXPECT_EQ(e[3].addr + e[3].size, layout::kLowRamEnd);
  EXPECT_EQ(e[4].addr, layout::kHighRamStart);
  EXPECT_EQ(e[4].size, 1ull << 30);
  uint64_t ram = 0;
  for (const auto& x : e) {
    if (x.type == kE820Ram) ram += x.size;
    EXPECT_FALSE(x.type == kE820Ram && x.addr < layout::kMmioHoleEnd && x.addr + x.size > layout::kMmioHoleStart)
        << "RAM inside the MMIO hole";
  }
  EXPECT_EQ(ram, (4ull << 30) - 0x400 - 0x10000 - 0x50000 + 0) << "all RAM except the reserved low areas";
}

TEST(BootCommon, MpTableChecksumsAndEntries) {
  auto mem = make_memory(64 << 20);
  write_mptable(*mem, 4);
  auto fp = gbytes(*mem, addr::kMpTable, 16);
  EXPECT_EQ(std::string(fp.begin(), fp.begin() + 4), "_MP_");
  uint8_t sum = 0;
  for (auto b : fp) sum = static_cast<uint8_t>(sum + b);
  EXPECT_EQ(sum, 0) << "floating pointer checksum";
  EXPECT_EQ(fp[8], 1) << "length in paragraphs";
  EXPECT_EQ(fp[9], 4) << "spec 1.4";
  EXPECT_EQ(fp[11], 0) << "feature byte 1: config table present";
  uint32_t table = le<uint32_t>(fp, 4);
  EXPECT_EQ(table % 16, 0u);
  auto hdr = gbytes(*mem, table, 44);
  EXPECT_EQ(std::string(hdr.begin(), hdr.begin() + 4), "PCMP");
  uint16_t len = le<uint16_t>(hdr, 4), count = le<uint16_t>(hdr, 34);
  EXPECT_EQ(le<uint32_t>(hdr, 36), 0xfee00000u);
  auto all = gbytes(*mem, table, len);
  sum = 0;
  for (auto b : all) sum = static_cast<uint8_t>(sum + b);
  EXPECT_EQ(sum, 0) << "config table checksum";
  // Walk the entries.
  size_t at = 44;
  int cpus = 0, ioapics = 0, ints = 0, lints = 0, buses = 0;
  for (uint16_t i = 0; i < count; i++) {
    ASSERT_LT(at, all.size());
    switch (all[at]) {
      case 0:
        EXPECT_EQ(all[at + 1], cpus) << "APIC id = vCPU index";
        EXPECT_EQ(all[at + 3], cpus == 0 ? 3 : 1) << "EN, BP only on cpu 0";
        cpus++, at += 20;
        break;
      case 1: buses++, at += 8; break;
      case 2:
        EXPECT_EQ(all[at + 1], 4) << "IOAPIC id after the CPUs";
        EXPECT_EQ(le<uint32_t>(all, at + 4), 0xfec00000u);
        ioapics++, at += 8;
        break;
      case 3:
        EXPECT_EQ(all[at + 7], all[at + 5]) << "ISA IRQ n on IOAPIC pin n (KVM's default routing)";
        EXPECT_NE(all[at + 5], 2) << "no entry for the cascade";
        ints++, at += 8;
        break;
      case 4: lints++, at += 8; break;
      default: FAIL() << "unknown entry type " << int(all[at]);
    }
  }
  EXPECT_EQ(at, len);
  EXPECT_EQ(cpus, 4);
  EXPECT_EQ(buses, 1);
  EXPECT_EQ(ioapics, 1);
  EXPECT_EQ(ints, 15);
  EXPECT_EQ(lints, 2);
  // It lies in an e820-reserved range.
  for (const auto& x : build_e820(*mem)) {
    if (x.addr <= table && table + len <= x.addr + x.size) {
      EXPECT_EQ(x.type, kE820Reserved);
    }
  }
  expect_error([&] { write_mptable(*mem, 255); }, "255 vCPUs");
}

}  // namespace
