#include "virtio/virtio_pci.h"

#include <cstring>

namespace vireo::virtio {

namespace {

constexpr uint8_t kCapCommon = 1, kCapNotify = 2, kCapIsr = 3, kCapDevice = 4, kCapPciCfg = 5;

uint32_t class_code_for(uint32_t type) {
  switch (type) {
    case kTypeNet: return 0x020000;      // network controller, ethernet
    case kTypeBlock: return 0x018000;    // mass storage, other
    case kTypeConsole: return 0x078000;  // communication, other
    case kTypeBalloon: return 0x050000;  // memory controller, RAM
    default: return 0xff0000;            // unassigned class
  }
}

std::vector<uint8_t> virtio_cap(uint8_t cfg_type, uint8_t bar, uint32_t offset, uint32_t length, size_t extra = 0) {
  std::vector<uint8_t> c(16 + extra, 0);
  c[0] = pci::kCapIdVendor;
  c[2] = static_cast<uint8_t>(c.size());
  c[3] = cfg_type;
  c[4] = bar;
  std::memcpy(&c[8], &offset, 4);
  std::memcpy(&c[12], &length, 4);
  return c;
}

uint64_t le(std::span<const uint8_t> d) {
  uint64_t v = 0;
  std::memcpy(&v, d.data(), std::min<size_t>(d.size(), 8));
  return v;
}

}  // namespace

VirtioPciDevice::VirtioPciDevice(VmHooks& hooks, std::shared_ptr<VirtioDevice> dev)
    : PciFunction(dev->type_name() + ":" + dev->id(), 0x1af4, static_cast<uint16_t>(0x1040 + dev->device_type()),
                  class_code_for(dev->device_type()), 1, 0x1af4, 0x40),
      hooks_(hooks),
      dev_(std::move(dev)),
      msix_(static_cast<uint16_t>(dev_->num_queues() + 1)),
      queue_vectors_(dev_->num_queues(), kNoVector),
      routes_(dev_->num_queues() + 1) {
  add_bar(0, pci::BarKind::Mem32, kBarSize);
  msix_cap_ = add_capability(msix_.capability(0, kMsixTableOff, 0, kMsixPbaOff), pci::Msix::capability_writable());
  add_capability(virtio_cap(kCapCommon, 0, kCommonOff, kCommonLen));
  add_capability(virtio_cap(kCapIsr, 0, kIsrOff, 4));
  add_capability(virtio_cap(kCapDevice, 0, kDeviceOff, kDeviceLen));
  auto notify = virtio_cap(kCapNotify, 0, kNotifyOff, static_cast<uint32_t>(kNotifyMultiplier * dev_->num_queues()), 4);
  uint32_t mult = kNotifyMultiplier;
  std::memcpy(&notify[16], &mult, 4);
  add_capability(notify);
  // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and the data window are guest-writable.
  auto pcicfg = virtio_cap(kCapPciCfg, 0, 0, 0, 4);
  std::vector<uint8_t> w(20, 0);
  w[4] = 0xff;
  for (int i = 8; i < 20; ++i) w[i] = 0xff;
  pcicfg_cap_ = add_capability(pcicfg, w);
  try {
    intx_line_ = static_cast<uint8_t>(hooks_.allocate_irq_line());
    has_intx_ = true;
    set_interrupt_pin(1, intx_line_);
  } catch (const Error&) {
    set_interrupt_pin(0, 0xff);  // no legacy line left: MSI-X only
  }
  dev_->set_interrupt_sink(this);
}

VirtioPciDevice::~VirtioPciDevice() {
  dev_->set_interrupt_sink(nullptr);
  detach();  // unmaps the BAR (and removes ioeventfds via bar_moved)
  std::lock_guard lock(mu_);
  for (auto& r : routes_)
    if (r.allocated) hooks_.remove_irqfd(r.gsi, r.irqfd->fd());
}

// ---------------------------------------------------------------- BAR

void VirtioPciDevice::bar_read(int index, uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (index != 0 || offset + data.size() > kBarSize) return;
  if (offset < kCommonOff + kCommonLen) {
    common_read(offset, data);
  } else if (offset >= kIsrOff && offset < kIsrOff + 4) {
    std::lock_guard lock(mu_);
    if (offset == kIsrOff) data[0] = isr_;
    isr_ = 0;  // reading ISR acknowledges
    set_intx(false);
  } else if (offset >= kDeviceOff && offset < kDeviceOff + kDeviceLen) {
    dev_->read_config(offset - kDeviceOff, data);
  } else if (offset >= kMsixTableOff && offset < kMsixTableOff + msix_.table_bytes()) {
    msix_.table_read(offset - kMsixTableOff, data);
  } else if (offset >= kMsixPbaOff && offset < kMsixPbaOff + msix_.pba_bytes()) {
    msix_.pba_read(offset - kMsixPbaOff, data);
  }
}

void VirtioPciDevice::bar_write(int index, uint64_t offset, std::span<const uint8_t> data) {
  if (index != 0 || offset + data.size() > kBarSize) return;
  if (offset < kCommonOff + kCommonLen) {
    common_write(offset, data);
  } else if (offset >= kDeviceOff && offset < kDeviceOff + kDeviceLen) {
    dev_->write_config(offset - kDeviceOff, data);
  } else if (offset >= kNotifyOff && offset < kNotifyOff + kNotifyMultiplier * dev_->num_queues()) {
    // Reaches us only when no ioeventfd caught it (e.g. a different access size).
    dev_->kick(static_cast<uint16_t>((offset - kNotifyOff) / kNotifyMultiplier));
  } else if (offset >= kMsixTableOff && offset < kMsixTableOff + msix_.table_bytes()) {
    int changed = -1;
    auto fire = msix_.table_write(offset - kMsixTableOff, data, &changed);
    std::lock_guard lock(mu_);
    if (changed >= 0) update_route(static_cast<uint16_t>(changed));
    for (uint16_t v : fire) deliver(v);
  }
}

void VirtioPciDevice::bar_moved(int index, std::optional<uint64_t> old_addr, std::optional<uint64_t> new_addr) {
  if (index != 0) return;
  // Runs on a vCPU thread (the guest moved the BAR): never throw. A doorbell without an ioeventfd still
  // works, as a bus write (bar_write -> kick), only slower.
  for (uint16_t q = 0; q < dev_->num_queues(); ++q) {
    uint64_t off = kNotifyOff + kNotifyMultiplier * q;
    if (old_addr && ioeventfd_live_.count(q)) {
      try {
        hooks_.remove_ioeventfd(AddressSpace::Mmio, *old_addr + off, 2, std::nullopt, dev_->kick_fd(q));
      } catch (const std::exception&) {
      }
      ioeventfd_live_.erase(q);
    }
    if (new_addr) {
      try {
        hooks_.add_ioeventfd(AddressSpace::Mmio, *new_addr + off, 2, std::nullopt, dev_->kick_fd(q));
        ioeventfd_live_.insert(q);
      } catch (const std::exception& e) {
        fmt::print(stderr, "vireo-vmm: {}: doorbell {} without ioeventfd: {}\n", name(), q, e.what());
      }
    }
  }
  notify_base_ = new_addr;
}

// ---------------------------------------------------------------- common configuration

void VirtioPciDevice::common_read(uint64_t off, std::span<uint8_t> data) {
  uint8_t buf[kCommonLen] = {};
  auto put16 = [&](size_t o, uint16_t v) { std::memcpy(buf + o, &v, 2); };
  auto put32 = [&](size_t o, uint32_t v) { std::memcpy(buf + o, &v, 4); };
  auto put64 = [&](size_t o, uint64_t v) { std::memcpy(buf + o, &v, 8); };
  uint16_t q;
  uint32_t dsel, drsel;
  {
    // Never call into the device with mu_ held (the device calls us with its lock held).
    std::lock_guard lock(mu_);
    dsel = device_feature_select_;
    drsel = driver_feature_select_;
    put16(16, config_vector_);
    q = queue_select_;
    if (q < dev_->num_queues()) put16(26, queue_vectors_[q]);
  }
  uint64_t offered = dev_->device_features();
  uint64_t drv = dev_->driver_features();
  put32(0, dsel);
  put32(4, dsel < 2 ? static_cast<uint32_t>(offered >> (32 * dsel)) : 0);
  put32(8, drsel);
  put32(12, drsel < 2 ? static_cast<uint32_t>(drv >> (32 * drsel)) : 0);
  put16(18, dev_->num_queues());
  put16(22, q);
  buf[20] = dev_->status();
  buf[21] = static_cast<uint8_t>(dev_->config_generation());
  if (q < dev_->num_queues()) {
    QueueConfig c = dev_->queue_config(q);
    put16(24, c.size);
    put16(28, dev_->queue_enabled(q) ? 1 : 0);
    put16(30, q);  // queue_notify_off: doorbell at notify base + q * multiplier
    put64(32, c.desc_addr);
    put64(40, c.driver_addr);
    put64(48, c.device_addr);
  }
  if (off + data.size() <= kCommonLen) std::memcpy(data.data(), buf + off, data.size());
}

void VirtioPciDevice::common_write(uint64_t off, std::span<const uint8_t> data) {
  const uint64_t v = le(data);
  const size_t n = data.size();
  auto queue_field = [&](auto&& update) {
    uint16_t q;
    {
      std::lock_guard lock(mu_);
      q = queue_select_;
    }
    if (q >= dev_->num_queues()) return;
    QueueConfig c = dev_->queue_config(q);
    update(c);
    dev_->set_queue_config(q, c);
  };
  // 64-bit fields may be written whole or as two 32-bit halves.
  auto set64 = [&](uint64_t& field, uint64_t base) {
    if (off == base && n == 8) field = v;
    else if (off == base && n == 4) field = (field & ~0xffffffffull) | (v & 0xffffffffull);
    else if (off == base + 4 && n == 4) field = (field & 0xffffffffull) | (v << 32);
  };
  switch (off) {
    case 0:
      if (n == 4) { std::lock_guard lock(mu_); device_feature_select_ = static_cast<uint32_t>(v); }
      return;
    case 8:
      if (n == 4) { std::lock_guard lock(mu_); driver_feature_select_ = static_cast<uint32_t>(v); }
      return;
    case 12:
      if (n == 4) {
        uint32_t sel;
        {
          std::lock_guard lock(mu_);
          sel = driver_feature_select_;
        }
        if (sel < 2) {
          uint64_t f = dev_->driver_features();
          f = (f & ~(0xffffffffull << (32 * sel))) | (static_cast<uint64_t>(static_cast<uint32_t>(v)) << (32 * sel));
          dev_->set_driver_features(f);
        }
      }
      return;
    case 16:
      if (n == 2) {
        std::lock_guard lock(mu_);
        config_vector_ = v < msix_.vectors() ? static_cast<uint16_t>(v) : kNoVector;
      }
      return;
    case 20:
      if (n == 1) {
        dev_->set_status(static_cast<uint8_t>(v));
        if (v == 0) transport_reset();
      }
      return;
    case 22:
      if (n == 2) { std::lock_guard lock(mu_); queue_select_ = static_cast<uint16_t>(v); }
      return;
    case 24:
      if (n == 2) queue_field([&](QueueConfig& c) { c.size = static_cast<uint16_t>(v); });
      return;
    case 26:
      if (n == 2) {
        std::lock_guard lock(mu_);
        if (queue_select_ < queue_vectors_.size())
          queue_vectors_[queue_select_] = v < msix_.vectors() ? static_cast<uint16_t>(v) : kNoVector;
      }
      return;
    case 28:
      if (n == 2 && v == 1) {
        uint16_t q;
        {
          std::lock_guard lock(mu_);
          q = queue_select_;
        }
        dev_->enable_queue(q);
      }
      return;
    default:
      break;
  }
  if (off >= 32 && off < 40) queue_field([&](QueueConfig& c) { set64(c.desc_addr, 32); });
  else if (off >= 40 && off < 48) queue_field([&](QueueConfig& c) { set64(c.driver_addr, 40); });
  else if (off >= 48 && off < 56) queue_field([&](QueueConfig& c) { set64(c.device_addr, 48); });
}

void VirtioPciDevice::transport_reset() {
  std::lock_guard lock(mu_);
  config_vector_ = kNoVector;
  std::fill(queue_vectors_.begin(), queue_vectors_.end(), kNoVector);
  isr_ = 0;
  queue_select_ = 0;
  device_feature_select_ = driver_feature_select_ = 0;
  set_intx(false);
}

// ---------------------------------------------------------------- interrupts

void VirtioPciDevice::queue_interrupt(uint16_t queue) {
  std::lock_guard lock(mu_);
  if (msix_.enabled()) {
    if (queue < queue_vectors_.size()) signal_vector(queue_vectors_[queue]);
    return;
  }
  isr_ |= 1;
  set_intx(true);
}

void VirtioPciDevice::config_interrupt() {
  std::lock_guard lock(mu_);
  if (msix_.enabled()) {
    signal_vector(config_vector_);
    return;
  }
  isr_ |= 2;
  set_intx(true);
}

void VirtioPciDevice::signal_vector(uint16_t v) {
  if (v == kNoVector) return;
  if (msix_.trigger(v)) deliver(v);
}

void VirtioPciDevice::update_route(uint16_t v) {
  if (v >= routes_.size() || !routes_[v].allocated) return;
  auto e = msix_.entry(v);
  try {
    hooks_.set_msi_route(routes_[v].gsi, e.address, e.data);
  } catch (const std::exception& ex) {
    fmt::print(stderr, "vireo-vmm: {}: MSI route for vector {}: {}\n", name(), v, ex.what());
  }
}

void VirtioPciDevice::deliver(uint16_t v) {
  if (v >= routes_.size()) return;
  Route& r = routes_[v];
  try {
    if (!r.allocated) {
      r.irqfd = std::make_unique<EventFd>();
      r.gsi = hooks_.allocate_msi_gsi();
      auto e = msix_.entry(v);
      hooks_.set_msi_route(r.gsi, e.address, e.data);
      hooks_.add_irqfd(r.gsi, r.irqfd->fd());
      r.allocated = true;
    }
    r.irqfd->signal();
  } catch (const std::exception& e) {
    // Out of GSIs or a KVM error: fall back to a one-shot MSI for this delivery.
    auto en = msix_.entry(v);
    try {
      hooks_.signal_msi(en.address, en.data);
    } catch (const std::exception&) {
    }
    if (!route_error_logged_) {
      route_error_logged_ = true;
      fmt::print(stderr, "vireo-vmm: {}: MSI-X vector {} without irqfd: {}\n", name(), v, e.what());
    }
  }
}

void VirtioPciDevice::set_intx(bool level) {
  if (!has_intx_) return;
  if (level && (command() & pci::kCommandIntxDisable)) level = false;
  if (level == intx_level_) return;
  intx_level_ = level;
  set_intx_status(level);
  hooks_.set_irq_line(intx_line_, level);
}

// ---------------------------------------------------------------- config space side effects

void VirtioPciDevice::config_written(uint16_t offset, unsigned size) {
  // MSI-X message control (upper byte at cap+3).
  if (offset <= msix_cap_ + 3 && offset + size > msix_cap_ + 3u) {
    auto fire = msix_.set_control(cfg16(msix_cap_ + 2));
    std::lock_guard lock(mu_);
    if (msix_.enabled()) set_intx(false);
    for (uint16_t v : fire) deliver(v);
  }
  // VIRTIO_PCI_CAP_PCI_CFG data window write: forward to the BAR.
  uint16_t data_off = pcicfg_cap_ + 16;
  if (offset >= data_off && offset < data_off + 4) {
    uint8_t bar = cfg8(pcicfg_cap_ + 4);
    uint32_t boff = cfg32(pcicfg_cap_ + 8), len = cfg32(pcicfg_cap_ + 12);
    if (bar == 0 && (len == 1 || len == 2 || len == 4) && boff % len == 0 && boff + len <= kBarSize) {
      uint32_t val = cfg32(data_off);
      bar_write(0, boff, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&val), len));
    }
  }
}

std::optional<uint32_t> VirtioPciDevice::config_read_hook(uint16_t offset, unsigned size) {
  uint16_t data_off = pcicfg_cap_ + 16;
  if (pcicfg_cap_ == 0 || offset < data_off || offset >= data_off + 4) return std::nullopt;
  uint8_t bar = cfg8(pcicfg_cap_ + 4);
  uint32_t boff = cfg32(pcicfg_cap_ + 8), len = cfg32(pcicfg_cap_ + 12);
  uint32_t val = 0;
  if (bar == 0 && (len == 1 || len == 2 || len == 4) && boff % len == 0 && boff + len <= kBarSize)
    bar_read(0, boff, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&val), len));
  unsigned shift = (offset - data_off) * 8;
  return (val >> shift) & (size == 4 ? 0xffffffffu : ((1u << (size * 8)) - 1));
}

}  // namespace vireo::virtio
