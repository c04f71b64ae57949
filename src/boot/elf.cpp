// vireo/boot: ELF parsing for test guests (ELF64) and PVH kernels (ELF64 or ELF32). Every field comes from an untrusted file.
#include <elf.h>

#include <cstring>

#include "boot/internal.h"
#include "boot/test_guest_abi.h"
#include "common/error.h"

namespace vireo::boot {

namespace {
constexpr uint32_t kXenElfnotePhys32Entry = 18;
constexpr uint16_t kMaxPhdrs = 64;
constexpr uint64_t kMaxNoteBytes = 64 * 1024;
}  // namespace

bool is_elf(const InputFile& f) {
  if (f.size() < SELFMAG) return false;
  char magic[SELFMAG];
  f.read_at(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(magic), SELFMAG), "ELF magic");
  return std::memcmp(magic, ELFMAG, SELFMAG) == 0;
}

static void parse_notes(const InputFile& f, uint64_t off, uint64_t size, ElfInfo& info) {
  if (size > kMaxNoteBytes) fail("{}: ELF note segment of {} bytes is implausibly large", f.label(), size);
  std::vector<uint8_t> buf(size);
  f.read_at(off, buf, "ELF note segment");
  uint64_t at = 0;
  auto align4 = [](uint64_t v) { return (v + 3) & ~3ull; };
  while (at + sizeof(Elf64_Nhdr) <= size) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, buf.data() + at, sizeof nh);
    uint64_t name_at = at + sizeof nh;
    uint64_t desc_at = name_at + align4(nh.n_namesz);
    uint64_t next = desc_at + align4(nh.n_descsz);
    if (desc_at > size || next > size || nh.n_descsz > size)
      fail("{}: corrupt ELF note at offset 0x{:x}", f.label(), off + at);
    std::string name(reinterpret_cast<const char*>(buf.data() + name_at), nh.n_namesz);
    if (!name.empty() && name.back() == '\0') name.pop_back();
    if (name == "Xen" && nh.n_type == kXenElfnotePhys32Entry) {
      uint64_t v = 0;
      if (nh.n_descsz == 4) {
        uint32_t v32;
        std::memcpy(&v32, buf.data() + desc_at, 4);
        v = v32;
      } else if (nh.n_descsz == 8) {
        std::memcpy(&v, buf.data() + desc_at, 8);
      } else {
        fail("{}: PVH entry note has a {}-byte value (expected 4 or 8)", f.label(), nh.n_descsz);
      }
      if (v >= (1ull << 32)) fail("{}: PVH entry 0x{:x} is not a 32-bit address", f.label(), v);
      info.pvh_entry = static_cast<uint32_t>(v);
    } else if (name == VIREO_ELFNOTE_NAME && nh.n_type == VIREO_ELFNOTE_TEST_GUEST) {
      info.vireo_note = true;
    }
    at = next;
  }
}

namespace {

// One parser for both ELF classes (the header and program-header layouts differ; notes do not). A 32-bit
// ELF is an i386 kernel: it can only be entered through its PVH note (32-bit Linux vmlinux, 32-bit guests).
template <typename Ehdr, typename Phdr>
ElfInfo parse_elf_class(const InputFile& f, uint16_t machine, const char* machine_name) {
  if (f.size() < sizeof(Ehdr)) fail("{}: truncated ELF header ({} bytes)", f.label(), f.size());
  auto eh = f.read_obj<Ehdr>(0, "ELF header");
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB) fail("{}: not a little-endian ELF file", f.label());
  if (eh.e_machine != machine) fail("{}: ELF machine {} is not {}", f.label(), eh.e_machine, machine_name);
  if (eh.e_type != ET_EXEC) fail("{}: ELF type {} is not an executable (link it statically, non-PIE)", f.label(), eh.e_type);
  if (eh.e_phnum == 0) fail("{}: ELF file has no program headers", f.label());
  if (eh.e_phentsize != sizeof(Phdr)) fail("{}: ELF program header size {} (expected {})", f.label(), eh.e_phentsize, sizeof(Phdr));
  if (eh.e_phnum > kMaxPhdrs) fail("{}: {} ELF program headers (at most {} supported)", f.label(), eh.e_phnum, kMaxPhdrs);

  ElfInfo info;
  info.elf32 = sizeof(Ehdr) == sizeof(Elf32_Ehdr);
  info.entry = eh.e_entry;
  for (uint16_t i = 0; i < eh.e_phnum; i++) {
    auto ph = f.read_obj<Phdr>(eh.e_phoff + uint64_t{i} * sizeof(Phdr), "ELF program headers");
    const uint64_t off = ph.p_offset, filesz = ph.p_filesz, memsz = ph.p_memsz, paddr = ph.p_paddr;
    if (ph.p_type == PT_LOAD) {
      if (filesz > memsz) fail("{}: ELF segment {} has filesz > memsz", f.label(), i);
      if (off > f.size() || filesz > f.size() - off)
        fail("{}: truncated ELF segment {} (needs bytes 0x{:x}-0x{:x}, file has 0x{:x})", f.label(), i, off,
             off + filesz, f.size());
      if (paddr + memsz < paddr) fail("{}: ELF segment {} wraps around", f.label(), i);
      info.loads.push_back({off, paddr, filesz, memsz});
    } else if (ph.p_type == PT_NOTE) {
      parse_notes(f, off, filesz, info);
    }
  }
  if (info.loads.empty()) fail("{}: ELF file has no loadable segments", f.label());
  // Segments must not overlap each other.
  for (size_t a = 0; a < info.loads.size(); a++)
    for (size_t b = a + 1; b < info.loads.size(); b++) {
      const auto &x = info.loads[a], &y = info.loads[b];
      if (x.memsz && y.memsz && x.paddr < y.paddr + y.memsz && y.paddr < x.paddr + x.memsz)
        fail("{}: ELF segments {} and {} overlap", f.label(), a, b);
    }
  if (info.elf32 && !info.pvh_entry)
    fail("{}: 32-bit ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): no known way to enter it", f.label());
  return info;
}

}  // namespace

ElfInfo parse_elf(const InputFile& f) {
  if (f.size() <= EI_CLASS) fail("{}: truncated ELF header ({} bytes)", f.label(), f.size());
  const auto cls = f.read_obj<uint8_t>(EI_CLASS, "ELF header");
  if (cls == ELFCLASS64) return parse_elf_class<Elf64_Ehdr, Elf64_Phdr>(f, EM_X86_64, "x86-64");
  if (cls == ELFCLASS32) return parse_elf_class<Elf32_Ehdr, Elf32_Phdr>(f, EM_386, "i386");
  fail("{}: ELF class {} is neither 32- nor 64-bit", f.label(), cls);
}

}  // namespace vireo::boot
