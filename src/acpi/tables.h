// vireo/acpi: the ACPI tables vireo-vmm gives its guests (ACPI 6.x, full fixed hardware, not hardware-reduced):
//
//   RSDP (rev 2) -> XSDT (and RSDT) -> FADT (rev 6) -> FACS, DSDT (AML, src/acpi/aml.h: \_S5, and with a PCI
//                                                     root \_SB.PCI0 (the host bridge: _CRS windows, _PRT)
//                                                     and \_SB.MRES (PNP0C02 reserving ECAM))
//                                   -> MADT (a local APIC per vCPU, the IOAPIC, the SCI override (level,
//                                            active high), LINT1 = NMI)
//                                   -> MCFG (with a PCI root: the ECAM region of segment 0)
//
// The FADT describes the PM device of src/acpi/pm.h: PM1a event block (status + enable), PM1a control block,
// a 32-bit ACPI PM timer and the reset register, all in I/O space in one 16-byte block at `pm_base`; SCI on
// ISA IRQ 9 (level, active high); the fixed-feature power button; SMI_CMD = 0 (the platform is always in ACPI
// mode: SCI_EN reads as 1).
//
// Where they go: by default the RSDP at 0xf8000 and the other tables behind it, inside the BIOS area
// 0xf0000-0xfffff that src/boot reserves in the e820 map (the MP table sits at 0xf0000-0xf7fff). Linux finds
// the RSDP by scanning 0xe0000-0xfffff, or via boot_params.acpi_rsdp_addr / PVH start_info.rsdp_paddr.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "memory/guest_memory.h"

namespace vireo::acpi {

// ---- the PM block (I/O ports, offsets from TableConfig::pm_base) ----
inline constexpr uint16_t kDefaultPmBase = 0x600;
inline constexpr uint16_t kPmBlockLen = 16;
inline constexpr uint16_t kPm1EvtOffset = 0;   // PM1a_STS (2 bytes) then PM1a_EN (2 bytes)
inline constexpr uint16_t kPm1EvtLen = 4;
inline constexpr uint16_t kPm1CntOffset = 4;   // PM1a_CNT (2 bytes)
inline constexpr uint16_t kPm1CntLen = 2;
inline constexpr uint16_t kPmTmrOffset = 8;    // PM_TMR (4 bytes, 32-bit counter at 3.579545 MHz)
inline constexpr uint16_t kPmTmrLen = 4;
inline constexpr uint16_t kResetOffset = 12;   // RESET_REG (1 byte)
inline constexpr uint8_t kResetValue = 0x06;   // RESET_VALUE written there = reset
inline constexpr uint16_t kSciIrq = 9;         // SCI_INT (ISA IRQ 9 = GSI 9, level, active high)
inline constexpr uint8_t kSlpTypS5 = 5;        // \_S5 package: SLP_TYPa = 5
inline constexpr uint64_t kPmTimerHz = 3579545;

// PM1 status / enable bits (ACPI 6.x, 4.8.3.1).
inline constexpr uint16_t kTmrSts = 1u << 0, kBmSts = 1u << 4, kGblSts = 1u << 5, kPwrBtnSts = 1u << 8,
                          kSlpBtnSts = 1u << 9, kRtcSts = 1u << 10, kWakSts = 1u << 15;
inline constexpr uint16_t kTmrEn = 1u << 0, kGblEn = 1u << 5, kPwrBtnEn = 1u << 8, kSlpBtnEn = 1u << 9,
                          kRtcEn = 1u << 10;
// PM1 control bits (4.8.3.2).
inline constexpr uint16_t kSciEn = 1u << 0, kBmRld = 1u << 1, kGblRls = 1u << 2, kSlpTypShift = 10,
                          kSlpTypMask = 7u << 10, kSlpEn = 1u << 13;

// FADT flags (5.2.9, table 5.10): WBINVD, PROC_C1, SLP_BUTTON (no fixed sleep button), TMR_VAL_EXT (32-bit
// PM timer), RESET_REG_SUP. PWR_BUTTON (bit 4) stays 0: the power button is the fixed-feature one.
inline constexpr uint32_t kFadtWbinvd = 1u << 0, kFadtProcC1 = 1u << 2, kFadtPwrButton = 1u << 4,
                          kFadtSlpButton = 1u << 5, kFadtTmrValExt = 1u << 8, kFadtResetRegSup = 1u << 10,
                          kFadtHwReduced = 1u << 20;
inline constexpr uint32_t kFadtFlags = kFadtWbinvd | kFadtProcC1 | kFadtSlpButton | kFadtTmrValExt | kFadtResetRegSup;
// IAPC_BOOT_ARCH: legacy (ISA) devices, an 8042, no VGA.
inline constexpr uint16_t kBootArchLegacyDevices = 1u << 0, kBootArch8042 = 1u << 1, kBootArchNoVga = 1u << 2;
// MADT interrupt source override flags (MPS INTI): polarity bits 1:0 (01 active high), trigger bits 3:2 (11 level).
inline constexpr uint16_t kMadtActiveHigh = 0x1, kMadtLevel = 0xc;

// ---- table placement ----
inline constexpr uint64_t kDefaultBase = 0xf8000;   // RSDP here (16-byte aligned, inside the 0xe0000 scan area)
inline constexpr uint64_t kDefaultLimit = 0x100000; // end of the reserved BIOS area

// The PCI root bridge as the VMM built it (src/pci PciHostBridge + the DeviceManager's BAR windows): what
// the DSDT's \_SB.PCI0 and the MCFG describe. Linux with ACPI finds PCI only through these.
struct PciIntx {
  uint8_t slot = 0;  // device number on bus 0 (1-31)
  uint8_t pin = 0;   // 0 = INTA .. 3 = INTD (the _PRT numbering; config register 0x3d is this + 1)
  uint32_t gsi = 0;  // IOAPIC input the device drives (vireo routes them 1:1, no swizzling, no link devices)
};
struct PciRoot {
  uint64_t ecam_base = 0;  // segment 0, buses 0 .. ecam_size / 1 MiB - 1 (1 MiB of config space per bus)
  uint64_t ecam_size = 0;
  uint64_t mem32_base = 0, mem32_size = 0;  // BAR window below 4 GiB
  uint64_t mem64_base = 0, mem64_size = 0;  // optional window above 4 GiB (size 0: none)
  uint32_t io_base = 0, io_size = 0;        // I/O BAR window (above 0xcff)
  std::vector<PciIntx> intx = {};           // one entry per interrupt pin in use
  uint8_t end_bus() const { return static_cast<uint8_t>((ecam_size >> 20) - 1); }
};

struct TableConfig {
  uint32_t cpus = 1;                 // 1-254: LAPIC ids 0..cpus-1, IOAPIC id = cpus (as the MP table)
  uint64_t base = kDefaultBase;      // RSDP address; 16-byte aligned
  uint64_t limit = kDefaultLimit;    // the tables must end at or below this
  uint16_t pm_base = kDefaultPmBase; // I/O base of the PM block (kPmBlockLen ports)
  uint64_t ioapic_addr = 0xfec00000;
  uint64_t lapic_addr = 0xfee00000;
  std::optional<PciRoot> pci = std::nullopt;  // none: no PCI0 device, no MCFG
};

// Where each table landed (guest-physical) and the bytes to put at `base`.
struct Tables {
  uint64_t base = 0;
  std::vector<uint8_t> image;  // image[0] is at `base`
  uint64_t rsdp = 0, facs = 0, rsdt = 0, xsdt = 0, fadt = 0, dsdt = 0, madt = 0, mcfg = 0;  // mcfg 0: none
};

// Builds every table; throws Error ("acpi: ...") for a bad config (cpus out of range, misaligned base, tables
// that would not fit below `limit`).
Tables build_tables(const TableConfig& cfg);

// Builds the tables, writes them into guest RAM at cfg.base and zero-fills the rest of [base, limit) (so no
// stale table from an earlier writer survives). Returns the RSDP address. Throws Error if the range is not RAM.
uint64_t write_tables(GuestMemory& mem, const TableConfig& cfg);

// The DSDT's AML body (after the 36-byte header): with a PCI root Scope (\_SB_) { Device (PCI0) {...},
// Device (MRES) {...} }, then always Name (\_S5, Package (4) { 5, 0, 0, 0 }).
std::vector<uint8_t> dsdt_aml(const TableConfig& cfg);
// The \_S5 object alone (13 bytes).
std::vector<uint8_t> s5_aml();

// 8-bit sum of the bytes (a valid table sums to 0).
uint8_t checksum(std::span<const uint8_t> bytes);

}  // namespace vireo::acpi
