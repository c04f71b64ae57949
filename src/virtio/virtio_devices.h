// vireo/virtio: the device models a VM configuration asks for. The VMM's DeviceManager wraps each in a
// transport (virtio-pci on the PCI root, or a virtio-mmio window) and owns them; see src/vmm/device_manager.h.
#pragma once
#include <memory>
#include <vector>

#include "config/vm_config.h"
#include "memory/guest_memory.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

// Opens disks (block layer: raw through io_uring when possible, else the thread pool; qcow2), taps and the
// console backend, and creates the devices in config order: disk0.., net0.., console0, rng0, balloon0.
// Throws Error with a one-line message ("--disk /x: engine=uring needs a raw image, not qcow2").
std::vector<std::shared_ptr<VirtioDevice>> create_virtio_devices(const config::VmConfig& cfg, GuestMemory& mem);

// Default MAC of the index-th NIC: 52:54:00:12:34:(56+index), as QEMU numbers them.
std::array<uint8_t, 6> default_mac(size_t index);

}  // namespace vireo::virtio
