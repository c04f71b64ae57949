// ELF loaders: the real test guests (Vireo 64-bit protocol and PVH) and synthetic broken ELF files.
#include <elf.h>

#include "boot/internal.h"
#include "boot/test_guest_abi.h"
#include "boot_helpers.h"

using namespace boot_test;
using namespace vireo;
using namespace vireo::boot;

namespace {

std::string guest(const std::string& name) { return std::string(VIREO_BUILD_DIR) + "/tests/guests/" + name + ".elf"; }

// Independent ELF reading for the checks.
struct Seg {
  uint64_t off, paddr, filesz, memsz;
};
std::vector<Seg> load_segments(const std::vector<uint8_t>& f) {
  auto eh = le<Elf64_Ehdr>(f, 0);
  std::vector<Seg> v;
  for (int i = 0; i < eh.e_phnum; i++) {
    auto ph = le<Elf64_Phdr>(f, eh.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_type == PT_LOAD) v.push_back({ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz});
  }
  return v;
}
uint32_t pvh_note_entry(const std::vector<uint8_t>& f) {
  auto eh = le<Elf64_Ehdr>(f, 0);
  for (int i = 0; i < eh.e_phnum; i++) {
    auto ph = le<Elf64_Phdr>(f, eh.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_type != PT_NOTE) continue;
    for (uint64_t at = ph.p_offset; at + 12 <= ph.p_offset + ph.p_filesz;) {
      auto nh = le<Elf64_Nhdr>(f, at);
      uint64_t name = at + 12, desc = name + ((nh.n_namesz + 3) & ~3u);
      if (nh.n_type == 18 && std::memcmp(&f[name], "Xen", 4) == 0) return le<uint32_t>(f, desc);
      at = desc + ((nh.n_descsz + 3) & ~3u);
    }
  }
  return 0;
}

class BootTestGuests : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(guest("hello").c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built (" << guest("hello") << ")";
  }
};

TEST_F(BootTestGuests, ProbeTellsTestGuestFromPvh) {
  EXPECT_EQ(probe_kernel(guest("hello")), KernelKind::TestGuestElf64);
  EXPECT_EQ(probe_kernel(guest("hello_pvh")), KernelKind::PvhElf);
  InputFile f("kernel", guest("hello"));
  ElfInfo e = parse_elf(f);
  EXPECT_TRUE(e.vireo_note);
  ASSERT_TRUE(e.pvh_entry.has_value()) << "test guests carry a PVH note too";
  EXPECT_EQ(*e.pvh_entry, pvh_note_entry(read_file(guest("hello"))));
}

TEST_F(BootTestGuests, LoadHelloSegmentsPageTablesBootPage) {
  auto bytes = read_file(guest("hello"));
  auto mem = make_memory(64 << 20);
  // Dirty RAM first so .bss zeroing is really checked.
  std::vector<uint8_t> junk(4 << 20, 0xcc);
  mem->write(0x100000, junk);
  BootConfig cfg{guest("hello"), "", "quiet n=5", 2};
  BootPlan p = load(*mem, cfg);
  EXPECT_EQ(p.kind, KernelKind::TestGuestElf64);
  EXPECT_TRUE(p.long_mode_entry);

  auto segs = load_segments(bytes);
  ASSERT_FALSE(segs.empty());
  for (const auto& s : segs) {
    EXPECT_GE(s.paddr, 0x100000u);
    auto got = gbytes(*mem, s.paddr, s.memsz);
    EXPECT_TRUE(std::equal(got.begin(), got.begin() + static_cast<long>(s.filesz), bytes.begin() + static_cast<long>(s.off)));
    EXPECT_TRUE(std::all_of(got.begin() + static_cast<long>(s.filesz), got.end(), [](uint8_t b) { return b == 0; }))
        << "bss zeroed";
  }

  auto eh = le<Elf64_Ehdr>(bytes, 0);
  ASSERT_EQ(p.vcpus.size(), 2u);
  for (uint32_t i = 0; i < 2; i++) {
    const auto& v = p.vcpus[i];
    EXPECT_TRUE(v.runnable);
    EXPECT_EQ(v.regs.rip, eh.e_entry);
    EXPECT_EQ(v.regs.rdi, i);
    EXPECT_EQ(v.regs.rsi, addr::kBootParams);
    EXPECT_EQ(v.regs.rsp, 0u);
    EXPECT_EQ(v.regs.rflags, 2u);
    EXPECT_EQ(v.sregs.cr0, kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg);
    EXPECT_EQ(v.sregs.cr4, kCr4Pae | kCr4Osfxsr | kCr4Osxmmexcpt);
    EXPECT_EQ(v.sregs.efer, kEferSce | kEferLme | kEferLma | kEferNx);
    EXPECT_EQ(v.sregs.cs.l, 1);
    EXPECT_EQ(v.sregs.cs.db, 0);
    EXPECT_EQ(v.sregs.cs.dpl, 0);
    EXPECT_EQ(v.sregs.cs.type, 11);
    EXPECT_EQ(v.sregs.ss.type, 3);
    EXPECT_EQ(v.sregs.tr.type, 11);
    EXPECT_EQ(v.sregs.gdt.base, addr::kGdt);
    EXPECT_EQ(v.sregs.cr3, addr::kPml4);
  }
  // GDT descriptors the selectors point at.
  EXPECT_EQ(gread<uint64_t>(*mem, addr::kGdt + kSelCode64), 0x00af9b000000ffffull);
  EXPECT_EQ(gread<uint64_t>(*mem, addr::kGdt + kSelData), 0x00cf93000000ffffull);
  // Identity map of the low 4 GiB, U/S=1 at every level.
  for (uint64_t va : {0ull, 0x3000ull, 0x100000ull, 0x1fffffull, 0x3ffffffull, 0xbfffffffull, 0xd0000000ull,
                      0xfec00000ull, 0xfee00000ull, 0xffffffffull}) {
    Walk w = walk(*mem, addr::kPml4, va);
    EXPECT_TRUE(w.ok) << std::hex << va << ": " << w.why;
    EXPECT_EQ(w.phys, va);
  }
  EXPECT_FALSE(walk(*mem, addr::kPml4, 0x100000000ull).ok) << "nothing above 4 GiB";

  // Boot page.
  auto bp = mem->read_obj<vireo_boot_page>(addr::kBootParams);
  EXPECT_EQ(bp.magic, VIREO_BOOT_MAGIC);
  EXPECT_EQ(bp.version, VIREO_BOOT_VERSION);
  EXPECT_EQ(bp.cpu_count, 2u);
  EXPECT_EQ(bp.mem_size, 64ull << 20);
  EXPECT_EQ(bp.cmdline_len, cfg.cmdline.size());
  auto c = gbytes(*mem, bp.cmdline_addr, bp.cmdline_len + 1);
  EXPECT_EQ(std::string(c.begin(), c.end() - 1), cfg.cmdline);
  EXPECT_EQ(c.back(), 0);
  ASSERT_EQ(bp.e820_count, p.e820.size());
  for (size_t i = 0; i < p.e820.size(); i++) {
    EXPECT_EQ(bp.e820[i].addr, p.e820[i].addr);
    EXPECT_EQ(bp.e820[i].size, p.e820[i].size);
    EXPECT_EQ(bp.e820[i].type, p.e820[i].type);
  }
  EXPECT_EQ(bp.flags, 0u);
}

TEST_F(BootTestGuests, LoadPvhStartInfoModulesAndBspState) {
  auto bytes = read_file(guest("hello_pvh"));
  TempDir dir;
  std::vector<uint8_t> initrd(100000);
  for (size_t i = 0; i < initrd.size(); i++) initrd[i] = static_cast<uint8_t>(i ^ (i >> 8));
  auto mem = make_memory(64 << 20);
  BootConfig cfg{guest("hello_pvh"), dir.file("rd", initrd), "console=ttyS0", 3};
  BootPlan p = load(*mem, cfg);
  EXPECT_EQ(p.kind, KernelKind::PvhElf);
  EXPECT_FALSE(p.long_mode_entry);
  auto si = mem->read_obj<HvmStartInfo>(addr::kBootParams);
  EXPECT_EQ(si.magic, 0x336ec578u);
  EXPECT_EQ(si.version, 1u);
  auto c = gbytes(*mem, si.cmdline_paddr, cfg.cmdline.size() + 1);
  EXPECT_EQ(std::string(c.begin(), c.end() - 1), cfg.cmdline);
  ASSERT_EQ(si.memmap_entries, p.e820.size());
  for (uint32_t i = 0; i < si.memmap_entries; i++) {
    auto m = mem->read_obj<HvmMemmapEntry>(si.memmap_paddr + i * 24);
    EXPECT_EQ(m.addr, p.e820[i].addr);
    EXPECT_EQ(m.size, p.e820[i].size);
    EXPECT_EQ(m.type, p.e820[i].type);
  }
  ASSERT_EQ(si.nr_modules, 1u);
  auto mod = mem->read_obj<HvmModlistEntry>(si.modlist_paddr);
  EXPECT_EQ(mod.size, initrd.size());
  EXPECT_EQ(mod.paddr % 4096, 0u);
  EXPECT_EQ(gbytes(*mem, mod.paddr, initrd.size()), initrd);

  ASSERT_EQ(p.vcpus.size(), 3u);
  const auto& bsp = p.vcpus[0];
  EXPECT_TRUE(bsp.runnable);
  EXPECT_EQ(bsp.regs.rip, pvh_note_entry(bytes));
  EXPECT_EQ(bsp.regs.rbx, addr::kBootParams);
  EXPECT_EQ(bsp.regs.rflags, 2u);
  EXPECT_EQ(bsp.sregs.cr0 & (kCr0Pe | kCr0Pg), kCr0Pe);
  EXPECT_EQ(bsp.sregs.efer, 0u);
  EXPECT_EQ(bsp.sregs.cs.l, 0);
  EXPECT_EQ(bsp.sregs.cs.db, 1);
  EXPECT_EQ(bsp.sregs.cs.limit, 0xffffffffu);
  EXPECT_EQ(bsp.sregs.cs.base, 0u);
  EXPECT_EQ(bsp.sregs.tr.limit, 0x67u);
  EXPECT_FALSE(p.vcpus[1].runnable);
  EXPECT_FALSE(p.vcpus[2].runnable);
}

// ---- synthetic ELF files ----
struct ElfBuilder {
  Elf64_Ehdr eh{};
  std::vector<Elf64_Phdr> ph;
  std::vector<uint8_t> payload = std::vector<uint8_t>(256, 0x90);
  ElfBuilder() {
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_entry = 0x200000;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    Elf64_Phdr p{};
    p.p_type = PT_LOAD;
    p.p_paddr = p.p_vaddr = 0x200000;
    p.p_filesz = payload.size();
    p.p_memsz = 0x3000;
    ph.push_back(p);
  }
  std::vector<uint8_t> bytes() {
    eh.e_phnum = static_cast<uint16_t>(ph.size());
    uint64_t off = sizeof eh + ph.size() * sizeof(Elf64_Phdr);
    for (auto& p : ph)
      if (p.p_type == PT_LOAD && p.p_offset == 0) p.p_offset = off;
    std::vector<uint8_t> b(off);
    std::memcpy(b.data(), &eh, sizeof eh);
    std::memcpy(b.data() + sizeof eh, ph.data(), ph.size() * sizeof(Elf64_Phdr));
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
  }
};

TEST(BootSyntheticElf, MinimalElfLoadsAsTestGuest) {
  TempDir dir;
  ElfBuilder e;
  auto p = dir.file("ok.elf", e.bytes());
  EXPECT_EQ(probe_kernel(p), KernelKind::TestGuestElf64);
  auto mem = make_memory(16 << 20);
  BootPlan plan = load(*mem, BootConfig{p, "", "", 1});
  EXPECT_EQ(plan.vcpus.at(0).regs.rip, 0x200000u);
  EXPECT_EQ(gread<uint8_t>(*mem, 0x200000), 0x90);
  EXPECT_EQ(gread<uint8_t>(*mem, 0x200000 + 256), 0);
}

TEST(BootSyntheticElf, BrokenFilesGiveOneLineErrors) {
  TempDir dir;
  auto mem = make_memory(16 << 20);
  auto try_load = [&](ElfBuilder e, const char* needle) {
    auto p = dir.file("bad.elf", e.bytes());
    expect_error([&] { probe_kernel(p); load(*mem, BootConfig{p, "", "", 1}); }, needle);
  };
  {
    ElfBuilder e;
    e.ph[0].p_paddr = 0x8000;
    try_load(e, "overlaps the boot data area");
  }
  {
    ElfBuilder e;
    e.ph[0].p_paddr = 0x10000000;  // 256 MiB, beyond 16 MiB of RAM
    try_load(e, "outside guest RAM");
  }
  {
    ElfBuilder e;
    e.ph[0].p_filesz = 1 << 20;  // more than the file holds
    e.ph[0].p_memsz = 1 << 20;
    try_load(e, "truncated ELF segment");
  }
  {
    ElfBuilder e;
    e.ph[0].p_filesz = 0x4000;
    try_load(e, "filesz > memsz");
  }
  {
    ElfBuilder e;
    e.eh.e_machine = EM_386;
    try_load(e, "not x86-64");
  }
  {
    ElfBuilder e;
    e.eh.e_ident[EI_CLASS] = ELFCLASS32;
    try_load(e, "ELF machine 62 is not i386");  // read as an ELF32 header
  }
  {
    ElfBuilder e;
    e.eh.e_type = ET_DYN;
    try_load(e, "not an executable");
  }
  {
    ElfBuilder e;
    e.ph.push_back(e.ph[0]);
    try_load(e, "overlap");
  }
  {
    ElfBuilder e;
    e.eh.e_phoff = 1 << 30;
    try_load(e, "truncated ELF program headers");
  }
  {
    ElfBuilder e;
    e.eh.e_entry = 0x9000;
    try_load(e, "entry point");
  }
  // Truncated header.
  auto b = ElfBuilder().bytes();
  b.resize(40);
  expect_error([&] { probe_kernel(dir.file("short.elf", b)); }, "truncated ELF header");
}

TEST(BootSyntheticElf, PvhNoteWithoutVireoNoteMeansPvh) {
  TempDir dir;
  ElfBuilder e;
  // A note segment in the payload: "Xen" type 18, 8-byte entry.
  std::vector<uint8_t> note(12 + 4 + 8);
  uint32_t namesz = 4, descsz = 8, type = 18;
  std::memcpy(&note[0], &namesz, 4), std::memcpy(&note[4], &descsz, 4), std::memcpy(&note[8], &type, 4);
  std::memcpy(&note[12], "Xen", 4);
  uint64_t entry = 0x200010;
  std::memcpy(&note[16], &entry, 8);
  uint64_t note_off = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr) + e.payload.size();
  e.ph[0].p_offset = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr);
  Elf64_Phdr n{};
  n.p_type = PT_NOTE;
  n.p_offset = note_off;
  n.p_filesz = note.size();
  e.ph.push_back(n);
  e.payload.insert(e.payload.end(), note.begin(), note.end());
  auto p = dir.file("pvh.elf", e.bytes());
  EXPECT_EQ(probe_kernel(p), KernelKind::PvhElf);
  auto mem = make_memory(16 << 20);
  BootPlan plan = load(*mem, BootConfig{p, "", "", 2});
  EXPECT_EQ(plan.vcpus[0].regs.rip, 0x200010u);
  EXPECT_FALSE(plan.vcpus[1].runnable);
  // A note claiming a huge descriptor is rejected.
  descsz = 0x7fffffff;
  std::memcpy(&e.payload[e.payload.size() - note.size() + 4], &descsz, 4);
  expect_error([&] { probe_kernel(dir.file("badnote.elf", e.bytes())); }, "corrupt ELF note");
}

}  // namespace
