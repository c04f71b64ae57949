// vireo/common: the guest-physical platform layout of a Vireo PC, in one place. Every fixed address, port
// range, window and interrupt line a device or the boot code uses is named here; the VMM's ResourceAllocator
// (src/vmm/resources.h) reserves the fixed ones and hands out the dynamic ones from the windows below.
//
// Adding a device at a fixed (architectural) address: name it here, then reserve it in
// vmm::DeviceManager::create_devices(). Devices that can live anywhere take addresses from a window instead.
#pragma once
#include <array>
#include <cstdint>

namespace vireo::layout {

// ---- guest RAM (src/memory): low RAM up to the 32-bit MMIO hole, the rest from 4 GiB
inline constexpr uint64_t kLowRamEnd = 0xC000'0000;      // RAM below the 32-bit MMIO hole (3 GiB)
inline constexpr uint64_t kMmioHoleStart = 0xC000'0000;  // PCI BARs, virtio-mmio, ECAM, IOAPIC, LAPIC
inline constexpr uint64_t kMmioHoleEnd = 0x1'0000'0000;
inline constexpr uint64_t kHighRamStart = 0x1'0000'0000;  // RAM above 3 GiB continues at 4 GiB

// ---- MMIO (all inside the hole)
inline constexpr uint64_t kPciMem32Base = 0xC000'0000, kPciMem32Size = 0x1000'0000;  // PCI 32-bit BAR window
inline constexpr uint64_t kVirtioMmioBase = 0xD000'0000, kVirtioMmioSize = 0x0100'0000;  // virtio-mmio windows
inline constexpr uint64_t kVirtioMmioStride = 0x1000;                                  // 4 KiB per device
inline constexpr uint64_t kPciEcamBase = 0xE000'0000, kPciEcamSize = 0x10'0000;        // ECAM, bus 0 only
inline constexpr uint64_t kIoapicBase = 0xFEC0'0000, kIoapicSize = 0x1000;             // in-kernel IOAPIC
inline constexpr uint64_t kLapicBase = 0xFEE0'0000, kLapicSize = 0x1000;               // in-kernel LAPICs
inline constexpr uint64_t kKvmIdentityMap = 0xFFFB'C000;  // KVM_SET_IDENTITY_MAP_ADDR (1 page, Intel)
inline constexpr uint64_t kKvmTss = 0xFFFB'D000;          // KVM_SET_TSS_ADDR (3 pages, Intel)
inline constexpr uint64_t kKvmPrivateSize = 0x4000;

// ---- I/O ports
inline constexpr uint64_t kPitBase = 0x40, kPitLen = 4;          // i8254 (in-kernel PIT2)
inline constexpr uint64_t kI8042Base = 0x60, kI8042Len = 5;      // 0x60 data .. 0x64 command/status
inline constexpr uint64_t kPcSpeakerPort = 0x61;                 // inside the i8042 range, PIT2's speaker
inline constexpr uint64_t kRtcBase = 0x70, kRtcLen = 2;          // CMOS index/data
inline constexpr uint64_t kPostPort = 0x80;                      // 8-bit boot marker (test guests only)
inline constexpr uint64_t kCom1Base = 0x3F8, kCom1Len = 8;       // 16550A serial0
inline constexpr uint64_t kDebugExitPort = 0x501;                // debug-exit (1 port)
inline constexpr uint64_t kBootMarkerBase = 0x502, kBootMarkerLen = 4;
inline constexpr uint64_t kAcpiPmBase = 0x600, kAcpiPmLen = 16;  // ACPI PM1a_EVT/CNT, PM_TMR, RESET_REG
inline constexpr uint64_t kPciConfigBase = 0xCF8, kPciConfigLen = 8;  // CF8 address, CFC data
inline constexpr uint64_t kPciIoBase = 0xC000, kPciIoSize = 0x4000;   // PCI I/O BAR window

// ---- interrupt lines (IOAPIC pin = GSI = ISA IRQ for 0-15; KVM's default routing in src/kvm)
inline constexpr uint32_t kIrqPit = 0, kIrqKeyboard = 1, kIrqCom1 = 4, kIrqRtc = 8, kIrqAcpiSci = 9;
inline constexpr uint32_t kIrqIdePrimary = 14, kIrqIdeSecondary = 15;
// Lines handed out to devices that need one (virtio-mmio, PCI INTx), in this order.
inline constexpr std::array<uint32_t, 13> kDeviceIrqLines = {5, 6, 7, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23};
inline constexpr uint32_t kIoapicPins = 24;
inline constexpr uint32_t kFirstMsiGsi = 24;  // MSI routes (KVM GSIs) from here up

}  // namespace vireo::layout
