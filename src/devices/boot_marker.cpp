#include "devices/boot_marker.h"

#include <fmt/format.h>
#include <time.h>
#include <unistd.h>


namespace vireo {

void BootMarker::read(uint64_t offset, std::span<uint8_t> data) {
  uint32_t n;
  {
    std::lock_guard lock(mu_);
    n = static_cast<uint32_t>(marks_.size());
  }
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t byte = offset + i;
    data[i] = byte < 4 ? static_cast<uint8_t>(n >> (8 * byte)) : 0xff;
  }
}

void BootMarker::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;  // only writes at the port's base count
  uint32_t id = 0;
  for (size_t i = 0; i < data.size() && i < 4; ++i) id |= static_cast<uint32_t>(data[i]) << (8 * i);
  const uint64_t us = clock_ ? clock_() : 0;
  {
    std::lock_guard lock(mu_);
    marks_.push_back(Mark{id, us});
  }
  if (sink_) sink_(fmt::format("boot-marker {} at {}", id, us));
}

std::vector<BootMarker::Mark> BootMarker::marks() const {
  std::lock_guard lock(mu_);
  return marks_;
}

namespace {

uint64_t now_us(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

// Taken during static initialisation of the vireo-vmm binary: right after exec and dynamic linking.
// (/proc/self/stat's start time has only clock-tick granularity, too coarse for startup figures.)
struct StartTime {
  uint64_t monotonic_us = now_us(CLOCK_MONOTONIC);
};

const StartTime g_start;

}  // namespace

uint64_t micros_since_process_start() {
  const uint64_t now = now_us(CLOCK_MONOTONIC);
  return now > g_start.monotonic_us ? now - g_start.monotonic_us : 0;
}

}  // namespace vireo
