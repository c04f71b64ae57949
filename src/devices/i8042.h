// vireo/devices: a minimal i8042 keyboard controller (ports 0x60 data, 0x64 status/command), enough for
// guests to probe it and to reset the machine: command 0xFE (pulse the reset line) or writing an output-port
// value with bit 0 clear (command 0xD1) calls the reset callback (the VMM then exits with code 2).
// No keyboard or mouse is attached: keyboard/aux commands answer as an empty controller would.
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>

#include "devices/bus.h"

namespace vireo {

class I8042 : public BusDevice {
 public:
  static constexpr uint64_t kDataPort = 0x60;
  static constexpr uint64_t kCommandPort = 0x64;  // insert the device at 0x60 with length 5 (0x60..0x64)

  explicit I8042(std::function<void()> on_reset);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  std::string name() const override { return "i8042"; }

  // Device: output buffer, command byte, pending command.
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

 private:
  void command(uint8_t cmd);
  void data_write(uint8_t v);

  std::function<void()> on_reset_;
  std::mutex mu_;
  std::optional<uint8_t> out_;       // output buffer (status bit 0)
  uint8_t command_byte_ = 0x45;      // kbd interrupt on, system flag, translate
  uint8_t pending_ = 0;              // command waiting for its data byte (0x60 / 0xD1 / 0xD2 / 0xD3 / 0xD4)
};

}  // namespace vireo
