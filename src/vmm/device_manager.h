// vireo/vmm: the DeviceManager, owned by the Machine: it creates and owns every device of the VM (legacy PC
// devices, ACPI PM, the PCI root, virtio transports and devices), the PIO and MMIO buses, and the one
// ResourceAllocator for ports, MMIO, IRQ lines and GSIs. It is the VmHooks devices wire themselves through,
// and it drives every device's lifecycle (devices/device.h): pause/resume, save/restore, stop.
//
// How to add a device (docs/vmm.md, "Adding a device"):
//   1. the device class in its own folder: a BusDevice (port/MMIO registers) or a pci::PciFunction, with the
//      Device hooks it needs (pause/resume if it has threads, a versioned save/restore_state if it has
//      state);
//   2. a fixed address in common/layout.h, or none (then allocate one from a window);
//   3. a few lines in DeviceManager::create_devices() (device_manager.cpp): create it from the config and call
//      add_pio()/add_mmio()/add_pci()/add_virtio(). Creation order is fixed; appending keeps snapshots and
//      migration compatible.
//   4. its settings in config::VmConfig (config/vm_config.h) and a flag in vmm/options.cpp.
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "boot/boot.h"
#include "config/vm_config.h"
#include "devices/bus.h"
#include "devices/device.h"
#include "devices/serial.h"
#include "devices/serial_backend.h"
#include "devices/vm_hooks.h"
#include "kvm/kvm.h"
#include "memory/guest_memory.h"
#include "vmm/resources.h"

namespace vireo::pci {
class PciHostBridge;
class PciFunction;
}  // namespace vireo::pci
namespace vireo::virtio {
class VirtioDevice;
class BalloonDevice;
}  // namespace vireo::virtio
namespace vireo::acpi {
class AcpiPm;
}

namespace vireo::vmm {

// What devices may ask of the machine (they run on vCPU threads; these must not block).
struct MachineEvents {
  std::function<void(int code, const std::string& reason)> exit;  // power-off, reset, debug-exit
  std::function<void(const std::string& line)> boot_log;          // boot-marker lines
};

class DeviceManager : public VmHooks {
 public:
  DeviceManager(kvm::Vm& vm, GuestMemory& mem, MachineEvents events);
  ~DeviceManager() override;  // stops every device, then unwires and destroys them in reverse order
  DeviceManager(const DeviceManager&) = delete;
  DeviceManager& operator=(const DeviceManager&) = delete;

  // Creates every device `cfg` describes, in a fixed order: legacy (serial0, i8042, rtc, debug-exit,
  // boot-marker), acpi0, pci0 (PCI transport), then virtio devices (disks, nets, console, rng, balloon).
  // `kernel` decides the test-guest-only port 0x80. Throws Error (files, taps, resources).
  void create_devices(const config::VmConfig& cfg, boot::KernelKind kernel);

  // ---- adding devices (create_devices; later hotplug). Each reserves its resources, wires the device
  // and records it (query-vm row + lifecycle). `info.details` is shown in query-vm.
  void add_pio(const DeviceInfo& info, uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev);
  void add_mmio(const DeviceInfo& info, uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev);
  // Places the function on the PCI root (next free slot, BARs from the allocator); returns the slot.
  uint8_t add_pci(DeviceInfo info, std::shared_ptr<pci::PciFunction> fn);
  // Wraps a virtio device in the configured transport (PCI function or virtio-mmio window + IRQ).
  void add_virtio(std::shared_ptr<virtio::VirtioDevice> dev);
  // A device with no registers of its own (lifecycle only).
  void add_device(const DeviceInfo& info, std::shared_ptr<Device> dev);

  // ---- lifecycle, over all devices (vCPUs parked/stopped by the caller)
  void pause_devices();   // in reverse creation order
  void resume_devices();  // in creation order
  // {"<id>": {"version": N, "state": {...}}, ...} for every device with a state.
  nlohmann::json save_state();
  // Every saved id must exist here and vice versa; versions newer than the device's are refused.
  void restore_state(const nlohmann::json& devices);

  // ---- queries
  std::vector<DeviceInfo> infos() const;
  ResourceAllocator& resources() { return res_; }
  pci::PciHostBridge* pci_root() { return pci_root_.get(); }
  // The PCI root as the ACPI tables describe it (ECAM, BAR windows, each device's INTx line); false without
  // one (mmio transport). Read after create_devices.
  bool acpi_pci_root(acpi::PciRoot& out) const;
  virtio::BalloonDevice* balloon() { return balloon_; }
  // Kernel command line additions of the devices (virtio-mmio announcements); read after create_devices.
  const std::string& cmdline_additions() const { return cmdline_; }
  // Starts host-side input (serial backend) on `loop`; before the vCPUs start.
  void attach_io(EventLoop& loop);
  // The ACPI power button (the control socket's `shutdown`).
  void press_power_button();

  // ---- VmHooks
  Bus& pio_bus() override { return pio_; }
  Bus& mmio_bus() override { return mmio_; }
  GuestMemory& memory() override { return mem_; }
  void add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) override;
  void remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) override;
  uint32_t allocate_irq_line() override;
  void set_irq_line(uint32_t line, bool level) override;
  void add_irqfd(uint32_t gsi, int fd) override;
  void remove_irqfd(uint32_t gsi, int fd) override;
  uint32_t allocate_msi_gsi() override;
  void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) override;
  void signal_msi(uint64_t address, uint32_t data) override;
  void register_device(const DeviceInfo& info) override;
  void append_cmdline(const std::string& text) override;

 private:
  struct Entry {
    DeviceInfo info;
    std::shared_ptr<Device> dev;  // lifecycle (may be null for rows registered by a device itself)
    std::vector<std::pair<AddressSpace, uint64_t>> ranges;  // inserted on a bus by us (removed at teardown)
  };
  void create_legacy(const config::VmConfig& cfg, boot::KernelKind kernel);
  void add_entry(Entry e);

  kvm::Vm& vm_;
  GuestMemory& mem_;
  MachineEvents events_;
  ResourceAllocator res_;
  Bus pio_{"pio"}, mmio_{"mmio"};
  config::Transport transport_ = config::Transport::Pci;
  std::unique_ptr<SerialBackend> serial_backend_;
  std::shared_ptr<Serial16550> serial_;
  std::shared_ptr<acpi::AcpiPm> acpi_pm_;
  std::shared_ptr<pci::PciHostBridge> pci_root_;
  std::vector<std::array<uint32_t, 3>> pci_intx_;  // {slot, pin (1 = INTA), IOAPIC line} per INTx user
  virtio::BalloonDevice* balloon_ = nullptr;
  std::string cmdline_;
  mutable std::mutex mu_;  // entries_ (query-vm reads them from the I/O thread)
  std::vector<Entry> entries_;
};

}  // namespace vireo::vmm
