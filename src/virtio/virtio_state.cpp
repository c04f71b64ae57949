// vireo/virtio: snapshot state of the transport-independent virtio device (see virtio_device.h).
#include <fmt/format.h>

#include "common/error.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

using nlohmann::json;

json VirtioDevice::save_virtio() {
  std::lock_guard lock(mu_);
  json queues = json::array();
  for (uint16_t q = 0; q < queues_.size(); ++q) {
    const QueueSlot& s = queues_[q];
    json j = {{"size", s.cfg.size},        {"desc", s.cfg.desc_addr}, {"driver", s.cfg.driver_addr},
              {"device", s.cfg.device_addr}, {"enabled", s.enabled}};
    if (auto* sq = dynamic_cast<SplitQueue*>(s.vq.get())) {
      SplitQueue::State st = sq->state();
      st.last_avail = static_cast<uint16_t>(st.last_avail - held_chains(q));
      j["ring"] = {{"last_avail", st.last_avail},
                   {"used_idx", st.used_idx},
                   {"signalled_used", st.signalled_used},
                   {"signalled_valid", st.signalled_valid},
                   {"notifications_enabled", st.notifications_enabled}};
    } else {
      j["ring"] = json();
    }
    queues.push_back(std::move(j));
  }
  return {{"driver_features", driver_features_}, {"status", status_},         {"config_generation", config_gen_},
          {"broken", broken_},                   {"config", json::binary(config_)}, {"queues", queues},
          {"device", save_device()}};
}

void VirtioDevice::restore_virtio(JsonReader& r) {
  const uint64_t drv = r.u64("driver_features");
  const uint8_t status = r.uint<uint8_t>("status");
  const uint32_t gen = r.uint<uint32_t>("config_generation");
  const bool broken = r.boolean("broken");
  const auto& config = r.bytes("config", config_.size());
  if (drv & ~device_features())
    fail("{}: 0x{:x} has bits this device does not offer (0x{:x})", r.key_path("driver_features"), drv, device_features());
  const json& queues = r.array("queues", queues_.size());
  if (queues.size() != queues_.size())
    fail("{}: {} queues saved, this device has {}", r.key_path("queues"), queues.size(), queues_.size());

  std::lock_guard lock(mu_);
  driver_features_ = drv;
  status_ = status;
  config_gen_ = gen;
  broken_ = broken;
  logged_broken_ = broken;
  config_.assign(config.begin(), config.end());
  for (uint16_t q = 0; q < queues_.size(); ++q) {
    JsonReader qr(queues[q], fmt::format("{}[{}]", r.key_path("queues"), q));
    QueueSlot& s = queues_[q];
    s.cfg.size = qr.uint<uint16_t>("size");
    s.cfg.desc_addr = qr.u64("desc");
    s.cfg.driver_addr = qr.u64("driver");
    s.cfg.device_addr = qr.u64("device");
    s.enabled = qr.boolean("enabled");
    s.vq.reset();
    if (s.cfg.size > s.max_size) fail("{}: size {} above the maximum {}", qr.key_path("size"), s.cfg.size, s.max_size);
    if (!qr.has("ring")) {
      qr.skip("ring");
      // Enabled without a ring only if the device was broken by it (enable_queue failed).
      if (s.enabled && !broken) fail("{}: enabled queue without ring state", qr.path());
    } else {
      if (!s.enabled) fail("{}: ring state for a disabled queue", qr.path());
      JsonReader rr = qr.object("ring");
      SplitQueue::State st;
      st.last_avail = rr.uint<uint16_t>("last_avail");
      st.used_idx = rr.uint<uint16_t>("used_idx");
      st.signalled_used = rr.uint<uint16_t>("signalled_used");
      st.signalled_valid = rr.boolean("signalled_valid");
      st.notifications_enabled = rr.boolean("notifications_enabled");
      rr.finish();
      try {
        auto vq = std::make_unique<SplitQueue>(mem_, s.cfg, driver_features_);
        vq->set_state(st);
        s.vq = std::move(vq);
      } catch (const Error& e) {
        fail("{}: {}", qr.path(), e.what());
      }
    }
    qr.finish();
  }
  if ((status_ & kStatusDriverOk) && !broken_) {
    try {
      activate();
    } catch (const std::exception& e) {
      fail("{}: activate: {}", r.path(), e.what());
    }
  }
  // After activate(): the device's own state overrides activation defaults (e.g. net's active pairs).
  JsonReader dr = r.object("device");
  restore_device(dr);
  dr.finish();
  // Anything the driver made available meanwhile, and chains handed back by held_chains.
  for (uint16_t q = 0; q < queues_.size(); ++q)
    if (queues_[q].vq) schedule(q);
}

}  // namespace vireo::virtio
