// vireo/acpi: the ACPI PM device: the fixed-hardware registers the FADT of src/acpi/tables.h points at, as one
// 16-port block on the PIO bus (default base 0x600):
//
//   +0  PM1a_STS  16 bit  write-1-to-clear; PWRBTN_STS (bit 8) is set by press_power_button()
//   +2  PM1a_EN   16 bit  read/write (TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN, PCIEXP_WAKE_DIS kept)
//   +4  PM1a_CNT  16 bit  SCI_EN (bit 0, 1 at reset), BM_RLD, SLP_TYP (bits 12:10); SLP_EN (bit 13) and GBL_RLS
//                         are write-only (read 0). Writing SLP_EN with SLP_TYP 5 (\_S5) = power off.
//   +8  PM_TMR    32 bit  read-only, 3.579545 MHz since the device was created (TMR_VAL_EXT)
//   +12 RESET_REG  8 bit  writing RESET_VALUE (0x06) = reset; other values are ignored
//   other offsets read 0 and ignore writes.
//
// SCI: level-triggered on ISA IRQ 9: asserted while SCI_EN and (PM1_STS & PM1_EN & PWRBTN) != 0. The guest
// acknowledges by writing 1 to PWRBTN_STS. TMR_STS/RTC_STS/WAK_STS are never set (no timer-carry interrupt, no
// wake events; only S5 is offered).
//
// Every access is guest-controlled: any width (1, 2, 4) at any offset is handled byte by byte; nothing a guest
// writes can throw. Thread-safe: vCPU threads access the registers while the control socket's thread presses
// the button. The callbacks run on the calling vCPU thread, without the device's lock held.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "acpi/tables.h"
#include "devices/bus.h"
#include "devices/vm_hooks.h"

namespace vireo::acpi {

class AcpiPm : public BusDevice {
 public:
  struct Hooks {
    std::function<void(bool level)> set_sci;  // drive the SCI line (IRQ 9)
    std::function<void()> poweroff;           // the guest entered S5
    std::function<void()> reset;              // the guest wrote RESET_VALUE to RESET_REG
    std::function<uint64_t()> clock_ns;       // monotonic nanoseconds for PM_TMR; default: steady_clock
  };
  explicit AcpiPm(Hooks hooks);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  std::string name() const override { return "acpi-pm"; }

  // The power button was pressed (e.g. the control socket's `shutdown`): sets PWRBTN_STS; raises the SCI
  // when PWRBTN_EN and SCI_EN are set.
  void press_power_button();

  // Register state, for tests and logs.
  uint16_t pm1_status() const;
  uint16_t pm1_enable() const;
  uint16_t pm1_control() const;
  bool sci_level() const;
  uint32_t pm_timer() const;

  // Device (devices/device.h; pm_state.cpp): PM1 registers and the PM timer's elapsed time, so the timer
  // goes on from the saved value rather than jumping.
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

 private:
  uint8_t reg_byte(uint64_t off) const;  // lock held
  void update_sci();                     // lock held

  Hooks hooks_;
  uint64_t start_ns_ = 0;
  mutable std::mutex mu_;
  uint16_t status_ = 0;
  uint16_t enable_ = 0;
  uint16_t control_ = kSciEn;
  bool sci_ = false;
};

// Wiring for the VMM (docs/acpi.md): creates the device, inserts it on hooks.pio_bus() at pm_base
// (kPmBlockLen ports), drives IRQ kSciIrq through hooks.set_irq_line, registers it for query-vm as
// {"acpi", "acpi0", "io 0x600-0x60f sci 9 ..."}. `poweroff`/`reset` are what the VMM does for S5 / the
// reset register (exit 0 / exit 2).
std::shared_ptr<AcpiPm> install_pm(VmHooks& hooks, std::function<void()> poweroff, std::function<void()> reset,
                                   uint16_t pm_base = kDefaultPmBase);

}  // namespace vireo::acpi
