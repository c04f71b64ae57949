// vireo/boot: Linux bzImage, 64-bit boot protocol (Documentation/x86/boot.rst). Every header field is
// untrusted: it is range-checked before use, and nothing is allocated from a size the file states.
#include <algorithm>
#include <array>
#include <cstring>

#include "boot/internal.h"
#include "common/error.h"

namespace vireo::boot {

namespace {
// Setup header offsets (inside the file's first sector, and at the same offsets in the zero page).
constexpr uint64_t kSetupSects = 0x1f1, kSyssize = 0x1f4, kVidMode = 0x1fa, kBootFlag = 0x1fe, kJump = 0x200,
                   kHeader = 0x202, kVersion = 0x206, kTypeOfLoader = 0x210, kLoadflags = 0x211,
                   kRamdiskImage = 0x218, kRamdiskSize = 0x21c, kHeapEndPtr = 0x224, kCmdLinePtr = 0x228,
                   kInitrdAddrMax = 0x22c, kKernelAlignment = 0x230, kRelocatable = 0x234, kXloadflags = 0x236,
                   kCmdlineSize = 0x238, kPrefAddress = 0x258, kInitSize = 0x260;
constexpr uint64_t kHeaderLimit = 0x290;  // the setup header area of boot_params ends here
// Zero page (struct boot_params) offsets outside the setup header.
constexpr uint64_t kZpExtRamdiskImage = 0x0c0, kZpExtRamdiskSize = 0x0c4, kZpExtCmdLinePtr = 0x0c8,
                   kZpE820Entries = 0x1e8, kZpE820Table = 0x2d0;
constexpr size_t kZpE820Max = 128;
constexpr uint32_t kHdrS = 0x53726448;  // "HdrS"
constexpr uint16_t kXlfKernel64 = 1 << 0;
constexpr uint8_t kLoadedHigh = 1 << 0, kCanUseHeap = 1 << 7;

template <typename T>
T get(const std::array<uint8_t, kHeaderLimit>& b, uint64_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <typename T>
void put(std::array<uint8_t, 4096>& b, uint64_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}
}  // namespace

bool looks_like_bzimage(const InputFile& f) {
  if (f.size() < kHeader + 4) return false;
  auto flag = f.read_obj<uint16_t>(kBootFlag, "boot sector");
  auto hdrs = f.read_obj<uint32_t>(kHeader, "setup header");
  return flag == 0xaa55 && hdrs == kHdrS;
}

BzImageInfo parse_bzimage(const InputFile& f, bool long_mode) {
  const auto& L = f.label();
  if (f.size() < kHeader + 4) {
    if (f.size() >= 2) {
      auto mz = f.read_obj<uint16_t>(0, "header");
      if (mz == 0x5a4d) fail("{}: truncated bzImage ({} bytes, the setup header needs 0x{:x})", L, f.size(), kHeaderLimit);
    }
    fail("{}: not a bzImage or ELF64 file ({} bytes)", L, f.size());
  }
  std::array<uint8_t, kHeaderLimit> h{};
  f.read_at(0, std::span<uint8_t>(h.data(), std::min<uint64_t>(f.size(), kHeaderLimit)), "setup header");
  if (get<uint16_t>(h, kBootFlag) != 0xaa55 || get<uint32_t>(h, kHeader) != kHdrS) {
    if (get<uint16_t>(h, 0) == 0x5a4d && get<uint32_t>(h, kHeader) == kHdrS)
      fail("{}: corrupt bzImage: boot flag 0x{:04x} (expected 0xaa55)", L, get<uint16_t>(h, kBootFlag));
    if (get<uint16_t>(h, kBootFlag) == 0xaa55)
      fail("{}: not a Linux bzImage (boot sector without the \"HdrS\" setup header)", L);
    fail("{}: not a bzImage or ELF64 file", L);
  }
  if (f.size() < kHeaderLimit) fail("{}: truncated bzImage ({} bytes, the setup header needs 0x{:x})", L, f.size(), kHeaderLimit);

  BzImageInfo b;
  b.version = get<uint16_t>(h, kVersion);
  if (b.version < 0x206)
    fail("{}: boot protocol {}.{:02} is too old (2.06 or newer needed)", L, b.version >> 8, b.version & 0xff);
  b.header_end = kHeader + h[kJump + 1];
  if (b.header_end > kHeaderLimit) fail("{}: corrupt bzImage: setup header length 0x{:x} too large", L, b.header_end);
  b.setup_sects = h[kSetupSects];
  b.setup_size = (uint64_t{b.setup_sects ? b.setup_sects : 4u} + 1) * 512;
  b.syssize = get<uint32_t>(h, kSyssize);
  b.kernel_size = uint64_t{b.syssize} * 16;
  b.loadflags = h[kLoadflags];
  b.initrd_addr_max = get<uint32_t>(h, kInitrdAddrMax);
  b.kernel_alignment = get<uint32_t>(h, kKernelAlignment);
  b.relocatable = h[kRelocatable] != 0;
  b.cmdline_size = get<uint32_t>(h, kCmdlineSize);
  if (b.version >= 0x20a) {
    b.pref_address = get<uint64_t>(h, kPrefAddress);
    b.init_size = get<uint32_t>(h, kInitSize);
  }
  if (b.version >= 0x20c) {
    b.xloadflags = get<uint16_t>(h, kXloadflags);
    if (long_mode && !(b.xloadflags & kXlfKernel64)) fail("{}: kernel has no 64-bit entry point (XLF_KERNEL_64 clear)", L);
    if (!long_mode && (b.xloadflags & kXlfKernel64))
      fail("{}: a 64-bit (x86_64) bzImage cannot run on an i686 VM (its CPU has no long mode)", L);
  }
  if (!(b.loadflags & kLoadedHigh)) fail("{}: zImage (loaded low) kernels are not supported", L);
  if (b.setup_size > f.size())
    fail("{}: truncated bzImage: setup_sects {} needs {} bytes, file has {}", L, b.setup_sects, b.setup_size, f.size());
  if (b.kernel_size == 0) fail("{}: corrupt bzImage: syssize is 0", L);
  if (b.kernel_size > f.size() - b.setup_size)
    fail("{}: truncated bzImage: syssize says {} bytes of kernel after {} bytes of setup, file has {}", L,
         b.kernel_size, b.setup_size, f.size());
  if (b.relocatable && (b.kernel_alignment == 0 || (b.kernel_alignment & (b.kernel_alignment - 1)) ||
                        b.kernel_alignment > (1u << 30)))
    fail("{}: corrupt bzImage: kernel_alignment 0x{:x} is not a power of two", L, b.kernel_alignment);

  uint64_t load = 0x100000;
  if (b.version >= 0x20a && b.pref_address >= 0x100000) load = b.pref_address;
  if (b.relocatable) load = (load + b.kernel_alignment - 1) & ~(uint64_t{b.kernel_alignment} - 1);
  if (load >= layout::kLowRamEnd) fail("{}: pref_address 0x{:x} is outside low RAM", L, b.pref_address);
  b.load_addr = load;
  return b;
}

BootPlan load_bzimage(GuestMemory& mem, const BootConfig& cfg, const InputFile& f) {
  BzImageInfo b = parse_bzimage(f, cfg.long_mode);
  const auto& L = f.label();
  uint64_t need = std::max<uint64_t>(b.kernel_size, b.init_size);
  if (b.load_addr + need > low_ram_end(mem))
    fail("{}: kernel needs RAM up to 0x{:x} (load address 0x{:x} + init_size 0x{:x}); guest has 0x{:x} of low RAM", L,
         b.load_addr + need, b.load_addr, need, low_ram_end(mem));
  f.copy_to_guest(mem, b.setup_size, b.kernel_size, b.load_addr, "protected-mode kernel");

  write_gdt(mem);
  write_identity_page_tables(mem);

  // Zero page: copy of the setup header, plus what the loader fills in.
  std::array<uint8_t, 4096> zp{};
  f.read_at(0x1f1, std::span<uint8_t>(zp.data() + 0x1f1, b.header_end - 0x1f1), "setup header");
  put<uint16_t>(zp, kVidMode, 0xffff);  // "normal"
  put<uint8_t>(zp, kTypeOfLoader, 0xff);  // undefined loader id
  put<uint8_t>(zp, kLoadflags, static_cast<uint8_t>(b.loadflags | kCanUseHeap));
  put<uint16_t>(zp, kHeapEndPtr, 0xfe00);

  uint64_t cmd_limit = b.cmdline_size ? uint64_t{b.cmdline_size} + 1 : 256;
  uint64_t cmd = write_cmdline(mem, cfg.cmdline, cmd_limit);
  put<uint32_t>(zp, kCmdLinePtr, static_cast<uint32_t>(cmd));
  put<uint32_t>(zp, kZpExtCmdLinePtr, 0);

  uint64_t initrd_gpa = 0, initrd_size = 0;
  if (!cfg.initrd_path.empty()) {
    InputFile initrd("initrd", cfg.initrd_path);
    uint64_t max = b.initrd_addr_max ? uint64_t{b.initrd_addr_max} + 1 : 0x38000000;
    uint64_t floor = (b.load_addr + need + 0xfff) & ~0xfffull;
    initrd_gpa = load_initrd(mem, initrd, floor, max);
    initrd_size = initrd.size();
  }
  put<uint32_t>(zp, kRamdiskImage, static_cast<uint32_t>(initrd_gpa));
  put<uint32_t>(zp, kRamdiskSize, static_cast<uint32_t>(initrd_size));
  put<uint32_t>(zp, kZpExtRamdiskImage, static_cast<uint32_t>(initrd_gpa >> 32));
  put<uint32_t>(zp, kZpExtRamdiskSize, static_cast<uint32_t>(initrd_size >> 32));

  BootPlan p;
  p.kind = KernelKind::LinuxBzImage;
  p.e820 = build_e820(mem, cfg.acpi);
  if (p.e820.size() > kZpE820Max) fail("boot: too many e820 entries");
  put<uint8_t>(zp, kZpE820Entries, static_cast<uint8_t>(p.e820.size()));
  for (size_t i = 0; i < p.e820.size(); i++) {
    uint64_t at = kZpE820Table + i * 20;
    put<uint64_t>(zp, at, p.e820[i].addr);
    put<uint64_t>(zp, at + 8, p.e820[i].size);
    put<uint32_t>(zp, at + 16, p.e820[i].type);
  }
  mem.write_obj(addr::kBootParams, zp);

  p.entry = b.load_addr + 0x200;
  p.boot_params_gpa = addr::kBootParams;
  for (uint32_t i = 0; i < cfg.cpus; i++) {
    VcpuInit v{};
    v.runnable = (i == 0);
    v.regs = initial_regs(i == 0 ? p.entry : 0xfff0);
    if (i == 0) v.regs.rsi = addr::kBootParams;
    v.sregs = i == 0 ? long_mode_sregs(false) : protected_mode_sregs();
    p.vcpus.push_back(v);
  }
  p.long_mode_entry = false;  // APs start in real mode through INIT/SIPI
  p.description = fmt::format("Linux bzImage protocol {}.{:02}, kernel at 0x{:x}, entry 0x{:x}", b.version >> 8,
                              b.version & 0xff, b.load_addr, p.entry);
  if (!cfg.long_mode) use_linux32_entry(mem, b, p);
  return p;
}

}  // namespace vireo::boot
