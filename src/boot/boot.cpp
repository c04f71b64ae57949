// vireo/boot: kernel identification, the pieces every loader writes (GDT, page tables, cmdline, e820), and the
// test-guest and PVH ELF loaders.
#include "boot/boot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "boot/internal.h"
#include "boot/test_guest_abi.h"
#include "common/error.h"

namespace vireo::boot {

const char* kernel_kind_name(KernelKind k) {
  switch (k) {
    case KernelKind::TestGuestElf64: return "test-guest-elf64";
    case KernelKind::PvhElf: return "pvh-elf";
    case KernelKind::LinuxBzImage: return "bzimage";
  }
  return "?";
}

static std::string format_size_hint(const GuestMemory& mem) {
  return fmt::format("{} MiB of RAM", mem.size() >> 20);
}

// ---------------------------------------------------------------------------------------------- InputFile

InputFile::InputFile(const std::string& what, const std::string& path) : label_(what + " " + path) {
  if (path.empty()) fail("{}: no file given", what);
  fd_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd_) throw_errno(label_);
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw_errno(label_);
  if (S_ISDIR(st.st_mode)) fail("{}: is a directory", label_);
  if (!S_ISREG(st.st_mode)) fail("{}: not a regular file", label_);
  size_ = static_cast<uint64_t>(st.st_size);
}

void InputFile::read_at(uint64_t off, std::span<uint8_t> out, const char* ctx) const {
  if (off > size_ || out.size() > size_ - off)
    fail("{}: truncated {} (needs bytes 0x{:x}-0x{:x}, file has 0x{:x})", label_, ctx, off, off + out.size(),
         size_);
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(label_ + ": read");
    }
    if (n == 0) fail("{}: file shrank while reading {}", label_, ctx);
    done += static_cast<size_t>(n);
  }
}

void InputFile::copy_to_guest(GuestMemory& mem, uint64_t off, uint64_t len, uint64_t gpa, const char* ctx) const {
  if (off > size_ || len > size_ - off)
    fail("{}: truncated {} (needs bytes 0x{:x}-0x{:x}, file has 0x{:x})", label_, ctx, off, off + len, size_);
  auto dst = mem.slice(gpa, len);
  if (!dst)
    fail("{}: {} at 0x{:x}-0x{:x} does not fit in guest RAM ({})", label_, ctx, gpa, gpa + len,
         format_size_hint(mem));
  read_at(off, *dst, ctx);
}

// ------------------------------------------------------------------------------------------- shared pieces

uint64_t low_ram_end(const GuestMemory& mem) {
  for (const auto& r : mem.regions())
    if (r.gpa == 0) return r.size;
  fail("guest memory: no RAM at address 0");
}

std::vector<E820Entry> build_e820(const GuestMemory& mem, const acpi::TableConfig& acpi) {
  std::vector<E820Entry> e;
  uint64_t low = low_ram_end(mem);
  if (low < addr::kBootDataEnd) fail("guest memory: {} is too small (need at least 1 MiB)", format_size_hint(mem));
  e.push_back({0, addr::kEbdaStart, kE820Ram});
  e.push_back({addr::kEbdaStart, 0xa0000 - addr::kEbdaStart, kE820Reserved});
  e.push_back({addr::kBiosStart, addr::kBootDataEnd - addr::kBiosStart, kE820Reserved});
  if (low > addr::kBootDataEnd) e.push_back({addr::kBootDataEnd, low - addr::kBootDataEnd, kE820Ram});
  // The ECAM lies in the MMIO hole, between low and high RAM.
  if (acpi.pci) e.push_back({acpi.pci->ecam_base, acpi.pci->ecam_size, kE820Reserved});
  for (const auto& r : mem.regions())
    if (r.gpa != 0) e.push_back({r.gpa, r.size, kE820Ram});
  return e;
}

void write_gdt(GuestMemory& mem) {
  std::array<uint64_t, 6> gdt{};
  gdt[kSelCode32 / 8] = 0x00cf9b000000ffffull;  // 32-bit code, flat, DPL0, G=1 D=1
  gdt[kSelCode64 / 8] = 0x00af9b000000ffffull;  // 64-bit code, L=1
  gdt[kSelData / 8] = 0x00cf93000000ffffull;    // data, flat, RW
  const uint64_t tss = addr::kTss, lim = 0x67;
  gdt[kSelTss / 8] = (lim & 0xffff) | ((tss & 0xffffff) << 16) | (0x8bull << 40) | (((tss >> 24) & 0xff) << 56);
  gdt[kSelTss / 8 + 1] = tss >> 32;  // upper half of the 16-byte long-mode TSS descriptor
  mem.write_obj(addr::kGdt, gdt);
  std::array<uint8_t, 0x68> zero{};
  mem.write_obj(addr::kTss, zero);
}

void write_identity_page_tables(GuestMemory& mem) {
  constexpr uint64_t kFlags = 0x7;  // P | RW | U/S
  std::array<uint64_t, 512> t{};
  t[0] = addr::kPdpt | kFlags;
  mem.write_obj(addr::kPml4, t);
  t = {};
  for (uint64_t j = 0; j < 4; j++) t[j] = (addr::kPd + j * 0x1000) | kFlags;
  mem.write_obj(addr::kPdpt, t);
  for (uint64_t j = 0; j < 4; j++) {
    for (uint64_t i = 0; i < 512; i++) t[i] = (j << 30) | (i << 21) | kFlags | 0x80;  // PS: 2 MiB page
    mem.write_obj(addr::kPd + j * 0x1000, t);
  }
}

static kvm_segment segment(uint16_t sel, uint8_t type, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = sel;
  s.type = type;
  s.present = 1;
  s.dpl = 0;
  s.db = code64 ? 0 : 1;
  s.s = 1;
  s.l = code64 ? 1 : 0;
  s.g = 1;
  return s;
}

static void common_sregs(SpecialRegs& r) {
  r.ds = r.es = r.fs = r.gs = r.ss = segment(kSelData, 3, false);
  r.tr = kvm_segment{};
  r.tr.base = addr::kTss;
  r.tr.limit = 0x67;
  r.tr.selector = kSelTss;
  r.tr.type = 11;  // busy TSS (32-bit busy TSS in protected mode, 64-bit busy TSS in long mode)
  r.tr.present = 1;
  r.ldt = kvm_segment{};
  r.ldt.limit = 0xffff;
  r.ldt.type = 2;
  r.ldt.present = 1;
  r.gdt = kvm_dtable{};
  r.gdt.base = addr::kGdt;
  r.gdt.limit = 6 * 8 - 1;
  r.idt = kvm_dtable{};
  r.idt.base = addr::kIdt;
  r.idt.limit = 0;
}

SpecialRegs long_mode_sregs(bool nx_sce) {
  SpecialRegs r{};
  r.cs = segment(kSelCode64, 11, true);
  common_sregs(r);
  r.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  r.cr3 = addr::kPml4;
  r.cr4 = kCr4Pae | kCr4Osfxsr | kCr4Osxmmexcpt;
  r.efer = kEferLme | kEferLma | (nx_sce ? (kEferSce | kEferNx) : 0);
  return r;
}

SpecialRegs protected_mode_sregs() {
  SpecialRegs r{};
  r.cs = segment(kSelCode32, 11, false);
  common_sregs(r);
  r.cr0 = kCr0Pe | kCr0Et;
  r.cr3 = 0;
  r.cr4 = 0;
  r.efer = 0;
  return r;
}

kvm_regs initial_regs(uint64_t rip) {
  kvm_regs r{};
  r.rip = rip;
  r.rflags = 0x2;
  return r;
}

uint64_t write_cmdline(GuestMemory& mem, const std::string& cmdline, uint64_t limit) {
  uint64_t max = std::min<uint64_t>(limit, addr::kMaxCmdline);
  if (cmdline.size() + 1 > max)
    fail("cmdline: {} bytes is too long (at most {} allowed)", cmdline.size(), max - 1);
  if (cmdline.find('\0') != std::string::npos) fail("cmdline: contains a NUL byte");
  std::vector<uint8_t> buf(cmdline.begin(), cmdline.end());
  buf.push_back(0);
  mem.write(addr::kCmdline, buf);
  return addr::kCmdline;
}

uint64_t load_initrd(GuestMemory& mem, const InputFile& initrd, uint64_t floor, uint64_t limit) {
  uint64_t top = std::min(limit, low_ram_end(mem));
  uint64_t size = initrd.size();
  if (size == 0) fail("{}: empty file", initrd.label());
  if (size > top || ((top - size) & ~0xfffull) < floor)
    fail("{}: {} bytes do not fit in guest RAM between 0x{:x} and 0x{:x}", initrd.label(), size, floor, top);
  uint64_t gpa = (top - size) & ~0xfffull;
  initrd.copy_to_guest(mem, 0, size, gpa, "initrd");
  return gpa;
}

// --------------------------------------------------------------------------------------------- probe/load

KernelKind probe_kernel(const std::string& path, bool long_mode) {
  InputFile f("kernel", path);
  if (is_elf(f)) return elf_kind(f, parse_elf(f), long_mode);
  parse_bzimage(f, long_mode);  // throws a one-line error naming what is wrong
  return KernelKind::LinuxBzImage;
}

BootPlan load(GuestMemory& mem, const BootConfig& cfg) {
  if (cfg.cpus == 0) fail("boot: at least one vCPU is needed");
  InputFile f("kernel", cfg.kernel_path);
  if (low_ram_end(mem) < 2 * addr::kBootDataEnd) fail("guest memory: {} is too small (need at least 2 MiB)", format_size_hint(mem));
  BootPlan plan;
  if (is_elf(f)) {
    ElfInfo e = parse_elf(f);
    plan = elf_kind(f, e, cfg.long_mode) == KernelKind::PvhElf ? load_pvh(mem, cfg, f, e) : load_test_guest(mem, cfg, f, e);
  } else {
    plan = load_bzimage(mem, cfg, f);
  }
  write_mptable(mem, cfg.cpus);
  acpi::TableConfig tables = cfg.acpi;
  tables.cpus = cfg.cpus;
  const uint64_t rsdp = acpi::write_tables(mem, tables);
  if (plan.kind == KernelKind::PvhElf) {
    auto si = mem.read_obj<HvmStartInfo>(addr::kBootParams);
    si.rsdp_paddr = rsdp;
    mem.write_obj(addr::kBootParams, si);
  } else if (plan.kind == KernelKind::LinuxBzImage && mem.read_obj<uint16_t>(addr::kBootParams + 0x206) >= 0x20e) {
    mem.write_obj<uint64_t>(addr::kBootParams + 0x070, rsdp);  // boot_params.acpi_rsdp_addr (protocol 2.14+)
  }
  return plan;
}

// ------------------------------------------------------------------------------------------ ELF loading

static void load_segments(GuestMemory& mem, const InputFile& f, const ElfInfo& e) {
  for (const auto& s : e.loads) {
    if (s.memsz == 0) continue;
    if (s.paddr < addr::kBootDataEnd)
      fail("{}: segment at 0x{:x}-0x{:x} overlaps the boot data area below 0x{:x}", f.label(), s.paddr,
           s.paddr + s.memsz, addr::kBootDataEnd);
    if (!mem.contains(s.paddr, s.memsz) || s.paddr + s.memsz > layout::kLowRamEnd)
      fail("{}: segment at 0x{:x}-0x{:x} lies outside guest RAM ({})", f.label(), s.paddr, s.paddr + s.memsz,
           format_size_hint(mem));
    f.copy_to_guest(mem, s.offset, s.filesz, s.paddr, "segment");
    // zero the .bss part in bounded chunks
    std::array<uint8_t, 4096> zero{};
    for (uint64_t at = s.filesz; at < s.memsz;) {
      uint64_t n = std::min<uint64_t>(zero.size(), s.memsz - at);
      mem.write(s.paddr + at, std::span<const uint8_t>(zero.data(), n));
      at += n;
    }
  }
}

static uint64_t elf_top(const ElfInfo& e) {
  uint64_t top = addr::kBootDataEnd;
  for (const auto& s : e.loads) top = std::max(top, s.paddr + s.memsz);
  return (top + 0xfff) & ~0xfffull;
}

BootPlan load_test_guest(GuestMemory& mem, const BootConfig& cfg, const InputFile& f, const ElfInfo& e) {
  load_segments(mem, f, e);
  write_gdt(mem);
  write_identity_page_tables(mem);
  if (!cfg.initrd_path.empty()) fail("initrd: test guests take no initrd");
  uint64_t cmd = write_cmdline(mem, cfg.cmdline, addr::kMaxCmdline);

  BootPlan p;
  p.kind = KernelKind::TestGuestElf64;
  p.e820 = build_e820(mem, cfg.acpi);
  p.entry = e.entry;
  p.boot_params_gpa = addr::kBootParams;
  if (p.e820.size() > VIREO_BOOT_E820_MAX) fail("boot: too many e820 entries");

  vireo_boot_page bp{};
  bp.magic = VIREO_BOOT_MAGIC;
  bp.version = VIREO_BOOT_VERSION;
  bp.cpu_count = cfg.cpus;
  bp.mem_size = mem.size();
  bp.cmdline_addr = cmd;
  bp.cmdline_len = static_cast<uint32_t>(cfg.cmdline.size());
  bp.e820_count = static_cast<uint32_t>(p.e820.size());
  for (size_t i = 0; i < p.e820.size(); i++) bp.e820[i] = {p.e820[i].addr, p.e820[i].size, p.e820[i].type, 0};
  mem.write_obj(addr::kBootParams, bp);

  if (!mem.contains(e.entry, 1) || e.entry < addr::kBootDataEnd)
    fail("{}: entry point 0x{:x} is not inside a loaded area of guest RAM", f.label(), e.entry);
  for (uint32_t i = 0; i < cfg.cpus; i++) {
    VcpuInit v{};
    v.runnable = true;
    v.regs = initial_regs(e.entry);
    v.regs.rsi = addr::kBootParams;
    v.regs.rdi = i;
    v.regs.rsp = 0;
    v.sregs = long_mode_sregs(true);
    p.vcpus.push_back(v);
  }
  p.long_mode_entry = true;
  p.description = fmt::format("test guest ELF64, entry 0x{:x}", e.entry);
  return p;
}

BootPlan load_pvh(GuestMemory& mem, const BootConfig& cfg, const InputFile& f, const ElfInfo& e) {
  load_segments(mem, f, e);
  write_gdt(mem);
  uint64_t cmd = write_cmdline(mem, cfg.cmdline, addr::kMaxCmdline);

  BootPlan p;
  p.kind = KernelKind::PvhElf;
  p.e820 = build_e820(mem, cfg.acpi);
  p.entry = *e.pvh_entry;
  p.boot_params_gpa = addr::kBootParams;

  HvmStartInfo si{};
  si.magic = kPvhMagic;
  si.version = 1;
  si.cmdline_paddr = cmd;
  si.memmap_paddr = addr::kPvhMemmap;
  si.memmap_entries = static_cast<uint32_t>(p.e820.size());
  for (size_t i = 0; i < p.e820.size(); i++)
    mem.write_obj(addr::kPvhMemmap + i * sizeof(HvmMemmapEntry),
                  HvmMemmapEntry{p.e820[i].addr, p.e820[i].size, p.e820[i].type, 0});
  if (!cfg.initrd_path.empty()) {
    InputFile initrd("initrd", cfg.initrd_path);
    uint64_t gpa = load_initrd(mem, initrd, elf_top(e), layout::kLowRamEnd);
    mem.write_obj(kPvhModlist, HvmModlistEntry{gpa, initrd.size(), 0, 0});
    si.nr_modules = 1;
    si.modlist_paddr = kPvhModlist;
  }
  mem.write_obj(addr::kBootParams, si);

  if (!mem.contains(p.entry, 1) || p.entry < addr::kBootDataEnd)
    fail("{}: PVH entry point 0x{:x} is not inside guest RAM above 1 MiB", f.label(), p.entry);
  for (uint32_t i = 0; i < cfg.cpus; i++) {
    VcpuInit v{};
    v.runnable = (i == 0);
    v.regs = initial_regs(i == 0 ? p.entry : 0xfff0);
    if (i == 0) v.regs.rbx = addr::kBootParams;
    v.sregs = protected_mode_sregs();
    p.vcpus.push_back(v);
  }
  p.long_mode_entry = false;
  p.description = fmt::format("PVH ELF, 32-bit entry 0x{:x}", p.entry);
  return p;
}

}  // namespace vireo::boot
