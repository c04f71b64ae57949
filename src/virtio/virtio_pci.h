// vireo/virtio: the virtio-pci modern transport (4.1 of the virtio 1.2 spec). One 32 KiB memory BAR (BAR0)
// holds the common configuration (0x0000), ISR (0x1000), device configuration (0x2000), notification
// doorbells (0x3000 + 4 * queue, one ioeventfd each) and the MSI-X table (0x4000) and PBA (0x6000).
// Interrupts: MSI-X vectors become KVM MSI routes fed by irqfds; without MSI-X, INTA (a level line).
#pragma once
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "common/event_loop.h"
#include "devices/vm_hooks.h"
#include "pci/msix.h"
#include "pci/pci.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

class VirtioPciDevice : public pci::PciFunction, public InterruptSink {
 public:
  static constexpr uint64_t kBarSize = 0x8000;
  static constexpr uint64_t kCommonOff = 0x0000, kCommonLen = 0x40;
  static constexpr uint64_t kIsrOff = 0x1000, kDeviceOff = 0x2000, kDeviceLen = 0x1000;
  static constexpr uint64_t kNotifyOff = 0x3000, kNotifyMultiplier = 4;
  static constexpr uint64_t kMsixTableOff = 0x4000, kMsixPbaOff = 0x6000;
  static constexpr uint16_t kNoVector = 0xffff;

  // Creates the PCI function for `dev` (the caller adds it to a PciHostBridge, then calls dev->start()).
  VirtioPciDevice(VmHooks& hooks, std::shared_ptr<VirtioDevice> dev);
  ~VirtioPciDevice() override;

  VirtioDevice& device() { return *dev_; }
  uint8_t intx_line() const { return intx_line_; }

  // Device lifecycle: stop() resets the virtio device (waits for in-flight I/O) before teardown.
  void stop() override { dev_->set_status(0); }
  void pause() override { dev_->pause(); }
  void resume() override { dev_->resume(); }
  // Transport registers + the virtio device's state (virtio_state_transports.cpp); version 1.
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

  // InterruptSink
  void queue_interrupt(uint16_t queue) override;
  void config_interrupt() override;

 protected:
  void bar_read(int index, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(int index, uint64_t offset, std::span<const uint8_t> data) override;
  void bar_moved(int index, std::optional<uint64_t> old_addr, std::optional<uint64_t> new_addr) override;
  void config_written(uint16_t offset, unsigned size) override;
  std::optional<uint32_t> config_read_hook(uint16_t offset, unsigned size) override;

 private:
  void common_read(uint64_t off, std::span<uint8_t> data);
  void common_write(uint64_t off, std::span<const uint8_t> data);
  void signal_vector(uint16_t v);
  void deliver(uint16_t v);
  void update_route(uint16_t v);
  void set_intx(bool level);
  void transport_reset();
  void ensure_route(uint16_t v);  // mu_ held: GSI + irqfd for vector v (restore)

  VmHooks& hooks_;
  std::shared_ptr<VirtioDevice> dev_;
  pci::Msix msix_;
  uint8_t msix_cap_ = 0, pcicfg_cap_ = 0;
  uint8_t intx_line_ = 0;
  bool has_intx_ = false;

  std::mutex mu_;  // transport register state and interrupt state
  uint32_t device_feature_select_ = 0, driver_feature_select_ = 0;
  uint16_t queue_select_ = 0;
  uint16_t config_vector_ = kNoVector;
  std::vector<uint16_t> queue_vectors_;
  uint8_t isr_ = 0;
  bool intx_level_ = false;
  struct Route {
    bool allocated = false;
    uint32_t gsi = 0;
    std::unique_ptr<EventFd> irqfd;
  };
  std::vector<Route> routes_;  // per MSI-X vector
  std::optional<uint64_t> notify_base_;
  std::set<uint16_t> ioeventfd_live_;  // queues whose doorbell is registered at notify_base_
  bool route_error_logged_ = false;
};

}  // namespace vireo::virtio
