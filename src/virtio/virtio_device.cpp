#include "virtio/virtio_device.h"

#include <fmt/format.h>

#include <cstring>
#include <future>

namespace vireo::virtio {

VirtioDevice::VirtioDevice(GuestMemory& mem, std::string id, uint32_t device_type, uint16_t num_queues,
                           uint16_t max_queue_size)
    : mem_(mem), loop_("virtio-" + id), id_(std::move(id)), type_(device_type), queues_(num_queues) {
  for (uint16_t q = 0; q < num_queues; ++q) {
    queues_[q].max_size = max_queue_size;
    queues_[q].kick = std::make_unique<EventFd>();
    loop_.add(queues_[q].kick->fd(), EPOLLIN, [this, q](uint32_t) { on_kick(q); });
  }
}

VirtioDevice::~VirtioDevice() { shutdown(); }

void VirtioDevice::start() {
  std::lock_guard lock(mu_);
  if (started_) return;
  started_ = true;
  loop_.start();
}

void VirtioDevice::shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  loop_.stop();
  loop_.join();
}

uint64_t VirtioDevice::device_features() const {
  return features() | bit(kFVersion1) | bit(kFIndirectDesc) | bit(kFEventIdx);
}

uint64_t VirtioDevice::driver_features() const {
  std::lock_guard lock(mu_);
  return driver_features_;
}

void VirtioDevice::set_driver_features(uint64_t f) {
  std::lock_guard lock(mu_);
  if (status_ & kStatusFeaturesOk) return;
  driver_features_ = f;
}

uint8_t VirtioDevice::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

void VirtioDevice::set_status(uint8_t status) {
  if (status == 0) {
    quiesce();
    std::lock_guard lock(mu_);
    reset_locked();
    return;
  }
  std::lock_guard lock(mu_);
  uint8_t old = status_;
  if ((status & kStatusFeaturesOk) && !(old & kStatusFeaturesOk)) {
    // Accept only a subset of what we offer, and only modern (VERSION_1) drivers.
    bool ok = (driver_features_ & ~device_features()) == 0 && (driver_features_ & bit(kFVersion1));
    if (!ok) status &= ~kStatusFeaturesOk;
  }
  // FEATURES_OK cannot be withdrawn once set, NEEDS_RESET is ours.
  if (old & kStatusFeaturesOk) status |= kStatusFeaturesOk;
  status = static_cast<uint8_t>((status & ~kStatusNeedsReset) | (old & kStatusNeedsReset));
  status_ = status;
  if ((status & kStatusDriverOk) && !(old & kStatusDriverOk) && broken_ && irq_) {
    irq_->config_interrupt();  // broken before DRIVER_OK: tell the driver now
  } else if ((status & kStatusDriverOk) && !(old & kStatusDriverOk)) {
    try {
      activate();
    } catch (const std::exception& e) {
      fail_device(fmt::format("activate: {}", e.what()));
      return;
    }
    for (uint16_t q = 0; q < queues_.size(); ++q)
      if (queues_[q].vq) schedule(q);  // buffers made available before DRIVER_OK
  }
}

void VirtioDevice::reset_locked() {
  device_reset();
  for (auto& s : queues_) {
    s.cfg = QueueConfig{};
    s.cfg.size = s.max_size;
    s.enabled = false;
    s.vq.reset();
  }
  driver_features_ = 0;
  status_ = 0;
  broken_ = false;
  ++reset_gen_;
}

uint32_t VirtioDevice::config_generation() const {
  std::lock_guard lock(mu_);
  return config_gen_;
}

void VirtioDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < config_.size() ? config_[offset + i] : 0;
}

void VirtioDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= config_.size() || data.size() > config_.size() - offset) return;
  config_write(offset, data);
}

uint16_t VirtioDevice::queue_max_size(uint16_t q) const {
  return q < queues_.size() ? queues_[q].max_size : 0;
}

QueueConfig VirtioDevice::queue_config(uint16_t q) const {
  std::lock_guard lock(mu_);
  if (q >= queues_.size()) return {};
  QueueConfig c = queues_[q].cfg;
  if (c.size == 0) c.size = queues_[q].max_size;
  return c;
}

void VirtioDevice::set_queue_config(uint16_t q, const QueueConfig& cfg) {
  std::lock_guard lock(mu_);
  if (q >= queues_.size() || queues_[q].enabled) return;
  queues_[q].cfg = cfg;
}

bool VirtioDevice::queue_enabled(uint16_t q) const {
  std::lock_guard lock(mu_);
  return q < queues_.size() && queues_[q].enabled;
}

void VirtioDevice::enable_queue(uint16_t q) {
  std::lock_guard lock(mu_);
  if (q >= queues_.size() || queues_[q].enabled || broken_) return;
  QueueSlot& s = queues_[q];
  if (s.cfg.size == 0) s.cfg.size = s.max_size;
  s.enabled = true;
  try {
    if (s.cfg.size > s.max_size) throw QueueError(fmt::format("virtqueue: size {} above maximum {}", s.cfg.size, s.max_size));
    s.vq = std::make_unique<SplitQueue>(mem_, s.cfg, driver_features_);
  } catch (const Error& e) {
    fail_device(fmt::format("queue {}: {}", q, e.what()));
    return;
  }
  if (status_ & kStatusDriverOk) schedule(q);
}

int VirtioDevice::kick_fd(uint16_t q) const { return q < queues_.size() ? queues_[q].kick->fd() : -1; }

void VirtioDevice::kick(uint16_t q) {
  if (q < queues_.size()) queues_[q].kick->signal();
}

bool VirtioDevice::broken() const {
  std::lock_guard lock(mu_);
  return broken_;
}

Virtqueue* VirtioDevice::queue(uint16_t q) {
  if (q >= queues_.size() || !active()) return nullptr;
  return queues_[q].vq.get();
}

void VirtioDevice::complete(uint16_t q, const DescChain& chain, uint32_t written) {
  Virtqueue* vq = q < queues_.size() ? queues_[q].vq.get() : nullptr;
  if (!vq || broken_) return;
  vq->push(chain, written);
  if (vq->should_notify() && irq_) irq_->queue_interrupt(q);
}

void VirtioDevice::notify_queue(uint16_t q) {
  Virtqueue* vq = q < queues_.size() ? queues_[q].vq.get() : nullptr;
  if (!vq || broken_) return;
  if (vq->should_notify() && irq_) irq_->queue_interrupt(q);
}

void VirtioDevice::fail_device(const std::string& why) {
  if (broken_) return;
  broken_ = true;
  status_ |= kStatusNeedsReset;
  if (!logged_broken_) {
    logged_broken_ = true;
    fmt::print(stderr, "vireo-vmm: {} {}: guest error, device needs reset: {}\n", type_name(), id_, why);
  }
  if ((status_ & kStatusDriverOk) && irq_) irq_->config_interrupt();
}

void VirtioDevice::config_changed() {
  ++config_gen_;
  if ((status_ & kStatusDriverOk) && irq_) irq_->config_interrupt();
}

void VirtioDevice::with_device_lock(uint64_t generation, const std::function<void()>& fn) {
  std::lock_guard lock(mu_);
  if (generation != reset_gen_ || broken_) return;
  try {
    fn();
  } catch (const std::exception& e) {
    fail_device(e.what());
  }
}

void VirtioDevice::schedule(uint16_t q) { kick(q); }

void VirtioDevice::pause() {
  bool thread;
  {
    std::lock_guard lock(mu_);
    if (paused_) return;
    paused_ = true;  // from now on queue() is null and no queue runs
    pause_io();
    thread = started_ && !stopped_;
  }
  // Wait until the device thread has finished whatever handler it was in (it sees paused_ afterwards).
  if (thread) {
    std::promise<void> done;
    loop_.post([&done] { done.set_value(); });
    done.get_future().wait();
  }
  quiesce();  // in-flight async requests complete (their used entries are written now, not later)
}

void VirtioDevice::resume() {
  std::lock_guard lock(mu_);
  if (!paused_) return;
  paused_ = false;
  for (uint16_t q = 0; q < queues_.size(); ++q)
    if (queues_[q].vq) schedule(q);  // kicks that came while paused, and host input that waited
}

bool VirtioDevice::paused() const {
  std::lock_guard lock(mu_);
  return paused_;
}

void VirtioDevice::on_kick(uint16_t q) {
  queues_[q].kick->consume();
  std::lock_guard lock(mu_);
  run_queue(q);
}

void VirtioDevice::run_queue(uint16_t q) {
  if (!active() || !queues_[q].vq) return;
  try {
    process_queue(q);
  } catch (const std::exception& e) {  // QueueError, GuestMemoryError, host errors, bad_alloc
    fail_device(fmt::format("queue {}: {}", q, e.what()));
  }
}

}  // namespace vireo::virtio
