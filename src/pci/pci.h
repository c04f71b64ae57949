// vireo/pci: a conventional PCI bus 0 behind a host bridge. Config space through the legacy CF8/CFC port
// pair and through ECAM (memory-mapped, 4 KiB per function); BAR sizing/placement as firmware would do it;
// a capability list; BAR windows mapped on the VMM's MMIO/PIO buses following the command register.
#pragma once
#include <array>
#include <functional>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/device.h"

namespace vireo::pci {

inline constexpr uint16_t kCommandIo = 1, kCommandMem = 2, kCommandBusMaster = 4, kCommandIntxDisable = 0x400;
inline constexpr uint16_t kStatusCapList = 0x10, kStatusIntx = 0x08;
inline constexpr uint8_t kCapIdMsix = 0x11, kCapIdVendor = 0x09;

enum class BarKind { Mem32, Mem64, Io };

struct Bar {
  BarKind kind = BarKind::Mem32;
  uint64_t size = 0;          // 0: not implemented; else a power of two
  bool prefetchable = false;
  uint64_t addr = 0;          // as programmed (not necessarily decoded)
  std::optional<uint64_t> mapped;  // where it is currently inserted on a bus
};

// One PCI function (we model single-function devices at function 0). Its lifecycle (pause, state) is the
// Device part; the transport or device model deriving from it implements that.
class PciFunction : public Device {
 public:
  PciFunction(std::string name, uint16_t vendor, uint16_t device, uint32_t class_code, uint8_t revision,
              uint16_t subsys_vendor, uint16_t subsys_id);
  virtual ~PciFunction();
  PciFunction(const PciFunction&) = delete;
  PciFunction& operator=(const PciFunction&) = delete;

  // Config accesses (offset < 4096; size 1, 2 or 4; must not cross a dword: split by the bridge).
  uint32_t config_read(uint16_t offset, unsigned size);
  void config_write(uint16_t offset, unsigned size, uint32_t value);

  // Set-up, before attach: declare BARs (size a power of two, >= 16 for memory, >= 4 for I/O) and
  // capabilities. add_capability copies `bytes` (starting with the id byte; the next pointer is filled
  // in) and returns its offset; `writable` (same length, may be empty) gives the guest-writable bits.
  void add_bar(int index, BarKind kind, uint64_t size, bool prefetchable = false);
  uint8_t add_capability(std::span<const uint8_t> bytes, std::span<const uint8_t> writable = {});
  void set_interrupt_pin(uint8_t pin, uint8_t line);  // pin 1 = INTA

  // Called by the host bridge: where BARs are decoded, and the initial "firmware" placement.
  void attach(Bus* mmio, Bus* pio);
  void place_bar(int index, uint64_t addr);
  void detach();  // unmaps every BAR
  const Bar& bar(int index) const { return bars_.at(index); }
  const std::string& name() const { return name_; }
  uint16_t command() const { return command_.load(std::memory_order_relaxed); }  // lock-free mirror

  // Raw config bytes (for the device's own capability state, e.g. MSI-X message control).
  uint8_t cfg8(uint16_t off) const { return cfg_[off]; }
  uint16_t cfg16(uint16_t off) const { return static_cast<uint16_t>(cfg_[off] | cfg_[off + 1] << 8); }
  uint32_t cfg32(uint16_t off) const;
  void set_cfg8(uint16_t off, uint8_t v) { cfg_[off] = v; }
  void set_cfg16(uint16_t off, uint16_t v);
  void set_cfg32(uint16_t off, uint32_t v);

  // Saved config space (pci_state.cpp), embedded in the owning device's state: the first 256 bytes and the
  // BAR addresses. Restore takes only guest-writable bits from the state, refuses a state whose read-only
  // bytes (ids, capabilities) differ from this function's, then re-decodes the BARs (bar_moved follows).
  nlohmann::json save_config_state();
  void restore_config_state(JsonReader& r);

  // Sets/clears the INTx status bit (0x06 bit 3); the device drives the line itself. Lock-free.
  void set_intx_status(bool asserted) { intx_status_.store(asserted, std::memory_order_relaxed); }

 protected:
  // BAR accesses (offset inside the BAR). Called on vCPU threads.
  virtual void bar_read(int index, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(int index, uint64_t offset, std::span<const uint8_t> data) = 0;
  // A BAR was unmapped from `old_addr` and/or mapped at `new_addr` (e.g. to move ioeventfds).
  virtual void bar_moved(int index, std::optional<uint64_t> old_addr, std::optional<uint64_t> new_addr);
  // After a guest config write (for capability side effects), and a hook for special reads.
  virtual void config_written(uint16_t offset, unsigned size);
  virtual std::optional<uint32_t> config_read_hook(uint16_t offset, unsigned size);

  std::recursive_mutex cfg_mu_;  // guards cfg_ and bars_

 private:
  class BarWindow;
  void update_mappings();
  void map_bar(int index, std::optional<uint64_t> want);
  int bar_index_of(uint16_t offset) const;  // -1 if not a BAR register (upper halves map to their BAR)

  std::string name_;
  std::array<uint8_t, 4096> cfg_{};
  std::array<uint8_t, 4096> wmask_{};
  std::array<Bar, 6> bars_{};
  uint8_t last_cap_ = 0;
  uint16_t next_cap_off_ = 0x40;
  std::atomic<uint16_t> command_{0};
  std::atomic<bool> intx_status_{false};
  Bus* mmio_ = nullptr;
  Bus* pio_ = nullptr;
};

// Bus 0: slot 0 is the host bridge itself; devices take slots 1..31.
class PciHostBridge : public Device {
 public:
  struct Layout {
    uint64_t ecam_base = 0xE000'0000;   // bus 0 only: 1 MiB
    uint64_t mem32_base = 0xC000'0000;  // 32-bit BAR window
    uint64_t mem32_size = 0x1000'0000;
    uint64_t io_base = 0xC000;          // I/O BAR window
    uint64_t io_size = 0x4000;
  };
  static constexpr uint64_t kConfigAddressPort = 0xCF8;  // CF8..CFF
  static constexpr uint64_t kEcamSize = 1 << 20;

  // Where add_device() places BARs: returns a naturally aligned address for a BAR of `size` bytes, or
  // throws. The VMM passes its resource allocator; without one the bridge fills its windows in order.
  using BarAllocator = std::function<uint64_t(BarKind kind, uint64_t size, const std::string& owner)>;

  PciHostBridge(Bus& pio, Bus& mmio, const Layout& layout, BarAllocator alloc = nullptr);
  PciHostBridge(Bus& pio, Bus& mmio) : PciHostBridge(pio, mmio, Layout{}) {}
  ~PciHostBridge() override;

  // Takes the next free slot, assigns its BARs (naturally aligned) and maps them. Returns the slot.
  uint8_t add_device(std::shared_ptr<PciFunction> fn);

  // Device: the CF8 address latch (functions save their own config space).
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

  // Config access by (slot, function 0 only), as CF8/CFC and ECAM do; absent functions read all-ones.
  uint32_t config_read(uint8_t bus, uint8_t slot, uint8_t func, uint16_t offset, unsigned size);
  void config_write(uint8_t bus, uint8_t slot, uint8_t func, uint16_t offset, unsigned size, uint32_t value);
  const Layout& layout() const { return layout_; }

 private:
  class PortDevice;
  class EcamDevice;
  Bus& pio_;
  Bus& mmio_;
  Layout layout_;
  BarAllocator alloc_;
  uint64_t next_mem_, next_io_;
  std::mutex mu_;
  uint32_t config_address_ = 0;
  std::array<std::shared_ptr<PciFunction>, 32> slots_{};
};

}  // namespace vireo::pci
