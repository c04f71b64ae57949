#include "pci/pci.h"

#include <cstring>

#include "common/error.h"

namespace vireo::pci {

// ---------------------------------------------------------------- PciFunction

class PciFunction::BarWindow : public BusDevice {
 public:
  BarWindow(PciFunction* fn, int index) : fn_(fn), index_(index) {}
  void read(uint64_t offset, std::span<uint8_t> data) override { fn_->bar_read(index_, offset, data); }
  void write(uint64_t offset, std::span<const uint8_t> data) override { fn_->bar_write(index_, offset, data); }
  std::string name() const override { return fmt::format("{} BAR{}", fn_->name(), index_); }

 private:
  PciFunction* fn_;
  int index_;
};

PciFunction::PciFunction(std::string name, uint16_t vendor, uint16_t device, uint32_t class_code,
                         uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id)
    : name_(std::move(name)) {
  set_cfg16(0x00, vendor);
  set_cfg16(0x02, device);
  cfg_[0x08] = revision;
  cfg_[0x09] = class_code & 0xff;
  cfg_[0x0a] = (class_code >> 8) & 0xff;
  cfg_[0x0b] = (class_code >> 16) & 0xff;
  cfg_[0x0e] = 0;  // header type 0, single function
  set_cfg16(0x2c, subsys_vendor);
  set_cfg16(0x2e, subsys_id);
  set_cfg16(0x04, kCommandMem | kCommandIo | kCommandBusMaster);  // as firmware leaves it
  command_ = cfg16(0x04);
  wmask_[0x04] = 0x07;
  wmask_[0x05] = 0x04;  // INTx disable
  wmask_[0x3c] = 0xff;  // interrupt line
}

PciFunction::~PciFunction() = default;

uint32_t PciFunction::cfg32(uint16_t off) const {
  uint32_t v;
  std::memcpy(&v, &cfg_[off], 4);
  return v;
}
void PciFunction::set_cfg16(uint16_t off, uint16_t v) { std::memcpy(&cfg_[off], &v, 2); }
void PciFunction::set_cfg32(uint16_t off, uint32_t v) { std::memcpy(&cfg_[off], &v, 4); }


void PciFunction::add_bar(int index, BarKind kind, uint64_t size, bool prefetchable) {
  if (index < 0 || index > 5 || (kind == BarKind::Mem64 && index == 5)) fail("pci {}: bad BAR index {}", name_, index);
  if (size == 0 || (size & (size - 1)) != 0 || size < (kind == BarKind::Io ? 4u : 16u))
    fail("pci {}: BAR{} size {:#x} is not a power of two", name_, index, size);
  bars_[index] = Bar{kind, size, prefetchable, 0, std::nullopt};
}

uint8_t PciFunction::add_capability(std::span<const uint8_t> bytes, std::span<const uint8_t> writable) {
  if (bytes.size() < 2 || next_cap_off_ + bytes.size() > 0x100) fail("pci {}: capability does not fit", name_);
  uint8_t off = static_cast<uint8_t>(next_cap_off_);
  std::memcpy(&cfg_[off], bytes.data(), bytes.size());
  cfg_[off + 1] = 0;
  for (size_t i = 0; i < writable.size() && i < bytes.size(); ++i) wmask_[off + i] = writable[i];
  if (last_cap_ == 0) {
    cfg_[0x34] = off;
    set_cfg16(0x06, cfg16(0x06) | kStatusCapList);
  } else {
    cfg_[last_cap_ + 1] = off;
  }
  last_cap_ = off;
  next_cap_off_ = static_cast<uint16_t>((off + bytes.size() + 3) & ~3u);
  return off;
}

void PciFunction::set_interrupt_pin(uint8_t pin, uint8_t line) {
  cfg_[0x3d] = pin;
  cfg_[0x3c] = line;
}

int PciFunction::bar_index_of(uint16_t offset) const {
  if (offset < 0x10 || offset >= 0x28) return -1;
  return (offset - 0x10) / 4;
}

uint32_t PciFunction::config_read(uint16_t offset, unsigned size) {
  std::lock_guard lock(cfg_mu_);
  if (offset >= 4096 || size == 0 || size > 4 || (offset & 3) + size > 4) return 0xffffffffu;
  if (auto v = config_read_hook(offset, size)) return *v;
  uint16_t base = offset & ~3;
  uint32_t dword = cfg32(base);
  if (base == 0x04 && intx_status_.load(std::memory_order_relaxed)) dword |= static_cast<uint32_t>(kStatusIntx) << 16;
  int reg = bar_index_of(base);
  if (reg >= 0) {
    // Compose the BAR register from its state.
    dword = 0;
    const Bar* b = &bars_[reg];
    bool upper = false;
    if (b->size == 0 && reg > 0 && bars_[reg - 1].kind == BarKind::Mem64 && bars_[reg - 1].size) {
      b = &bars_[reg - 1];
      upper = true;
    }
    if (b->size != 0) {
      if (upper) {
        dword = static_cast<uint32_t>(b->addr >> 32);
      } else if (b->kind == BarKind::Io) {
        dword = (static_cast<uint32_t>(b->addr) & ~static_cast<uint32_t>(b->size - 1)) | 1;
      } else {
        dword = static_cast<uint32_t>(b->addr) & ~static_cast<uint32_t>(b->size - 1) & ~0xfu;
        if (b->kind == BarKind::Mem64) dword |= 4;
        if (b->prefetchable) dword |= 8;
      }
    }
  }
  return (dword >> ((offset & 3) * 8)) & (size == 4 ? 0xffffffffu : ((1u << (size * 8)) - 1));
}

void PciFunction::config_write(uint16_t offset, unsigned size, uint32_t value) {
  std::lock_guard lock(cfg_mu_);
  if (offset >= 4096 || size == 0 || size > 4 || (offset & 3) + size > 4) return;
  uint16_t base = offset & ~3;
  int reg = bar_index_of(base);
  if (reg >= 0) {
    // Merge into the current register value, then apply the BAR's address mask.
    uint32_t cur = config_read(base, 4);
    unsigned shift = (offset & 3) * 8;
    uint32_t mask = (size == 4 ? 0xffffffffu : ((1u << (size * 8)) - 1)) << shift;
    uint32_t v = (cur & ~mask) | ((value << shift) & mask);
    Bar* b = &bars_[reg];
    bool upper = false;
    if (b->size == 0 && reg > 0 && bars_[reg - 1].kind == BarKind::Mem64 && bars_[reg - 1].size) {
      b = &bars_[reg - 1];
      upper = true;
    }
    if (b->size == 0) return;
    if (upper) {
      b->addr = ((static_cast<uint64_t>(v) << 32) | (b->addr & 0xffffffffu)) & ~(b->size - 1);
    } else {
      uint64_t lowmask = b->kind == BarKind::Io ? ~3ull : ~0xfull;
      b->addr = ((b->addr & ~0xffffffffull) | (v & lowmask)) & ~(b->size - 1);
      if (b->kind == BarKind::Io) b->addr &= 0xffff;
    }
    update_mappings();
    return;
  }
  for (unsigned i = 0; i < size; ++i) {
    uint16_t o = offset + i;
    uint8_t m = wmask_[o];
    cfg_[o] = static_cast<uint8_t>((cfg_[o] & ~m) | ((value >> (8 * i)) & m));
  }
  if (base == 0x04) {
    command_ = cfg16(0x04);
    update_mappings();
  }
  config_written(offset, size);
}

void PciFunction::attach(Bus* mmio, Bus* pio) {
  std::lock_guard lock(cfg_mu_);
  mmio_ = mmio;
  pio_ = pio;
}

void PciFunction::place_bar(int index, uint64_t addr) {
  std::lock_guard lock(cfg_mu_);
  bars_.at(index).addr = addr;
  update_mappings();
}

void PciFunction::detach() {
  std::lock_guard lock(cfg_mu_);
  for (int i = 0; i < 6; ++i)
    if (bars_[i].size) map_bar(i, std::nullopt);
  mmio_ = pio_ = nullptr;
}

void PciFunction::update_mappings() {
  uint16_t cmd = command();
  for (int i = 0; i < 6; ++i) {
    const Bar& b = bars_[i];
    if (b.size == 0) continue;
    bool enabled = b.kind == BarKind::Io ? (cmd & kCommandIo) : (cmd & kCommandMem);
    std::optional<uint64_t> want;
    // Address 0 means "not placed"; an address range that wraps is never decoded.
    if (enabled && b.addr != 0 && b.addr + b.size > b.addr) want = b.addr;
    map_bar(i, want);
  }
}

void PciFunction::map_bar(int index, std::optional<uint64_t> want) {
  Bar& b = bars_[index];
  if (b.mapped == want) return;
  Bus* bus = b.kind == BarKind::Io ? pio_ : mmio_;
  std::optional<uint64_t> old = b.mapped;
  if (bus && b.mapped) bus->remove(*b.mapped);
  b.mapped.reset();
  if (bus && want) {
    try {
      bus->insert(*want, b.size, std::make_shared<BarWindow>(this, index));
      b.mapped = want;
    } catch (const Error& e) {
      // The guest placed the BAR over something else: it is simply not decoded.
      fmt::print(stderr, "pci {}: BAR{} at {:#x} not mapped: {}\n", name_, index, *want, e.what());
    }
  }
  if (old != b.mapped) bar_moved(index, old, b.mapped);
}

void PciFunction::bar_moved(int, std::optional<uint64_t>, std::optional<uint64_t>) {}
void PciFunction::config_written(uint16_t, unsigned) {}
std::optional<uint32_t> PciFunction::config_read_hook(uint16_t, unsigned) { return std::nullopt; }

// ---------------------------------------------------------------- host bridge

namespace {

class HostBridgeFunction : public PciFunction {
 public:
  // Red Hat's "QEMU PCIe host bridge" ids are what guests expect from a paravirtual platform; we use the
  // generic PCI host bridge class (06 00 00).
  HostBridgeFunction() : PciFunction("host-bridge", 0x1b36, 0x0008, 0x060000, 0, 0x1af4, 0x1100) {}

 protected:
  void bar_read(int, uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0xff, data.size()); }
  void bar_write(int, uint64_t, std::span<const uint8_t>) override {}
};

uint64_t le_value(std::span<const uint8_t> data) {
  uint64_t v = 0;
  std::memcpy(&v, data.data(), std::min<size_t>(data.size(), 8));
  return v;
}

void put_le(std::span<uint8_t> data, uint64_t v) { std::memcpy(data.data(), &v, std::min<size_t>(data.size(), 8)); }

}  // namespace

class PciHostBridge::PortDevice : public BusDevice {
 public:
  explicit PortDevice(PciHostBridge* hb) : hb_(hb) {}
  void read(uint64_t offset, std::span<uint8_t> data) override {
    uint32_t addr;
    {
      std::lock_guard lock(hb_->mu_);
      addr = hb_->config_address_;
    }
    if (offset == 0 && data.size() == 4) {
      put_le(data, addr);
      return;
    }
    if (offset < 4 || !(addr & 0x8000'0000u)) {
      std::memset(data.data(), 0xff, data.size());
      return;
    }
    unsigned sub = static_cast<unsigned>(offset - 4);
    if (sub + data.size() > 4) {
      std::memset(data.data(), 0xff, data.size());
      return;
    }
    put_le(data, hb_->config_read((addr >> 16) & 0xff, (addr >> 11) & 0x1f, (addr >> 8) & 7,
                                  static_cast<uint16_t>((addr & 0xfc) + sub), static_cast<unsigned>(data.size())));
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset == 0 && data.size() == 4) {
      std::lock_guard lock(hb_->mu_);
      hb_->config_address_ = static_cast<uint32_t>(le_value(data)) & 0x80ff'fffcu;
      return;
    }
    uint32_t addr;
    {
      std::lock_guard lock(hb_->mu_);
      addr = hb_->config_address_;
    }
    if (offset < 4 || !(addr & 0x8000'0000u)) return;
    unsigned sub = static_cast<unsigned>(offset - 4);
    if (sub + data.size() > 4) return;
    hb_->config_write((addr >> 16) & 0xff, (addr >> 11) & 0x1f, (addr >> 8) & 7,
                      static_cast<uint16_t>((addr & 0xfc) + sub), static_cast<unsigned>(data.size()),
                      static_cast<uint32_t>(le_value(data)));
  }
  std::string name() const override { return "pci-cf8"; }

 private:
  PciHostBridge* hb_;
};

class PciHostBridge::EcamDevice : public BusDevice {
 public:
  explicit EcamDevice(PciHostBridge* hb) : hb_(hb) {}
  void read(uint64_t offset, std::span<uint8_t> data) override {
    if (data.size() == 8) {  // split a qword into two dword accesses
      uint64_t lo = one_read(offset, 4), hi = one_read(offset + 4, 4);
      put_le(data, lo | hi << 32);
      return;
    }
    put_le(data, one_read(offset, static_cast<unsigned>(data.size())));
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    uint64_t v = le_value(data);
    if (data.size() == 8) {
      one_write(offset, 4, static_cast<uint32_t>(v));
      one_write(offset + 4, 4, static_cast<uint32_t>(v >> 32));
      return;
    }
    one_write(offset, static_cast<unsigned>(data.size()), static_cast<uint32_t>(v));
  }
  std::string name() const override { return "pci-ecam"; }

 private:
  uint32_t one_read(uint64_t off, unsigned size) {
    if ((off & 3) + size > 4) return 0xffffffffu;
    return hb_->config_read((off >> 20) & 0xff, (off >> 15) & 0x1f, (off >> 12) & 7,
                            static_cast<uint16_t>(off & 0xfff), size);
  }
  void one_write(uint64_t off, unsigned size, uint32_t v) {
    if ((off & 3) + size > 4) return;
    hb_->config_write((off >> 20) & 0xff, (off >> 15) & 0x1f, (off >> 12) & 7, static_cast<uint16_t>(off & 0xfff),
                      size, v);
  }
  PciHostBridge* hb_;
};

PciHostBridge::PciHostBridge(Bus& pio, Bus& mmio, const Layout& layout, BarAllocator alloc)
    : pio_(pio), mmio_(mmio), layout_(layout), alloc_(std::move(alloc)), next_mem_(layout.mem32_base), next_io_(layout.io_base) {
  slots_[0] = std::make_shared<HostBridgeFunction>();
  pio_.insert(kConfigAddressPort, 8, std::make_shared<PortDevice>(this));
  mmio_.insert(layout_.ecam_base, kEcamSize, std::make_shared<EcamDevice>(this));
}

PciHostBridge::~PciHostBridge() {
  pio_.remove(kConfigAddressPort);
  mmio_.remove(layout_.ecam_base);
  for (auto& s : slots_)
    if (s) s->detach();
}

uint8_t PciHostBridge::add_device(std::shared_ptr<PciFunction> fn) {
  std::lock_guard lock(mu_);
  uint8_t slot = 1;
  while (slot < 32 && slots_[slot]) ++slot;
  if (slot == 32) fail("pci: no free slot on bus 0 for {}", fn->name());
  // Plan every BAR first so a failure leaves nothing half-placed.
  std::array<uint64_t, 6> addrs{};
  uint64_t mem = next_mem_, io = next_io_;
  for (int i = 0; i < 6; ++i) {
    const Bar& b = fn->bar(i);
    if (b.size == 0) continue;
    if (alloc_) {
      addrs[i] = alloc_(b.kind, b.size, fmt::format("{} BAR{}", fn->name(), i));
      continue;
    }
    uint64_t& cursor = b.kind == BarKind::Io ? io : mem;
    uint64_t a = (cursor + b.size - 1) & ~(b.size - 1);
    uint64_t end = b.kind == BarKind::Io ? layout_.io_base + layout_.io_size : layout_.mem32_base + layout_.mem32_size;
    if (a + b.size > end) fail("pci: out of {} BAR space for {}", b.kind == BarKind::Io ? "I/O" : "memory", fn->name());
    addrs[i] = a;
    cursor = a + b.size;
  }
  next_mem_ = mem;
  next_io_ = io;
  fn->attach(&mmio_, &pio_);
  for (int i = 0; i < 6; ++i)
    if (fn->bar(i).size) fn->place_bar(i, addrs[i]);
  slots_[slot] = std::move(fn);
  return slot;
}

uint32_t PciHostBridge::config_read(uint8_t bus, uint8_t slot, uint8_t func, uint16_t offset, unsigned size) {
  std::shared_ptr<PciFunction> fn;
  if (bus == 0 && func == 0 && slot < 32) {
    std::lock_guard lock(mu_);
    fn = slots_[slot];
  }
  if (!fn) return size == 4 ? 0xffffffffu : ((1u << (size * 8)) - 1);
  return fn->config_read(offset, size);
}

void PciHostBridge::config_write(uint8_t bus, uint8_t slot, uint8_t func, uint16_t offset, unsigned size,
                                 uint32_t value) {
  std::shared_ptr<PciFunction> fn;
  if (bus == 0 && func == 0 && slot < 32) {
    std::lock_guard lock(mu_);
    fn = slots_[slot];
  }
  if (fn) fn->config_write(offset, size, value);
}

}  // namespace vireo::pci
