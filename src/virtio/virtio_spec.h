// vireo/virtio: constants from the virtio 1.2 specification (modern devices only).
#pragma once
#include <cstdint>

namespace vireo::virtio {

// Device status (2.1)
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

// Reserved feature bits (6)
inline constexpr int kFIndirectDesc = 28;
inline constexpr int kFEventIdx = 29;
inline constexpr int kFVersion1 = 32;
inline constexpr int kFAccessPlatform = 33;
inline constexpr int kFRingPacked = 34;

inline constexpr uint64_t bit(int n) { return 1ull << n; }

// Device types (5)
inline constexpr uint32_t kTypeNet = 1;
inline constexpr uint32_t kTypeBlock = 2;
inline constexpr uint32_t kTypeConsole = 3;
inline constexpr uint32_t kTypeRng = 4;
inline constexpr uint32_t kTypeBalloon = 5;

// Split virtqueue (2.7)
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint16_t kMaxQueueSize = 32768;

struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16);

struct VringUsedElem {
  uint32_t id;
  uint32_t len;
};
static_assert(sizeof(VringUsedElem) == 8);

// Sizes of the three split-ring areas for a queue of `n` entries (with the event-idx trailers).
inline constexpr uint64_t desc_table_bytes(uint32_t n) { return 16ull * n; }
inline constexpr uint64_t avail_ring_bytes(uint32_t n) { return 6 + 2ull * n; }
inline constexpr uint64_t used_ring_bytes(uint32_t n) { return 6 + 8ull * n; }

// vring_need_event: true if the other side asked to be notified for an index in (old, new_idx].
inline constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old);
}

}  // namespace vireo::virtio
