#include "devices/bus.h"

#include <algorithm>
#include <mutex>

#include "common/error.h"

namespace vireo {

void Bus::insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
  if (len == 0 || base + len < base) fail("{} bus: invalid range 0x{:x}+0x{:x} for {}", name_, base, len, dev->name());
  std::unique_lock lock(mu_);
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len)
    fail("{} bus: {} at 0x{:x}+0x{:x} overlaps {}", name_, dev->name(), base, len, next->second.dev->name());
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.len > base)
      fail("{} bus: {} at 0x{:x}+0x{:x} overlaps {}", name_, dev->name(), base, len, prev->second.dev->name());
  }
  ranges_.emplace(base, Range{len, std::move(dev)});
}

bool Bus::remove(uint64_t base) {
  std::unique_lock lock(mu_);
  return ranges_.erase(base) > 0;
}

std::shared_ptr<BusDevice> Bus::lookup(uint64_t addr, uint64_t size, uint64_t* offset) const {
  std::shared_lock lock(mu_);
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  const uint64_t base = it->first;
  const uint64_t off = addr - base;
  if (off >= it->second.len || size > it->second.len - off) return nullptr;
  *offset = off;
  return it->second.dev;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
  uint64_t off = 0;
  auto dev = lookup(addr, data.size(), &off);
  if (!dev) {
    std::fill(data.begin(), data.end(), 0xff);
    return false;
  }
  dev->read(off, data);
  return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
  uint64_t off = 0;
  auto dev = lookup(addr, data.size(), &off);
  if (!dev) return false;
  dev->write(off, data);
  return true;
}

}  // namespace vireo
