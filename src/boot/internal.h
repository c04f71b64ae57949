// vireo/boot internals shared by the loaders (not part of the contract; unit tests use them).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "boot/boot.h"
#include "common/fd.h"

namespace vireo::boot {

// A kernel/initrd file opened read-only; every read is bounds-checked against its size.
class InputFile {
 public:
  InputFile(const std::string& what, const std::string& path);  // what: "kernel", "initrd"
  uint64_t size() const { return size_; }
  const std::string& label() const { return label_; }   // "kernel /path"
  // Reads exactly out.size() bytes at `off`; throws "<label>: truncated <ctx> (...)" if past the end.
  void read_at(uint64_t off, std::span<uint8_t> out, const char* ctx) const;
  template <typename T>
  T read_obj(uint64_t off, const char* ctx) const {
    T v{};
    read_at(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v), ctx);
    return v;
  }
  // Copies [off, off+len) of the file into guest memory at gpa (chunked; no big host allocation).
  void copy_to_guest(GuestMemory& mem, uint64_t off, uint64_t len, uint64_t gpa, const char* ctx) const;

 private:
  std::string label_;
  UniqueFd fd_;
  uint64_t size_ = 0;
};

// --- ELF ---
struct ElfSegment {
  uint64_t offset, paddr, filesz, memsz;
};
struct ElfInfo {
  uint64_t entry = 0;
  std::vector<ElfSegment> loads;
  std::optional<uint32_t> pvh_entry;   // XEN_ELFNOTE_PHYS32_ENTRY
  bool vireo_note = false;             // VIREO_ELFNOTE_TEST_GUEST
  bool elf32 = false;                  // ELFCLASS32 (i386): always has a PVH note (parse_elf checks)
};
bool is_elf(const InputFile& f);
ElfInfo parse_elf(const InputFile& f);  // validates header, program headers, notes (ELF64 x86-64, ELF32 i386)
// Which loader an ELF file gets: PVH when it has the note and no Vireo note (on an i686 VM the PVH note is
// the only way in); throws a one-line Error for a 64-bit-only ELF on an i686 VM (`long_mode` false).
KernelKind elf_kind(const InputFile& f, const ElfInfo& e, bool long_mode);

// --- bzImage ---
struct BzImageInfo {
  uint8_t setup_sects = 0;       // as in the file (0 means 4)
  uint64_t setup_size = 0;       // (setup_sects or 4, + 1) * 512
  uint32_t syssize = 0;          // 16-byte units
  uint64_t kernel_size = 0;      // syssize * 16
  uint16_t version = 0;
  uint8_t loadflags = 0;
  uint32_t initrd_addr_max = 0;
  uint32_t kernel_alignment = 0;
  bool relocatable = false;
  uint16_t xloadflags = 0;
  uint32_t cmdline_size = 0;
  uint64_t pref_address = 0;
  uint32_t init_size = 0;
  uint64_t header_end = 0;       // setup header copied from 0x1f1 up to here (exclusive)
  uint64_t load_addr = 0;        // where the protected-mode kernel goes
};
bool looks_like_bzimage(const InputFile& f);  // 0xAA55 and "HdrS" present
// `long_mode` false (i686 VM): refuses a 64-bit kernel (XLF_KERNEL_64) instead of requiring one.
BzImageInfo parse_bzimage(const InputFile& f, bool long_mode = true);
// The Linux 32-bit boot protocol for an i686 VM (boot32.cpp): rewrites the BSP of a bzImage plan loaded for
// the 64-bit protocol to enter at code32_start in flat protected mode, paging off, ESI = zero page.
void use_linux32_entry(GuestMemory& mem, const BzImageInfo& b, BootPlan& p);

// --- pieces every loader writes ---
void write_gdt(GuestMemory& mem);
void write_identity_page_tables(GuestMemory& mem);   // low 4 GiB, 2 MiB pages, U/S=1 everywhere
SpecialRegs long_mode_sregs(bool nx_sce);             // CS64 + flat data, paging on, CR3 = kPml4
SpecialRegs protected_mode_sregs();                   // CS32 flat, CR0.PE only (PVH)
kvm_regs initial_regs(uint64_t rip);                  // rflags = 2, others 0
uint64_t write_cmdline(GuestMemory& mem, const std::string& cmdline, uint64_t limit);  // returns its gpa
void write_mptable(GuestMemory& mem, uint32_t cpus);  // throws if cpus > 254
uint64_t low_ram_end(const GuestMemory& mem);          // end of the RAM region at 0
// Load an initrd as high as possible below min(limit, low RAM end) and above `floor`; returns its gpa.
uint64_t load_initrd(GuestMemory& mem, const InputFile& initrd, uint64_t floor, uint64_t limit);

BootPlan load_test_guest(GuestMemory& mem, const BootConfig& cfg, const InputFile& f, const ElfInfo& elf);
BootPlan load_pvh(GuestMemory& mem, const BootConfig& cfg, const InputFile& f, const ElfInfo& elf);
BootPlan load_bzimage(GuestMemory& mem, const BootConfig& cfg, const InputFile& f);

// PVH structures (Xen's public arch-x86/hvm/start_info.h layout, version 1).
inline constexpr uint32_t kPvhMagic = 0x336ec578;
struct HvmStartInfo {
  uint32_t magic, version, flags, nr_modules;
  uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
  uint32_t memmap_entries, reserved;
};
struct HvmModlistEntry {
  uint64_t paddr, size, cmdline_paddr, reserved;
};
struct HvmMemmapEntry {
  uint64_t addr, size;
  uint32_t type, reserved;
};
static_assert(sizeof(HvmStartInfo) == 56 && sizeof(HvmModlistEntry) == 32 && sizeof(HvmMemmapEntry) == 24);
inline constexpr uint64_t kPvhModlist = addr::kBootParams + 0x100;

}  // namespace vireo::boot
