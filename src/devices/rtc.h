// vireo/devices: the CMOS RTC (MC146818) at ports 0x70 (index; bit 7 = NMI disable) and 0x71 (data).
//
// Time registers 0x00 sec, 0x02 min, 0x04 hour, 0x06 weekday, 0x07 day, 0x08 month, 0x09 year, 0x32 century
// follow the host clock (UTC) plus an offset the guest may change by writing them; their format follows
// status register B (bit 2: binary instead of BCD, bit 1: 24-hour instead of 12-hour with bit 7 = PM).
// Status A reads with UIP clear, status C 0 (no interrupts), status D 0x80 (valid RAM and time). Alarm
// registers and the rest of the 128-byte CMOS RAM are plain storage.
#pragma once
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>

#include "devices/bus.h"

namespace vireo {

class CmosRtc : public BusDevice {
 public:
  static constexpr uint64_t kBase = 0x70;  // insert with length 2
  using Clock = std::function<time_t()>;

  explicit CmosRtc(Clock clock = nullptr);  // default: time(nullptr)

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  std::string name() const override { return "rtc"; }

  bool nmi_disabled() const;
  // Seeds CMOS RAM bytes (e.g. memory size fields firmware reads).
  void set_ram(uint8_t index, uint8_t value);

  // Device: index, NMI mask, CMOS RAM and the guest's offset to host time (so the guest clock keeps
  // following real time across a restore, as QEMU's rtc base=utc does).
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

 private:
  uint8_t read_index(uint8_t idx);
  void write_index(uint8_t idx, uint8_t v);
  uint8_t encode(unsigned v) const;
  unsigned decode(uint8_t v) const;

  Clock clock_;
  mutable std::mutex mu_;
  uint8_t index_ = 0;
  bool nmi_disabled_ = false;
  int64_t offset_ = 0;  // guest time - host time, seconds
  uint8_t ram_[128] = {};
};

}  // namespace vireo
