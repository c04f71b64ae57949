// vireo/devices: the debug-exit port (I/O 0x501). A write of byte N (the low byte of any access size) ends
// the VM: the VMM exits with status N. Reads return 0xff.
#pragma once
#include <cstdint>
#include <functional>

#include "devices/bus.h"

namespace vireo {

class DebugExit : public BusDevice {
 public:
  static constexpr uint64_t kPort = 0x501;  // insert with length 1
  explicit DebugExit(std::function<void(uint8_t)> on_exit) : on_exit_(std::move(on_exit)) {}

  void read(uint64_t, std::span<uint8_t> data) override {
    for (auto& b : data) b = 0xff;
  }
  void write(uint64_t, std::span<const uint8_t> data) override {
    if (!data.empty() && on_exit_) on_exit_(data[0]);
  }
  std::string name() const override { return "debug-exit"; }

 private:
  std::function<void(uint8_t)> on_exit_;
};

}  // namespace vireo
