// vireo/virtio: virtqueues. The device side of the split ring (2.7 of the virtio 1.2 spec), with indirect
// descriptors and VIRTIO_F_EVENT_IDX. Everything in guest memory is guest-controlled: every index, address
// and length is validated and a violation throws QueueError (the device then goes DEVICE_NEEDS_RESET).
//
// The interface (Virtqueue, DescChain) is ring-format neutral so a packed ring can be added as a second
// implementation: a chain carries its buffer id and its descriptor count, which is what a packed ring needs
// to write its used descriptor.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/error.h"
#include "memory/guest_memory.h"
#include "virtio/virtio_spec.h"

namespace vireo::virtio {

class QueueError : public Error {
 public:
  using Error::Error;
};

// One guest buffer, already checked to lie inside guest RAM (in one region).
struct Segment {
  uint64_t addr = 0;
  uint32_t len = 0;
};

// A buffer the driver made available: device-readable segments first, then device-writable ones.
struct DescChain {
  uint16_t id = 0;          // split: head descriptor index
  uint16_t desc_count = 0;  // descriptors in the chain (the indirect table's referrer counts as one)
  std::vector<Segment> readable, writable;
  uint64_t readable_bytes = 0, writable_bytes = 0;
};

// Where the driver put the queue and how big it is (transport registers).
struct QueueConfig {
  uint16_t size = 0;
  uint64_t desc_addr = 0;    // descriptor table (16-byte aligned)
  uint64_t driver_addr = 0;  // available ring (2-byte aligned)
  uint64_t device_addr = 0;  // used ring (4-byte aligned)
};

class Virtqueue {
 public:
  virtual ~Virtqueue() = default;
  // The next available chain, or nullopt when the driver has made none. Throws QueueError.
  virtual std::optional<DescChain> pop() = 0;
  // Returns a chain to the driver with `written` bytes written into its writable part.
  virtual void push(const DescChain& chain, uint32_t written) = 0;
  // After pushes: does the driver want a used-buffer notification now? (Event idx or NO_INTERRUPT.)
  virtual bool should_notify() = 0;
  // Driver->device notification suppression. enable_notifications() re-arms and returns true if buffers
  // arrived meanwhile (the caller then pops again, avoiding a lost wake-up).
  virtual void disable_notifications() = 0;
  virtual bool enable_notifications() = 0;
  virtual uint16_t size() const = 0;
};

class SplitQueue final : public Virtqueue {
 public:
  // Validates the configuration (size a power of two <= 32768, ring alignment, rings inside RAM) and
  // throws QueueError otherwise. `features` are the negotiated ones (INDIRECT_DESC, EVENT_IDX matter).
  SplitQueue(GuestMemory& mem, const QueueConfig& cfg, uint64_t features);

  std::optional<DescChain> pop() override;
  void push(const DescChain& chain, uint32_t written) override;
  bool should_notify() override;
  void disable_notifications() override;
  bool enable_notifications() override;
  uint16_t size() const override { return size_; }

  uint16_t last_avail_idx() const { return last_avail_; }
  uint16_t used_idx() const { return used_idx_; }

  // Snapshot state: the device-side indexes (the rings themselves are in guest RAM).
  struct State {
    uint16_t last_avail = 0, used_idx = 0, signalled_used = 0;
    bool signalled_valid = false, notifications_enabled = true;
  };
  State state() const;
  // Restores `s` after checking it against the rings in guest RAM (the memory image comes with the state):
  // the used ring's idx must equal s.used_idx, and neither the driver's avail idx nor the device's
  // last_avail may run more than a queue size ahead of what they follow. Throws QueueError otherwise.
  void set_state(const State& s);

 private:
  uint16_t avail_idx() const;
  void walk_indirect(const VringDesc& d, DescChain& chain, bool& seen_writable);
  void add_segment(const VringDesc& d, DescChain& chain, bool& seen_writable);

  GuestMemory& mem_;
  uint16_t size_;
  bool indirect_, event_idx_;
  const uint8_t* desc_;  // host views of the three areas (validated at construction)
  uint8_t* avail_;
  uint8_t* used_;
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  uint16_t signalled_used_ = 0;
  bool signalled_valid_ = false;
  bool notifications_enabled_ = true;
};

// Byte copies across a chain's segments, starting `offset` bytes into the chain part. Return the number
// of bytes copied (short when the segments end). Throw GuestMemoryError only if memory changed under us.
size_t copy_from_segments(const GuestMemory& mem, const std::vector<Segment>& segs, uint64_t offset,
                          std::span<uint8_t> out);
size_t copy_to_segments(GuestMemory& mem, const std::vector<Segment>& segs, uint64_t offset,
                        std::span<const uint8_t> in);

}  // namespace vireo::virtio
