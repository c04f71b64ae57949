// Test helper: a minimal virtio driver (the guest's side of the transports) for unit tests, talking to
// devices through the buses of a FakeHooks exactly as a guest would (CF8/CFC config cycles, BAR MMIO).
#pragma once
#include <stdexcept>

#include "pci/pci.h"
#include "unit/virtio/fake_hooks.h"
#include "unit/virtio/guest_ring.h"
#include "virtio/virtio_spec.h"

namespace vireo::virtio::testing {

class Driver {
 public:
  virtual ~Driver() = default;
  virtual uint8_t status() = 0;
  virtual void write_status(uint8_t s) = 0;
  virtual uint64_t device_features() = 0;
  virtual void write_driver_features(uint64_t f) = 0;
  virtual uint16_t queue_max(uint16_t q) = 0;
  virtual void setup_queue(uint16_t q, const QueueConfig& c) = 0;
  virtual void notify(uint16_t q) = 0;
  virtual uint64_t config_read(uint64_t off, unsigned size) = 0;
  virtual void config_write(uint64_t off, uint64_t v, unsigned size) = 0;

  // Reset, negotiate `want` (& offered), set up `rings` as queues 0..n-1, DRIVER_OK. Returns the status.
  uint8_t init(uint64_t want, const std::vector<GuestRing*>& rings) {
    write_status(0);
    write_status(kStatusAcknowledge);
    write_status(kStatusAcknowledge | kStatusDriver);
    uint64_t f = device_features() & want;
    write_driver_features(f);
    write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    if (!(status() & kStatusFeaturesOk)) return status();
    for (size_t i = 0; i < rings.size(); ++i) setup_queue(static_cast<uint16_t>(i), rings[i]->config());
    write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    return status();
  }
};

class PciDriver : public Driver {
 public:
  PciDriver(FakeHooks& h, uint16_t device_id) : h_(h) {
    for (uint8_t s = 0; s < 32; ++s) {
      if (cfg_read(s, 0, 4) == (0x1af4u | uint32_t{device_id} << 16)) {
        slot_ = s;
        break;
      }
    }
    if (slot_ < 0) throw std::runtime_error("virtio pci device not found");
    bar_ = cfg_read(slot_, 0x10, 4) & ~0xfu;
    for (uint8_t p = static_cast<uint8_t>(cfg_read(slot_, 0x34, 1)); p; p = static_cast<uint8_t>(cfg_read(slot_, p + 1, 1))) {
      uint8_t id = static_cast<uint8_t>(cfg_read(slot_, p, 1));
      if (id == 0x11) msix_cap_ = p;
      if (id != 0x09) continue;
      uint8_t type = static_cast<uint8_t>(cfg_read(slot_, p + 3, 1));
      uint32_t off = cfg_read(slot_, p + 8, 4);
      if (type == 1) common_ = off;
      if (type == 2) {
        notify_ = off;
        mult_ = cfg_read(slot_, p + 16, 4);
      }
      if (type == 3) isr_ = off;
      if (type == 4) device_ = off;
    }
  }
  uint32_t cfg_read(int slot, uint16_t off, unsigned size) {
    h_.pio_write(0xcf8, 0x8000'0000u | slot << 11 | (off & 0xfc), 4);
    return h_.pio_read(0xcfc + (off & 3), size);
  }
  void cfg_write(int slot, uint16_t off, uint32_t v, unsigned size) {
    h_.pio_write(0xcf8, 0x8000'0000u | slot << 11 | (off & 0xfc), 4);
    h_.pio_write(0xcfc + (off & 3), v, size);
  }
  uint64_t common(uint64_t off, unsigned size) { return h_.mmio_read(bar_ + common_ + off, size); }
  void set_common(uint64_t off, uint64_t v, unsigned size) { h_.mmio_write(bar_ + common_ + off, v, size); }

  uint8_t status() override { return static_cast<uint8_t>(common(20, 1)); }
  void write_status(uint8_t s) override { set_common(20, s, 1); }
  uint64_t device_features() override {
    set_common(0, 0, 4);
    uint64_t lo = common(4, 4);
    set_common(0, 1, 4);
    return lo | common(4, 4) << 32;
  }
  void write_driver_features(uint64_t f) override {
    set_common(8, 0, 4);
    set_common(12, f & 0xffffffff, 4);
    set_common(8, 1, 4);
    set_common(12, f >> 32, 4);
  }
  uint16_t queue_max(uint16_t q) override {
    set_common(22, q, 2);
    return static_cast<uint16_t>(common(24, 2));
  }
  void setup_queue(uint16_t q, const QueueConfig& c) override {
    set_common(22, q, 2);
    set_common(24, c.size, 2);
    set_common(32, c.desc_addr & 0xffffffff, 4);
    set_common(36, c.desc_addr >> 32, 4);
    set_common(40, c.driver_addr & 0xffffffff, 4);
    set_common(44, c.driver_addr >> 32, 4);
    set_common(48, c.device_addr, 8);
    set_common(28, 1, 2);
  }
  void notify(uint16_t q) override {
    set_common(22, q, 2);
    uint64_t off = common(30, 2);
    h_.mmio_write(bar_ + notify_ + off * mult_, q, 2);
  }
  uint64_t config_read(uint64_t off, unsigned size) override { return h_.mmio_read(bar_ + device_ + off, size); }
  void config_write(uint64_t off, uint64_t v, unsigned size) override { h_.mmio_write(bar_ + device_ + off, v, size); }
  uint8_t read_isr() { return static_cast<uint8_t>(h_.mmio_read(bar_ + isr_, 1)); }

  int slot() const { return slot_; }
  uint32_t bar() const { return bar_; }
  uint8_t msix_cap() const { return msix_cap_; }
  uint32_t notify_off() const { return notify_; }
  uint32_t multiplier() const { return mult_; }

 private:
  FakeHooks& h_;
  int slot_ = -1;
  uint32_t bar_ = 0, common_ = 0, notify_ = 0, mult_ = 0, isr_ = 0, device_ = 0;
  uint8_t msix_cap_ = 0;
};

class MmioDriver : public Driver {
 public:
  MmioDriver(FakeHooks& h, uint64_t base) : h_(h), base_(base) {}
  uint32_t reg(uint64_t off) { return static_cast<uint32_t>(h_.mmio_read(base_ + off, 4)); }
  void set_reg(uint64_t off, uint32_t v) { h_.mmio_write(base_ + off, v, 4); }

  uint8_t status() override { return static_cast<uint8_t>(reg(0x70)); }
  void write_status(uint8_t s) override { set_reg(0x70, s); }
  uint64_t device_features() override {
    set_reg(0x14, 0);
    uint64_t lo = reg(0x10);
    set_reg(0x14, 1);
    return lo | uint64_t{reg(0x10)} << 32;
  }
  void write_driver_features(uint64_t f) override {
    set_reg(0x24, 0);
    set_reg(0x20, static_cast<uint32_t>(f));
    set_reg(0x24, 1);
    set_reg(0x20, static_cast<uint32_t>(f >> 32));
  }
  uint16_t queue_max(uint16_t q) override {
    set_reg(0x30, q);
    return static_cast<uint16_t>(reg(0x34));
  }
  void setup_queue(uint16_t q, const QueueConfig& c) override {
    set_reg(0x30, q);
    set_reg(0x38, c.size);
    set_reg(0x80, static_cast<uint32_t>(c.desc_addr));
    set_reg(0x84, static_cast<uint32_t>(c.desc_addr >> 32));
    set_reg(0x90, static_cast<uint32_t>(c.driver_addr));
    set_reg(0x94, static_cast<uint32_t>(c.driver_addr >> 32));
    set_reg(0xa0, static_cast<uint32_t>(c.device_addr));
    set_reg(0xa4, static_cast<uint32_t>(c.device_addr >> 32));
    set_reg(0x44, 1);
  }
  void notify(uint16_t q) override { set_reg(0x50, q); }
  uint64_t config_read(uint64_t off, unsigned size) override { return h_.mmio_read(base_ + 0x100 + off, size); }
  void config_write(uint64_t off, uint64_t v, unsigned size) override { h_.mmio_write(base_ + 0x100 + off, v, size); }

 private:
  FakeHooks& h_;
  uint64_t base_;
};

}  // namespace vireo::virtio::testing
