// vireo/boot: what an i686 VM (a CPU without long mode) boots differently: which ELF entry it may use, and
// the Linux 32-bit boot protocol for a bzImage (Documentation/x86/boot.rst, "32-bit Boot Protocol").
#include <array>

#include "boot/internal.h"
#include "common/error.h"

namespace vireo::boot {

namespace {
constexpr uint64_t kCode32Start = 0x214;               // setup header: where the loader jumps in protected mode
constexpr uint64_t kFlatCode32 = 0x00cf9b000000ffffull;  // 32-bit code, base 0, 4 GiB, DPL0, execute/read
}  // namespace

KernelKind elf_kind(const InputFile& f, const ElfInfo& e, bool long_mode) {
  // Test guests carry both notes; an x86_64 VM enters them through the Vireo 64-bit protocol. Without long
  // mode only the PVH note's 32-bit entry is usable (as QEMU, which always takes the PVH note).
  if (e.pvh_entry && (!e.vireo_note || !long_mode)) return KernelKind::PvhElf;
  if (!long_mode)
    fail("{}: a 64-bit ELF kernel without a PVH entry note cannot run on an i686 VM (its CPU has no long mode)",
         f.label());
  return KernelKind::TestGuestElf64;
}

void use_linux32_entry(GuestMemory& mem, const BzImageInfo& b, BootPlan& p) {
  // The protocol asks for __BOOT_CS (0x10) and __BOOT_DS (0x18) as flat 4 GiB segments; our shared GDT has the
  // 64-bit code segment at 0x10, so that slot becomes 32-bit code for this VM (nothing else uses it here).
  mem.write_obj<uint64_t>(addr::kGdt + kSelCode64, kFlatCode32);
  // The protected-mode kernel may sit above its compiled-in default (pref_address, alignment); code32_start
  // must then name where it really is.
  mem.write_obj<uint32_t>(addr::kBootParams + kCode32Start, static_cast<uint32_t>(b.load_addr));

  p.entry = b.load_addr;
  VcpuInit& bsp = p.vcpus.at(0);
  bsp.regs = initial_regs(p.entry);  // EBP, EDI, EBX must be zero; interrupts off (RFLAGS = 2)
  bsp.regs.rsi = addr::kBootParams;
  bsp.sregs = protected_mode_sregs();  // CR0 = PE|ET: paging off; EFER = 0
  bsp.sregs.cs.selector = kSelCode64;  // __BOOT_CS, with the 32-bit descriptor written above
  p.description = fmt::format("Linux bzImage protocol {}.{:02} (32-bit entry), kernel at 0x{:x}, entry 0x{:x}",
                              b.version >> 8, b.version & 0xff, b.load_addr, p.entry);
}

}  // namespace vireo::boot
