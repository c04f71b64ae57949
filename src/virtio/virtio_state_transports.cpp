// vireo/virtio: snapshot state of the virtio-pci and virtio-mmio transports (version 1): their registers,
// PCI config space and MSI-X table (pci), and the virtio device's state (virtio_state.cpp). Interrupt lines
// and MSI routes are re-established from the restored registers; the GSIs behind MSI-X vectors are host-side
// and may differ from the saved VM's.
#include <fmt/format.h>

#include "common/error.h"
#include "virtio/virtio_mmio.h"
#include "virtio/virtio_pci.h"

namespace vireo::virtio {

using nlohmann::json;

// ---------------------------------------------------------------- virtio-pci

json VirtioPciDevice::save_state() {
  json t;
  {
    std::lock_guard lock(mu_);
    t = {{"device_feature_select", device_feature_select_},
         {"driver_feature_select", driver_feature_select_},
         {"queue_select", queue_select_},
         {"config_vector", config_vector_},
         {"queue_vectors", queue_vectors_},
         {"isr", isr_},
         {"intx_level", intx_level_}};
  }
  return {{"pci", save_config_state()}, {"msix", msix_.save()}, {"transport", t}, {"virtio", dev_->save_virtio()}};
}

void VirtioPciDevice::restore_state(JsonReader& r, uint32_t) {
  JsonReader t = r.object("transport");
  const uint32_t dsel = t.uint<uint32_t>("device_feature_select"), drsel = t.uint<uint32_t>("driver_feature_select");
  const uint16_t qsel = t.uint<uint16_t>("queue_select"), cvec = t.uint<uint16_t>("config_vector");
  const json& qv = t.array("queue_vectors", dev_->num_queues());
  if (qv.size() != dev_->num_queues()) fail("{}: {} queues saved, the device has {}", t.key_path("queue_vectors"), qv.size(), dev_->num_queues());
  std::vector<uint16_t> qvecs;
  auto check_vector = [&](uint64_t v, const std::string& what) {
    if (v != kNoVector && v >= msix_.vectors()) fail("{}: vector {} but the device has {}", what, v, msix_.vectors());
    return static_cast<uint16_t>(v);
  };
  for (size_t i = 0; i < qv.size(); ++i) {
    if (!qv[i].is_number_unsigned()) fail("{}[{}]: expected an unsigned number", t.key_path("queue_vectors"), i);
    qvecs.push_back(check_vector(qv[i].get<uint64_t>(), fmt::format("{}[{}]", t.key_path("queue_vectors"), i)));
  }
  check_vector(cvec, t.key_path("config_vector"));
  const uint8_t isr = t.uint<uint8_t>("isr");
  if (isr & ~3u) fail("{}: 0x{:x} is not an ISR value", t.key_path("isr"), isr);
  const bool intx = t.boolean("intx_level");
  t.finish();

  // The device's queues first, then config space: re-decoding BAR0 registers the doorbell ioeventfds.
  JsonReader v = r.object("virtio");
  dev_->restore_virtio(v);
  v.finish();
  JsonReader p = r.object("pci");
  restore_config_state(p);
  p.finish();
  JsonReader m = r.object("msix");
  msix_.restore(m);
  m.finish();
  const auto fire = msix_.set_control(cfg16(msix_cap_ + 2));

  std::lock_guard lock(mu_);
  device_feature_select_ = dsel, driver_feature_select_ = drsel, queue_select_ = qsel;
  config_vector_ = cvec;
  queue_vectors_ = std::move(qvecs);
  isr_ = isr;
  if (msix_.enabled()) {
    // Routes for every vector in use now, so the first interrupt after restore costs no allocation.
    if (config_vector_ != kNoVector) ensure_route(config_vector_);
    for (uint16_t q : queue_vectors_)
      if (q != kNoVector) ensure_route(q);
  }
  intx_level_ = false;
  set_intx(intx);
  for (uint16_t vec : fire) deliver(vec);
}

void VirtioPciDevice::ensure_route(uint16_t v) {
  if (v >= routes_.size() || routes_[v].allocated) return;
  Route& r = routes_[v];
  r.irqfd = std::make_unique<EventFd>();
  r.gsi = hooks_.allocate_msi_gsi();
  const auto e = msix_.entry(v);
  hooks_.set_msi_route(r.gsi, e.address, e.data);
  hooks_.add_irqfd(r.gsi, r.irqfd->fd());
  r.allocated = true;
}

// ---------------------------------------------------------------- virtio-mmio

json VirtioMmioDevice::save_state() {
  json t;
  {
    std::lock_guard lock(mu_);
    t = {{"device_features_sel", device_features_sel_},
         {"driver_features_sel", driver_features_sel_},
         {"queue_sel", queue_sel_},
         {"interrupt_status", interrupt_status_}};
  }
  return {{"transport", t}, {"virtio", dev_->save_virtio()}};
}

void VirtioMmioDevice::restore_state(JsonReader& r, uint32_t) {
  JsonReader t = r.object("transport");
  const uint32_t dsel = t.uint<uint32_t>("device_features_sel"), drsel = t.uint<uint32_t>("driver_features_sel"),
                 qsel = t.uint<uint32_t>("queue_sel"), status = t.uint<uint32_t>("interrupt_status");
  if (status & ~3u) fail("{}: 0x{:x} is not an interrupt status", t.key_path("interrupt_status"), status);
  t.finish();
  JsonReader v = r.object("virtio");
  dev_->restore_virtio(v);
  v.finish();
  std::lock_guard lock(mu_);
  device_features_sel_ = dsel, driver_features_sel_ = drsel, queue_sel_ = qsel;
  interrupt_status_ = status;
  level_ = status != 0;
  hooks_.set_irq_line(irq_, level_);
}

}  // namespace vireo::virtio
