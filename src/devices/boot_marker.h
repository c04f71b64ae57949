// vireo/devices: the boot-marker port (I/O 0x502, 4 bytes wide: 0x502-0x505). The guest writes a 32-bit
// milestone id (outl; 1- and 2-byte writes are zero-extended); the VMM logs
//   boot-marker <id> at <microseconds since VMM process start>
// to stderr or the --boot-log file. Reads return the number of markers seen so far (so a guest can check the
// port exists). Startup benchmarks use the first marker.
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "devices/bus.h"

namespace vireo {

class BootMarker : public BusDevice {
 public:
  static constexpr uint64_t kPort = 0x502;  // insert with length 4
  using Clock = std::function<uint64_t()>;  // microseconds since process start
  using Sink = std::function<void(const std::string& line)>;

  BootMarker(Clock clock, Sink sink) : clock_(std::move(clock)), sink_(std::move(sink)) {}

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  std::string name() const override { return "boot-marker"; }

  struct Mark {
    uint32_t id;
    uint64_t us;
  };
  std::vector<Mark> marks() const;

 private:
  Clock clock_;
  Sink sink_;
  mutable std::mutex mu_;
  std::vector<Mark> marks_;
};

// Microseconds since this process started (taken at static initialisation, i.e. after exec and dynamic
// linking; /proc's start time is too coarse).
uint64_t micros_since_process_start();

}  // namespace vireo
