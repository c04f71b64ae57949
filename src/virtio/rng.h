// vireo/virtio: virtio-rng (5.4): fills the driver's writable buffers with getrandom() bytes.
#pragma once
#include "virtio/virtio_device.h"

namespace vireo::virtio {

class RngDevice : public VirtioDevice {
 public:
  RngDevice(GuestMemory& mem, std::string id);
  ~RngDevice() override;
  std::string type_name() const override { return "virtio-rng"; }

 protected:
  uint64_t features() const override { return 0; }
  void process_queue(uint16_t q) override;
};

}  // namespace vireo::virtio
