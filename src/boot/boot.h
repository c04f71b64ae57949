// vireo/boot: kernel loaders. Identifies a kernel file (Linux bzImage, ELF with a PVH note, or a Vireo test
// guest ELF64), writes it and everything it needs (boot parameters, cmdline, initrd, page tables, GDT, MP
// table) into guest RAM, and returns the initial register state of every vCPU for the core to apply.
//
// Guest-physical layout of the boot data (all below 1 MiB; see docs/boot.md):
//   0x00000-0x00fff  left zero (real-mode IVT / BDA area)
//   0x01000-0x01fff  GDT (null, 0x08 CS32, 0x10 CS64, 0x18 DS, 0x20 TSS) + a zeroed TSS at 0x1800
//   0x02000-0x02fff  empty IDT (limit 0) area
//   0x03000-0x03fff  boot parameters: vireo_boot_page (test guest) | boot_params "zero page" (bzImage) |
//                    hvm_start_info + module list (PVH)
//   0x04000-0x04fff  PVH memory map (hvm_memmap_table_entry[])
//   0x05000-0x06fff  kernel command line (NUL-terminated, at most kMaxCmdline bytes)
//   0x09000-0x0efff  page tables: PML4 0x9000, PDPT 0xa000, 4 page directories 0xb000-0xefff
//                    (low 4 GiB identity-mapped with 2 MiB pages, P|RW|U/S at every level)
//   0x9fc00-0x9ffff  reserved (EBDA area; e820: reserved)
//   0xf0000-0xfffff  MP floating pointer at 0xf0000, MP configuration table at 0xf0010 (BIOS area, where
//                    Linux scans for it; e820: reserved); ACPI tables at 0xf8000 (src/acpi/tables.h,
//                    acpi::write_tables: RSDP, FACS, DSDT, FADT, MADT, MCFG with a PCI root, XSDT, RSDT)
// Kernels and test guests load at >= 1 MiB; initrd goes as high as allowed in low RAM.
//
// Kernel kinds: a file starting with the ELF magic is an ELF64 x86-64 executable (or an ELF32 i386 one,
// which must have a PVH note). If it carries a "Vireo"
// ELF note (type 1, VIREO_ELFNOTE_TEST_GUEST) it is a test guest even if it also has a PVH note (test guests
// carry both, so QEMU boots the same file through PVH); else a Xen PHYS32_ENTRY note (type 18) makes it a
// PVH kernel; else it is a test guest. Anything else must be a bzImage (0xAA55 + "HdrS").
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "acpi/tables.h"
#include "memory/guest_memory.h"

namespace vireo::boot {

enum class KernelKind { TestGuestElf64, PvhElf, LinuxBzImage };
const char* kernel_kind_name(KernelKind k);  // "test-guest-elf64", "pvh-elf", "bzimage"

struct SpecialRegs {
  kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
  kvm_dtable gdt, idt;
  uint64_t cr0, cr3, cr4, efer;
};

struct VcpuInit {
  bool runnable;      // false: waits for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED): Linux and PVH APs
  kvm_regs regs;      // complete: rip, rsp, rsi, rdi, rbx, rflags (bit 1 set), others 0
  SpecialRegs sregs;  // core does KVM_GET_SREGS, overwrites exactly these fields, KVM_SET_SREGS
};

struct E820Entry {
  uint64_t addr, size;
  uint32_t type;  // 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable
};
inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

struct BootConfig {
  std::string kernel_path, initrd_path, cmdline;
  uint32_t cpus = 1;
  // The ACPI tables load() writes (cpus is taken from above). With a PCI root its ECAM range is also marked
  // reserved in the e820 map, which Linux requires before it uses the MCFG.
  acpi::TableConfig acpi = {};
  bool long_mode = true;  // false for an i686 VM: 32-bit entry only (bzImage 32-bit protocol, PVH)
};

struct BootPlan {
  KernelKind kind;
  std::vector<VcpuInit> vcpus;  // one per vCPU; index = vCPU id = APIC id
  bool long_mode_entry;         // every runnable vCPU enters in long mode with U/S=1 page tables, so the
                                // PVM native switch may be applied (core decides; see test-guests.md)
  std::vector<E820Entry> e820;
  std::string description;      // e.g. "test guest ELF64, entry 0x100000"
  // Added fields (after the contract):
  uint64_t entry = 0;           // guest-physical entry point of the BSP
  uint64_t boot_params_gpa = 0; // boot page / zero page / hvm_start_info
};

// Fixed guest-physical addresses of the boot data (see the layout above).
namespace addr {
inline constexpr uint64_t kGdt = 0x1000;
inline constexpr uint64_t kTss = 0x1800;
inline constexpr uint64_t kIdt = 0x2000;
inline constexpr uint64_t kBootParams = 0x3000;
inline constexpr uint64_t kPvhMemmap = 0x4000;
inline constexpr uint64_t kCmdline = 0x5000;
inline constexpr uint64_t kMaxCmdline = 0x2000;  // bytes including the NUL
inline constexpr uint64_t kPml4 = 0x9000;
inline constexpr uint64_t kPdpt = 0xa000;
inline constexpr uint64_t kPd = 0xb000;          // 4 pages
inline constexpr uint64_t kMpTable = 0xf0000;    // MP floating pointer, then the config table at +0x10
inline constexpr uint64_t kEbdaStart = 0x9fc00;  // e820 reserved from here to 0xa0000
inline constexpr uint64_t kBiosStart = 0xf0000;  // e820 reserved 0xf0000-0x100000
inline constexpr uint64_t kAcpi = 0xf8000;       // RSDP (Linux also scans 0xe0000-0xfffff for it)
inline constexpr uint64_t kBootDataEnd = 0x100000;  // kernels/test guests must load at or above this
}  // namespace addr

// GDT selectors (Linux's boot selectors: __BOOT_CS 0x10, __BOOT_DS 0x18).
inline constexpr uint16_t kSelCode32 = 0x08;
inline constexpr uint16_t kSelCode64 = 0x10;
inline constexpr uint16_t kSelData = 0x18;
inline constexpr uint16_t kSelTss = 0x20;

// Control register values used for long-mode entry.
inline constexpr uint64_t kCr0Pe = 1ull << 0, kCr0Mp = 1ull << 1, kCr0Et = 1ull << 4, kCr0Ne = 1ull << 5,
                          kCr0Wp = 1ull << 16, kCr0Pg = 1ull << 31;
inline constexpr uint64_t kCr4Pae = 1ull << 5, kCr4Osfxsr = 1ull << 9, kCr4Osxmmexcpt = 1ull << 10;
inline constexpr uint64_t kEferSce = 1ull << 0, kEferLme = 1ull << 8, kEferLma = 1ull << 10,
                          kEferNx = 1ull << 11;

// Opens + identifies the kernel file; throws Error with a one-line message ("kernel /x: no such file or
// directory", "kernel /x: truncated bzImage (...)", "kernel /x: not a bzImage or ELF64 file").
// `long_mode` false (an i686 VM) also refuses kernels that need long mode ("kernel /x: a 64-bit ... cannot run
// on an i686 VM ...").
KernelKind probe_kernel(const std::string& path, bool long_mode = true);

// Writes kernel, initrd, cmdline, boot params, page tables, GDT, MP table and the ACPI tables (cfg.acpi) into
// guest RAM, and points boot_params.acpi_rsdp_addr / PVH rsdp_paddr at the RSDP; returns the plan.
// Throws Error (one line) on any problem with the files or if they do not fit in RAM.
BootPlan load(GuestMemory& mem, const BootConfig& cfg);

// The e820 map for `mem`: RAM below the EBDA, reserved EBDA + BIOS area, RAM from 1 MiB to the end of low
// RAM, RAM above 4 GiB; the MMIO hole is never RAM. With a PCI root in `acpi`, its ECAM range is reserved.
std::vector<E820Entry> build_e820(const GuestMemory& mem, const acpi::TableConfig& acpi = {});

}  // namespace vireo::boot
