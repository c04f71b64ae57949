// vireo/virtio: the one entry point the VMM uses. Parse the CLI texts into VirtioOptions, then construct
// VirtioDevices with the VM's hooks: it creates every device, wires it (PCI host bridge on CF8-CFF + ECAM,
// or virtio-mmio windows announced on the kernel command line), registers it for query-vm, and starts the
// device threads. Destroying it stops the devices (vCPUs must be stopped first).
//
// See docs/virtio.md for how vireo-vmm's main calls this.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/vm_hooks.h"
#include "virtio/console.h"

namespace vireo::pci {
class PciHostBridge;
}

namespace vireo::virtio {

class VirtioDevice;
class BalloonDevice;

enum class Transport { Pci, Mmio };

struct DiskOptions {
  std::string path;
  std::string format;        // "" = probe, "raw", "qcow2"
  bool read_only = false;
  bool direct = false;       // cache=none: O_DIRECT
  std::string serial;        // GET_ID, <= 20 bytes
  uint16_t queues = 1;
  std::string engine = "auto";  // auto | threads | uring (uring: raw files only)
};

struct NetOptions {
  std::string tap;                            // interface name (created if missing, when permitted)
  std::optional<std::array<uint8_t, 6>> mac;  // default: 52:54:00:12:34:(56+index)
  uint16_t queues = 1;                        // queue pairs
};

struct VirtioOptions {
  std::vector<DiskOptions> disks;
  std::vector<NetOptions> nets;
  std::optional<ConsoleBackendSpec> console;
  bool rng = false;
  bool balloon = false;
  Transport transport = Transport::Pci;
  bool any() const { return !disks.empty() || !nets.empty() || console || rng || balloon; }
};

// CLI texts -> options. Each throws vireo::Error with a one-line message naming the flag, e.g.
// "--disk: unknown key 'fromat'" or "--net: bad mac '52:54'".
DiskOptions parse_disk(const std::string& text);        // path=F,format=raw,readonly=on,cache=none,serial=S,queues=N
NetOptions parse_net(const std::string& text);          // tap=NAME,mac=M,queues=N
ConsoleBackendSpec parse_console(const std::string& text);  // stdio | pty | unix=PATH
Transport parse_transport(const std::string& text);     // pci | mmio
std::array<uint8_t, 6> parse_mac(const std::string& text);

// Guest-physical placement (inside layout::kMmioHoleStart..End; docs/virtio.md).
inline constexpr uint64_t kPciMem32Base = 0xC000'0000, kPciMem32Size = 0x1000'0000;
inline constexpr uint64_t kVirtioMmioBase = 0xD000'0000, kVirtioMmioStride = 0x1000;
inline constexpr uint64_t kPciEcamBase = 0xE000'0000;

class VirtioDevices {
 public:
  VirtioDevices(VmHooks& hooks, const VirtioOptions& opts);
  ~VirtioDevices();
  VirtioDevices(const VirtioDevices&) = delete;
  VirtioDevices& operator=(const VirtioDevices&) = delete;

  size_t count() const { return entries_.size(); }
  BalloonDevice* balloon();  // the balloon, if one was requested
  VirtioDevice& device(size_t i) { return *entries_.at(i).dev; }

 private:
  struct Entry {
    std::shared_ptr<VirtioDevice> dev;
    std::shared_ptr<void> transport;  // VirtioPciDevice or VirtioMmioDevice
    uint64_t mmio_base = 0;
  };
  void add(std::shared_ptr<VirtioDevice> dev);

  VmHooks& hooks_;
  Transport transport_;
  std::unique_ptr<pci::PciHostBridge> bridge_;
  std::vector<Entry> entries_;
};

}  // namespace vireo::virtio
