#include "vmm/resources.h"

#include <bit>

#include "common/error.h"
#include "common/layout.h"

namespace vireo::vmm {

const char* resource_kind_name(ResourceKind k) {
  switch (k) {
    case ResourceKind::Pio: return "I/O";
    case ResourceKind::Mmio: return "MMIO";
    case ResourceKind::Irq: return "IRQ";
    case ResourceKind::Gsi: return "GSI";
  }
  return "?";
}

namespace {
std::string describe(ResourceKind k, uint64_t base, uint64_t len) {
  if (k == ResourceKind::Irq || k == ResourceKind::Gsi) return fmt::format("{} {}", resource_kind_name(k), base);
  return fmt::format("{} {:#x}-{:#x}", resource_kind_name(k), base, base + len - 1);
}
}  // namespace

ResourceAllocator::ResourceAllocator(uint32_t max_gsi) : max_gsi_(max_gsi) {}

ResourceAllocator::Map& ResourceAllocator::map(ResourceKind k) {
  switch (k) {
    case ResourceKind::Pio: return pio_;
    case ResourceKind::Mmio: return mmio_;
    case ResourceKind::Irq: return irq_;
    case ResourceKind::Gsi: return gsi_;
  }
  return pio_;
}

void ResourceAllocator::insert(ResourceKind k, uint64_t base, uint64_t len, const std::string& owner) {
  if (len == 0 || base + len < base) fail("resources: empty or wrapping {} range for {}", resource_kind_name(k), owner);
  Map& m = map(k);
  auto it = m.upper_bound(base);
  if (it != m.end() && it->first < base + len)
    fail("resources: {} for {} overlaps {}", describe(k, base, len), owner, it->second.owner);
  if (it != m.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.len > base)
      fail("resources: {} for {} overlaps {}", describe(k, base, len), owner, prev->second.owner);
  }
  m.emplace(base, ResourceGrant{k, base, len, owner});
}

void ResourceAllocator::reserve_pio(uint64_t base, uint64_t len, const std::string& owner) {
  std::lock_guard lock(mu_);
  if (base + len > 0x10000) fail("resources: I/O ports {:#x}+{} for {} beyond 0xffff", base, len, owner);
  insert(ResourceKind::Pio, base, len, owner);
}

void ResourceAllocator::reserve_mmio(uint64_t base, uint64_t len, const std::string& owner) {
  std::lock_guard lock(mu_);
  insert(ResourceKind::Mmio, base, len, owner);
}

void ResourceAllocator::reserve_irq(uint32_t line, const std::string& owner) {
  std::lock_guard lock(mu_);
  if (line >= layout::kIoapicPins) fail("resources: IRQ {} for {}: the IOAPIC has {} pins", line, owner, layout::kIoapicPins);
  insert(ResourceKind::Irq, line, 1, owner);
}

uint64_t ResourceAllocator::allocate(ResourceKind k, const Window& w, uint64_t size, uint64_t align,
                                     const std::string& owner) {
  if (size == 0) fail("resources: empty {} request for {}", resource_kind_name(k), owner);
  if (align == 0) align = std::bit_ceil(size);
  if (!std::has_single_bit(align)) fail("resources: alignment {:#x} for {} is not a power of two", align, owner);
  std::lock_guard lock(mu_);
  Map& m = map(k);
  uint64_t cand = (w.base + align - 1) & ~(align - 1);
  // Walk the grants in address order, bumping the candidate past each one it collides with.
  for (auto it = m.begin(); it != m.end() && cand + size <= w.base + w.size; ++it) {
    const uint64_t b = it->first, e = b + it->second.len;
    if (e <= cand) continue;
    if (b >= cand + size) break;
    cand = (e + align - 1) & ~(align - 1);
  }
  if (cand < w.base || cand + size > w.base + w.size)
    fail("resources: no room for {} bytes of {} for {} in {:#x}-{:#x}", size, resource_kind_name(k), owner, w.base,
         w.base + w.size - 1);
  insert(k, cand, size, owner);
  return cand;
}

uint64_t ResourceAllocator::allocate_pio(const Window& w, uint64_t size, const std::string& owner, uint64_t align) {
  return allocate(ResourceKind::Pio, w, size, align, owner);
}

uint64_t ResourceAllocator::allocate_mmio(const Window& w, uint64_t size, const std::string& owner, uint64_t align) {
  return allocate(ResourceKind::Mmio, w, size, align, owner);
}

uint32_t ResourceAllocator::allocate_irq(const std::string& owner) {
  std::lock_guard lock(mu_);
  for (uint32_t l : layout::kDeviceIrqLines) {
    if (irq_.count(l)) continue;
    insert(ResourceKind::Irq, l, 1, owner);
    return l;
  }
  fail("resources: no free interrupt line left for {}", owner);
}

uint32_t ResourceAllocator::allocate_gsi(const std::string& owner) {
  std::lock_guard lock(mu_);
  uint32_t g = layout::kFirstMsiGsi;
  if (!gsi_.empty()) g = std::max<uint32_t>(g, static_cast<uint32_t>(gsi_.rbegin()->first + 1));
  if (g >= max_gsi_) {
    // Reuse a released one before giving up.
    for (g = layout::kFirstMsiGsi; g < max_gsi_ && gsi_.count(g); ++g) {
    }
    if (g >= max_gsi_) fail("resources: all {} GSIs in use ({})", max_gsi_, owner);
  }
  insert(ResourceKind::Gsi, g, 1, owner);
  return g;
}

void ResourceAllocator::release(ResourceKind kind, uint64_t base) {
  std::lock_guard lock(mu_);
  map(kind).erase(base);
}

std::vector<ResourceGrant> ResourceAllocator::grants() const {
  std::lock_guard lock(mu_);
  std::vector<ResourceGrant> out;
  for (const Map* m : {&pio_, &mmio_, &irq_, &gsi_})
    for (const auto& [b, g] : *m) out.push_back(g);
  return out;
}

}  // namespace vireo::vmm
