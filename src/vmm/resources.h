// vireo/vmm: the one allocator of a VM's platform resources: I/O port ranges, MMIO ranges, interrupt lines
// (IOAPIC pins) and MSI GSIs. Fixed architectural resources are reserved by name (legacy devices at their
// layout.h addresses); the rest is handed out from the windows of common/layout.h. Every grant records its
// owner, so an overlap fails with both names ("resources: I/O 0x3f8-0x3ff for serial0 overlaps i8042").
//
// Allocation is deterministic: the same configuration, created in the same order, gets the same addresses,
// lines and GSIs. Snapshot restore and migration rely on that (the guest has programmed them).
// Thread-safe (MSI GSIs are allocated lazily from vCPU threads when the guest enables MSI-X).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace vireo::vmm {

enum class ResourceKind { Pio, Mmio, Irq, Gsi };
const char* resource_kind_name(ResourceKind k);  // "I/O", "MMIO", "IRQ", "GSI"

struct ResourceGrant {
  ResourceKind kind;
  uint64_t base;
  uint64_t len;  // 1 for IRQ lines and GSIs
  std::string owner;
};

struct Window {
  uint64_t base, size;
};

class ResourceAllocator {
 public:
  // `max_gsi`: the number of GSI routes KVM supports (KVM_CAP_IRQ_ROUTING).
  explicit ResourceAllocator(uint32_t max_gsi = 1024);

  // Fixed claims. Throw Error on overlap (naming both owners) or an empty range.
  void reserve_pio(uint64_t base, uint64_t len, const std::string& owner);
  void reserve_mmio(uint64_t base, uint64_t len, const std::string& owner);
  void reserve_irq(uint32_t line, const std::string& owner);

  // Lowest free, `align`-aligned range of `size` inside `window` (align 0: size rounded up to a power of
  // two, i.e. natural alignment as PCI BARs need). Throws Error("resources: no room for ...").
  uint64_t allocate_pio(const Window& window, uint64_t size, const std::string& owner, uint64_t align = 0);
  uint64_t allocate_mmio(const Window& window, uint64_t size, const std::string& owner, uint64_t align = 0);
  // Next free line of layout::kDeviceIrqLines; throws when none is left.
  uint32_t allocate_irq(const std::string& owner);
  // Next free MSI GSI (layout::kFirstMsiGsi and up); throws when KVM's table is full.
  uint32_t allocate_gsi(const std::string& owner);

  void release(ResourceKind kind, uint64_t base);  // hot-unplug; unknown = no-op

  std::vector<ResourceGrant> grants() const;  // sorted by kind, then base

 private:
  using Map = std::map<uint64_t, ResourceGrant>;  // base -> grant
  Map& map(ResourceKind k);
  void insert(ResourceKind k, uint64_t base, uint64_t len, const std::string& owner);  // mu_ held
  uint64_t allocate(ResourceKind k, const Window& w, uint64_t size, uint64_t align, const std::string& owner);

  mutable std::mutex mu_;
  uint32_t max_gsi_;
  Map pio_, mmio_, irq_, gsi_;
};

}  // namespace vireo::vmm
