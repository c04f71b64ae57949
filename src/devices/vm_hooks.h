// vireo/devices: what the VMM offers devices for wiring themselves in. Implemented by src/vmm over KVM;
// devices (serial, virtio transports, ...) see only this, never the KVM classes, and never each other.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "devices/bus.h"
#include "memory/guest_memory.h"

namespace vireo {

enum class AddressSpace { Pio, Mmio };

// A row of the control socket's query-vm "devices" list.
struct DeviceInfo {
  std::string type;     // "serial", "virtio-blk", ...
  std::string id;       // unique per VM, e.g. "serial0", "disk0"
  std::string details;  // one-line description: "pci 00:02.0", "mmio 0xd0000000 irq 5", "path=/x.img ro"
};

class VmHooks {
 public:
  virtual ~VmHooks() = default;

  virtual Bus& pio_bus() = 0;
  virtual Bus& mmio_bus() = 0;
  virtual GuestMemory& memory() = 0;

  // Doorbells: KVM signals `fd` when the guest writes [addr, addr+len) (only values equal to datamatch if set),
  // without a userspace exit. remove_* takes the same arguments.
  virtual void add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) = 0;
  virtual void remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) = 0;

  // Legacy interrupt lines (IOAPIC/PIC pins). Lines 0-15 are ISA; serial COM1 uses 4.
  virtual uint32_t allocate_irq_line() = 0;           // a free line for a device (virtio-mmio), throws when none left
  virtual void set_irq_line(uint32_t line, bool level) = 0;
  // irqfd: writing `fd` raises GSI `gsi` (edge). For MSI: allocate a GSI, set its route, attach an irqfd.
  virtual void add_irqfd(uint32_t gsi, int fd) = 0;
  virtual void remove_irqfd(uint32_t gsi, int fd) = 0;
  virtual uint32_t allocate_msi_gsi() = 0;
  virtual void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) = 0;   // (re)programs the route
  virtual void signal_msi(uint64_t address, uint32_t data) = 0;                      // one-shot KVM_SIGNAL_MSI

  // Registers a device for query-vm and logs.
  virtual void register_device(const DeviceInfo& info) = 0;
  // Appends to the kernel command line (virtio-mmio devices announce themselves this way).
  virtual void append_cmdline(const std::string& text) = 0;
};

}  // namespace vireo
