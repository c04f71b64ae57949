// vireo/virtio: the virtio-mmio transport, version 2 registers (4.2 of the virtio 1.2 spec). A 4 KiB
// window: registers at 0x000-0x0ff, device configuration from 0x100. QueueNotify writes land on one
// ioeventfd per queue (datamatch = queue index); interrupts raise a level-triggered legacy IRQ line while
// InterruptStatus is non-zero. Linux finds the device from "virtio_mmio.device=4K@<base>:<irq>".
#pragma once
#include <memory>
#include <mutex>
#include <string>

#include "devices/bus.h"
#include "devices/vm_hooks.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

class VirtioMmioDevice : public BusDevice, public InterruptSink {
 public:
  static constexpr uint64_t kWindowSize = 0x1000;
  static constexpr uint32_t kMagic = 0x74726976;  // "virt"
  static constexpr uint32_t kVendorId = 0x56524f00;  // arbitrary, reported to the driver

  // Allocates an IRQ line and registers the queue doorbells at `base`; the caller inserts the device on
  // the MMIO bus at `base` (attach() does both) and starts the VirtioDevice.
  VirtioMmioDevice(VmHooks& hooks, std::shared_ptr<VirtioDevice> dev, uint64_t base);
  ~VirtioMmioDevice() override;

  uint64_t base() const { return base_; }
  uint32_t irq() const { return irq_; }
  std::string cmdline_entry() const;  // "virtio_mmio.device=4K@0xd0000000:5"
  VirtioDevice& device() { return *dev_; }

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  std::string name() const override;

  // Device lifecycle: stop() resets the virtio device (waits for in-flight I/O) before teardown.
  void stop() override { dev_->set_status(0); }
  void pause() override { dev_->pause(); }
  void resume() override { dev_->resume(); }
  // Transport registers + the virtio device's state (virtio_state_transports.cpp); version 1.
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

  void queue_interrupt(uint16_t queue) override;
  void config_interrupt() override;

 private:
  void raise(uint32_t bits);
  VmHooks& hooks_;
  std::shared_ptr<VirtioDevice> dev_;
  uint64_t base_;
  uint32_t irq_;
  std::mutex mu_;
  uint32_t device_features_sel_ = 0, driver_features_sel_ = 0, queue_sel_ = 0;
  uint32_t interrupt_status_ = 0;
  bool level_ = false;
};

}  // namespace vireo::virtio
