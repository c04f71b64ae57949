// libFuzzer target: random guest memory + ring configuration -> the split virtqueue parser. The parser must
// either return chains whose segments all lie in guest RAM, or throw QueueError; never crash, hang or touch
// memory outside the guest.
#include <cstdint>
#include <cstring>
#include <memory>

#include "memory/guest_memory.h"
#include "virtio/virtqueue.h"

using namespace vireo;
using namespace vireo::virtio;

namespace {
constexpr uint64_t kRam = 256 * 1024;

GuestMemory& memory() {
  static GuestMemory* mem = new GuestMemory(MemoryConfig{.size = kRam, .thp = false, .name = "fuzz-vq"});
  return *mem;
}

template <typename T>
T take(const uint8_t*& p, size_t& n) {
  T v{};
  size_t k = std::min(sizeof v, n);
  std::memcpy(&v, p, k);
  p += k;
  n -= k;
  return v;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GuestMemory& mem = memory();
  const uint8_t* p = data;
  size_t n = size;
  // Header: queue size, ring placement, features, how many pops, and where the rest of the input goes.
  uint16_t qsize = take<uint16_t>(p, n);
  uint32_t desc = take<uint32_t>(p, n) % (kRam + 64);
  uint32_t avail = take<uint32_t>(p, n) % (kRam + 64);
  uint32_t used = take<uint32_t>(p, n) % (kRam + 64);
  uint8_t flags = take<uint8_t>(p, n);
  uint8_t pops = take<uint8_t>(p, n);
  // Small queues are the interesting ones most of the time (so rings fit in the provided bytes).
  if (flags & 0x80) qsize = static_cast<uint16_t>(1u << (qsize % 6));
  // Guest memory: zero, then the remaining input placed at the descriptor table (rings are usually nearby).
  static std::vector<uint8_t> zero(kRam, 0);
  mem.write(0, zero);
  uint64_t at = (flags & 0x40) ? 0 : desc;
  if (at < kRam) mem.write(at, std::span<const uint8_t>(p, std::min<uint64_t>(n, kRam - at)));
  uint64_t features = bit(kFVersion1);
  if (flags & 1) features |= bit(kFIndirectDesc);
  if (flags & 2) features |= bit(kFEventIdx);
  try {
    SplitQueue q(mem, QueueConfig{qsize, desc, avail, used}, features);
    for (int i = 0; i < (pops % 64) + 1; ++i) {
      if (flags & 4) q.disable_notifications();
      auto c = q.pop();
      if (!c) {
        if (!q.enable_notifications()) break;
        continue;
      }
      for (const auto& s : c->readable)
        if (!mem.contains(s.addr, s.len)) __builtin_trap();
      for (const auto& s : c->writable)
        if (!mem.contains(s.addr, s.len)) __builtin_trap();
      if (c->readable.size() + c->writable.size() > 2u * kMaxQueueSize) __builtin_trap();
      uint8_t buf[64];
      copy_from_segments(mem, c->readable, 0, buf);
      copy_to_segments(mem, c->writable, 0, std::span<const uint8_t>(buf, sizeof buf));
      q.push(*c, static_cast<uint32_t>(c->writable_bytes));
      (void)q.should_notify();
    }
  } catch (const QueueError&) {
  }
  return 0;
}
