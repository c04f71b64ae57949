#include "acpi/pm.h"

#include <chrono>

#include <fmt/format.h>

namespace vireo::acpi {

namespace {

// Status bits the device can set (and so the guest can clear); enable/control bits that are stored.
constexpr uint16_t kStatusMask = kPwrBtnSts;
constexpr uint16_t kEnableMask = kTmrEn | kGblEn | kPwrBtnEn | kSlpBtnEn | kRtcEn | (1u << 14);
constexpr uint16_t kControlMask = kSciEn | kBmRld | kSlpTypMask;
// Events that raise the SCI when enabled.
constexpr uint16_t kSciEvents = kPwrBtnSts;

uint64_t steady_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace

AcpiPm::AcpiPm(Hooks hooks) : hooks_(std::move(hooks)) {
  if (!hooks_.clock_ns) hooks_.clock_ns = steady_ns;
  start_ns_ = hooks_.clock_ns();
}

uint32_t AcpiPm::pm_timer() const {
  const uint64_t ns = hooks_.clock_ns() - start_ns_;
  // ticks = ns * 3579545 / 1e9 without overflowing 64 bits.
  const uint64_t ticks = (ns / 1000000000) * kPmTimerHz + (ns % 1000000000) * kPmTimerHz / 1000000000;
  return static_cast<uint32_t>(ticks);
}

uint8_t AcpiPm::reg_byte(uint64_t off) const {
  auto lo_hi = [](uint32_t v, uint64_t i) { return static_cast<uint8_t>(v >> (8 * i)); };
  if (off < 2) return lo_hi(status_, off);
  if (off < 4) return lo_hi(enable_, off - 2);
  if (off < 6) return lo_hi(control_ & kControlMask, off - 4);  // SLP_EN, GBL_RLS read as 0
  if (off >= kPmTmrOffset && off < kPmTmrOffset + 4u) return lo_hi(pm_timer(), off - kPmTmrOffset);
  return 0;  // reserved bytes and RESET_REG read 0
}

void AcpiPm::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); i++) {
    const uint64_t off = offset + i;
    data[i] = off < kPmBlockLen ? reg_byte(off) : 0xff;
  }
}

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data) {
  bool poweroff = false, reset = false;
  {
    std::lock_guard lock(mu_);
    bool sleep = false;
    for (size_t i = 0; i < data.size(); i++) {
      const uint64_t off = offset + i;
      if (off >= kPmBlockLen) break;
      const uint16_t v = data[i], shift = static_cast<uint16_t>(8 * (off & 1));
      const auto byte_mask = static_cast<uint16_t>(0xffu << shift);
      if (off < 2) {
        status_ = static_cast<uint16_t>(status_ & ~((v << shift) & kStatusMask));  // write 1 to clear
      } else if (off < 4) {
        enable_ = static_cast<uint16_t>((enable_ & ~byte_mask) | ((v << shift) & kEnableMask & byte_mask));
      } else if (off < 6) {
        control_ = static_cast<uint16_t>((control_ & ~byte_mask) | ((v << shift) & kControlMask & byte_mask));
        if ((v << shift) & kSlpEn) sleep = true;  // SLP_EN is in the high byte, with SLP_TYP
      } else if (off == kResetOffset) {
        if (v == kResetValue) reset = true;
      }
    }
    if (sleep && ((control_ & kSlpTypMask) >> kSlpTypShift) == kSlpTypS5) poweroff = true;
    update_sci();
  }
  if (reset && hooks_.reset) hooks_.reset();
  else if (poweroff && hooks_.poweroff) hooks_.poweroff();
}

void AcpiPm::press_power_button() {
  std::lock_guard lock(mu_);
  status_ |= kPwrBtnSts;
  update_sci();
}

void AcpiPm::update_sci() {
  const bool level = (control_ & kSciEn) && (status_ & enable_ & kSciEvents);
  if (level == sci_) return;
  sci_ = level;
  if (hooks_.set_sci) hooks_.set_sci(level);
}

uint16_t AcpiPm::pm1_status() const {
  std::lock_guard lock(mu_);
  return status_;
}
uint16_t AcpiPm::pm1_enable() const {
  std::lock_guard lock(mu_);
  return enable_;
}
uint16_t AcpiPm::pm1_control() const {
  std::lock_guard lock(mu_);
  return control_;
}
bool AcpiPm::sci_level() const {
  std::lock_guard lock(mu_);
  return sci_;
}

std::shared_ptr<AcpiPm> install_pm(VmHooks& hooks, std::function<void()> poweroff, std::function<void()> reset,
                                   uint16_t pm_base) {
  AcpiPm::Hooks h;
  VmHooks* vm = &hooks;
  h.set_sci = [vm](bool level) { vm->set_irq_line(kSciIrq, level); };
  h.poweroff = std::move(poweroff);
  h.reset = std::move(reset);
  auto pm = std::make_shared<AcpiPm>(std::move(h));
  hooks.pio_bus().insert(pm_base, kPmBlockLen, pm);
  hooks.register_device(
      {"acpi", "acpi0",
       fmt::format("io 0x{:x}-0x{:x} sci {} (pm1_evt 0x{:x}, pm1_cnt 0x{:x}, pm_tmr 0x{:x}, reset 0x{:x}=0x{:02x})",
                   pm_base, pm_base + kPmBlockLen - 1, kSciIrq, pm_base + kPm1EvtOffset, pm_base + kPm1CntOffset,
                   pm_base + kPmTmrOffset, pm_base + kResetOffset, kResetValue)});
  return pm;
}

}  // namespace vireo::acpi
