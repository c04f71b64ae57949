#include "virtio/virtio_mmio.h"

#include <fmt/format.h>

#include <cstring>

namespace vireo::virtio {

namespace {
constexpr uint64_t kNotify = 0x050;
uint32_t le32(std::span<const uint8_t> d) {
  uint32_t v = 0;
  std::memcpy(&v, d.data(), std::min<size_t>(d.size(), 4));
  return v;
}
}  // namespace

VirtioMmioDevice::VirtioMmioDevice(VmHooks& hooks, std::shared_ptr<VirtioDevice> dev, uint64_t base)
    : hooks_(hooks), dev_(std::move(dev)), base_(base), irq_(hooks.allocate_irq_line()) {
  for (uint16_t q = 0; q < dev_->num_queues(); ++q)
    hooks_.add_ioeventfd(AddressSpace::Mmio, base_ + kNotify, 4, q, dev_->kick_fd(q));
  dev_->set_interrupt_sink(this);
}

VirtioMmioDevice::~VirtioMmioDevice() {
  dev_->set_interrupt_sink(nullptr);
  for (uint16_t q = 0; q < dev_->num_queues(); ++q)
    hooks_.remove_ioeventfd(AddressSpace::Mmio, base_ + kNotify, 4, q, dev_->kick_fd(q));
}

std::string VirtioMmioDevice::cmdline_entry() const {
  return fmt::format("virtio_mmio.device=4K@{:#x}:{}", base_, irq_);
}

std::string VirtioMmioDevice::name() const { return "virtio-mmio:" + dev_->id(); }

void VirtioMmioDevice::read(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (offset >= 0x100) {
    dev_->read_config(offset - 0x100, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) return;  // registers are 32-bit only
  uint32_t v = 0;
  uint32_t dsel, qsel;
  {
    std::lock_guard lock(mu_);
    dsel = device_features_sel_;
    qsel = queue_sel_;
    if (offset == 0x060) v = interrupt_status_;
  }
  bool qvalid = qsel < dev_->num_queues();
  uint16_t q = static_cast<uint16_t>(qsel);
  switch (offset) {
    case 0x000: v = kMagic; break;
    case 0x004: v = 2; break;
    case 0x008: v = dev_->device_type(); break;
    case 0x00c: v = kVendorId; break;
    case 0x010: v = dsel < 2 ? static_cast<uint32_t>(dev_->device_features() >> (32 * dsel)) : 0; break;
    case 0x034: v = qvalid ? dev_->queue_max_size(q) : 0; break;
    case 0x038: v = qvalid ? dev_->queue_config(q).size : 0; break;
    case 0x044: v = qvalid && dev_->queue_enabled(q) ? 1 : 0; break;
    case 0x060: break;
    case 0x070: v = dev_->status(); break;
    case 0x080: v = qvalid ? static_cast<uint32_t>(dev_->queue_config(q).desc_addr) : 0; break;
    case 0x084: v = qvalid ? static_cast<uint32_t>(dev_->queue_config(q).desc_addr >> 32) : 0; break;
    case 0x090: v = qvalid ? static_cast<uint32_t>(dev_->queue_config(q).driver_addr) : 0; break;
    case 0x094: v = qvalid ? static_cast<uint32_t>(dev_->queue_config(q).driver_addr >> 32) : 0; break;
    case 0x0a0: v = qvalid ? static_cast<uint32_t>(dev_->queue_config(q).device_addr) : 0; break;
    case 0x0a4: v = qvalid ? static_cast<uint32_t>(dev_->queue_config(q).device_addr >> 32) : 0; break;
    case 0x0fc: v = dev_->config_generation(); break;
    default: break;
  }
  std::memcpy(data.data(), &v, 4);
}

void VirtioMmioDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= 0x100) {
    dev_->write_config(offset - 0x100, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) return;
  uint32_t v = le32(data);
  uint32_t qsel;
  {
    std::lock_guard lock(mu_);
    qsel = queue_sel_;
  }
  bool qvalid = qsel < dev_->num_queues();
  uint16_t q = static_cast<uint16_t>(qsel);
  auto update_queue = [&](auto&& fn) {
    if (!qvalid) return;
    QueueConfig c = dev_->queue_config(q);
    fn(c);
    dev_->set_queue_config(q, c);
  };
  switch (offset) {
    case 0x014: { std::lock_guard lock(mu_); device_features_sel_ = v; } break;
    case 0x020: {
      uint32_t sel;
      {
        std::lock_guard lock(mu_);
        sel = driver_features_sel_;
      }
      if (sel < 2) {
        uint64_t f = dev_->driver_features();
        f = (f & ~(0xffffffffull << (32 * sel))) | (static_cast<uint64_t>(v) << (32 * sel));
        dev_->set_driver_features(f);
      }
      break;
    }
    case 0x024: { std::lock_guard lock(mu_); driver_features_sel_ = v; } break;
    case 0x030: { std::lock_guard lock(mu_); queue_sel_ = v; } break;
    case 0x038: update_queue([&](QueueConfig& c) { c.size = v > 0xffff ? 0 : static_cast<uint16_t>(v); }); break;
    case 0x044: if (qvalid && v == 1) dev_->enable_queue(q); break;
    case kNotify: if (v < dev_->num_queues()) dev_->kick(static_cast<uint16_t>(v)); break;
    case 0x064: {
      std::lock_guard lock(mu_);
      interrupt_status_ &= ~v;
      if (interrupt_status_ == 0 && level_) {
        level_ = false;
        hooks_.set_irq_line(irq_, false);
      }
      break;
    }
    case 0x070:
      dev_->set_status(static_cast<uint8_t>(v));
      if (v == 0) {
        std::lock_guard lock(mu_);
        interrupt_status_ = 0;
        device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
        if (level_) {
          level_ = false;
          hooks_.set_irq_line(irq_, false);
        }
      }
      break;
    case 0x080: update_queue([&](QueueConfig& c) { c.desc_addr = (c.desc_addr & ~0xffffffffull) | v; }); break;
    case 0x084: update_queue([&](QueueConfig& c) { c.desc_addr = (c.desc_addr & 0xffffffffull) | uint64_t{v} << 32; }); break;
    case 0x090: update_queue([&](QueueConfig& c) { c.driver_addr = (c.driver_addr & ~0xffffffffull) | v; }); break;
    case 0x094: update_queue([&](QueueConfig& c) { c.driver_addr = (c.driver_addr & 0xffffffffull) | uint64_t{v} << 32; }); break;
    case 0x0a0: update_queue([&](QueueConfig& c) { c.device_addr = (c.device_addr & ~0xffffffffull) | v; }); break;
    case 0x0a4: update_queue([&](QueueConfig& c) { c.device_addr = (c.device_addr & 0xffffffffull) | uint64_t{v} << 32; }); break;
    default: break;
  }
}

void VirtioMmioDevice::raise(uint32_t bits) {
  std::lock_guard lock(mu_);
  interrupt_status_ |= bits;
  if (!level_) {
    level_ = true;
    hooks_.set_irq_line(irq_, true);
  }
}

void VirtioMmioDevice::queue_interrupt(uint16_t) { raise(1); }
void VirtioMmioDevice::config_interrupt() { raise(2); }

}  // namespace vireo::virtio
