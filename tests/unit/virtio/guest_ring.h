// Test helper: the driver side of a split virtqueue, written straight into a GuestMemory.
#pragma once
#include <cstdint>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/virtio_spec.h"
#include "virtio/virtqueue.h"

namespace vireo::virtio::testing {

class GuestRing {
 public:
  // Lays the queue out at `base`: descriptors, avail ring (+used_event), then the used ring 4 KiB later.
  GuestRing(GuestMemory& mem, uint64_t base, uint16_t size) : mem_(mem), size_(size) {
    cfg_.size = size;
    cfg_.desc_addr = base;
    cfg_.driver_addr = base + desc_table_bytes(size);
    cfg_.device_addr = (cfg_.driver_addr + avail_ring_bytes(size) + 4095) & ~4095ull;
    std::vector<uint8_t> zero(cfg_.device_addr + used_ring_bytes(size) - base, 0);
    mem_.write(base, zero);
  }
  const QueueConfig& config() const { return cfg_; }
  uint16_t size() const { return size_; }

  void set_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    VringDesc d{addr, len, flags, next};
    mem_.write_obj(cfg_.desc_addr + 16ull * i, d);
  }
  // Writes a descriptor into an indirect table at `table`.
  void set_indirect(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    VringDesc d{addr, len, flags, next};
    mem_.write_obj(table + 16ull * i, d);
  }
  // Makes `head` available and bumps avail idx.
  void publish(uint16_t head) {
    mem_.write_obj<uint16_t>(cfg_.driver_addr + 4 + 2ull * (avail_idx_ % size_), head);
    ++avail_idx_;
    mem_.write_obj<uint16_t>(cfg_.driver_addr + 2, avail_idx_);
  }
  void set_avail_idx(uint16_t idx) {
    avail_idx_ = idx;
    mem_.write_obj<uint16_t>(cfg_.driver_addr + 2, idx);
  }
  void set_avail_flags(uint16_t f) { mem_.write_obj<uint16_t>(cfg_.driver_addr, f); }
  void set_used_event(uint16_t v) { mem_.write_obj<uint16_t>(cfg_.driver_addr + 4 + 2ull * size_, v); }
  uint16_t avail_event() const { return mem_.read_obj<uint16_t>(cfg_.device_addr + 4 + 8ull * size_); }
  uint16_t used_flags() const { return mem_.read_obj<uint16_t>(cfg_.device_addr); }
  uint16_t used_idx() const { return mem_.read_obj<uint16_t>(cfg_.device_addr + 2); }
  VringUsedElem used(uint16_t i) const { return mem_.read_obj<VringUsedElem>(cfg_.device_addr + 4 + 8ull * (i % size_)); }

 private:
  GuestMemory& mem_;
  uint16_t size_;
  QueueConfig cfg_;
  uint16_t avail_idx_ = 0;
};

}  // namespace vireo::virtio::testing
