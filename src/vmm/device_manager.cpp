#include "vmm/device_manager.h"

#include <fmt/format.h>

#include <iostream>

#include "acpi/pm.h"
#include "acpi/tables.h"
#include "common/error.h"
#include "common/layout.h"
#include "devices/boot_marker.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "pci/pci.h"
#include "virtio/balloon.h"
#include "virtio/virtio_devices.h"
#include "virtio/virtio_mmio.h"
#include "virtio/virtio_pci.h"

namespace vireo::vmm {

// The devices' own constants must agree with the platform layout.
static_assert(layout::kCom1Base == Serial16550::kCom1Base && layout::kIrqCom1 == Serial16550::kCom1Irq);
static_assert(layout::kI8042Base == I8042::kDataPort && layout::kRtcBase == CmosRtc::kBase);
static_assert(layout::kDebugExitPort == DebugExit::kPort && layout::kBootMarkerBase == BootMarker::kPort);
static_assert(layout::kAcpiPmBase == acpi::kDefaultPmBase && layout::kAcpiPmLen == acpi::kPmBlockLen &&
              layout::kIrqAcpiSci == acpi::kSciIrq);
static_assert(layout::kPciConfigBase == pci::PciHostBridge::kConfigAddressPort &&
              layout::kPciEcamSize == pci::PciHostBridge::kEcamSize);
static_assert(layout::kVirtioMmioStride == virtio::VirtioMmioDevice::kWindowSize);

DeviceManager::DeviceManager(kvm::Vm& vm, GuestMemory& mem, MachineEvents events)
    : vm_(vm), mem_(mem), events_(std::move(events)), res_(vm.max_gsi()) {}

DeviceManager::~DeviceManager() {
  std::vector<Entry> entries;
  {
    std::lock_guard lock(mu_);
    entries.swap(entries_);
  }
  // Stop workers first (no more interrupts or DMA), then unwire, then destroy, newest first.
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    if (it->dev) it->dev->stop();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    for (auto& [space, base] : it->ranges) (space == AddressSpace::Pio ? pio_ : mmio_).remove(base);
  while (!entries.empty()) entries.pop_back();
  balloon_ = nullptr;
  pci_root_.reset();
  acpi_pm_.reset();
  serial_.reset();
}

// ---------------------------------------------------------------------------------------------------------
// Creation

void DeviceManager::create_devices(const config::VmConfig& cfg, boot::KernelKind kernel) {
  transport_ = cfg.transport;
  // Platform resources that are not devices on our buses: KVM's in-kernel PIT, IOAPIC and LAPICs, and the
  // private pages KVM needs on Intel.
  res_.reserve_pio(layout::kPitBase, layout::kPitLen, "pit (in-kernel)");
  res_.reserve_irq(layout::kIrqPit, "pit (in-kernel)");
  res_.reserve_irq(layout::kIrqKeyboard, "i8042");
  res_.reserve_irq(layout::kIrqRtc, "rtc");
  res_.reserve_mmio(layout::kIoapicBase, layout::kIoapicSize, "ioapic (in-kernel)");
  res_.reserve_mmio(layout::kLapicBase, layout::kLapicSize, "lapic (in-kernel)");
  res_.reserve_mmio(layout::kKvmIdentityMap, layout::kKvmPrivateSize, "kvm tss/identity map");

  create_legacy(cfg, kernel);

  // ACPI fixed hardware (docs/acpi.md): PM1 registers, power button (the control socket's `shutdown`), S5
  // power-off (exit 0) and the reset register (exit 2).
  {
    acpi::AcpiPm::Hooks h;
    h.set_sci = [this](bool level) { vm_.set_irq_line(layout::kIrqAcpiSci, level); };
    h.poweroff = [this] { events_.exit(0, "guest powered off (ACPI S5)"); };
    h.reset = [this] { events_.exit(2, "guest reset (ACPI reset register)"); };
    acpi_pm_ = std::make_shared<acpi::AcpiPm>(std::move(h));
    res_.reserve_irq(layout::kIrqAcpiSci, "acpi0");
    const uint64_t b = layout::kAcpiPmBase;
    add_pio({"acpi", "acpi0",
             fmt::format("io 0x{:x}-0x{:x} sci {} (pm1_evt 0x{:x}, pm1_cnt 0x{:x}, pm_tmr 0x{:x}, reset 0x{:x}=0x{:02x})",
                         b, b + layout::kAcpiPmLen - 1, layout::kIrqAcpiSci, b + acpi::kPm1EvtOffset,
                         b + acpi::kPm1CntOffset, b + acpi::kPmTmrOffset, b + acpi::kResetOffset, acpi::kResetValue)},
            b, layout::kAcpiPmLen, acpi_pm_);
  }

  // The PCI root: CF8/CFC, ECAM for bus 0, BARs from the allocator's windows.
  if (cfg.transport == config::Transport::Pci) {
    res_.reserve_pio(layout::kPciConfigBase, layout::kPciConfigLen, "pci0");
    res_.reserve_mmio(layout::kPciEcamBase, layout::kPciEcamSize, "pci0");
    pci::PciHostBridge::Layout l;
    l.ecam_base = layout::kPciEcamBase;
    l.mem32_base = layout::kPciMem32Base;
    l.mem32_size = layout::kPciMem32Size;
    l.io_base = layout::kPciIoBase;
    l.io_size = layout::kPciIoSize;
    auto alloc = [this](pci::BarKind kind, uint64_t size, const std::string& owner) -> uint64_t {
      if (kind == pci::BarKind::Io) return res_.allocate_pio({layout::kPciIoBase, layout::kPciIoSize}, size, owner);
      return res_.allocate_mmio({layout::kPciMem32Base, layout::kPciMem32Size}, size, owner);
    };
    pci_root_ = std::make_shared<pci::PciHostBridge>(pio_, mmio_, l, alloc);
    add_device({"pci-host", "pci0",
                fmt::format("io 0xcf8-0xcff ecam {:#x} mem32 {:#x}-{:#x} io {:#x}-{:#x}", l.ecam_base, l.mem32_base,
                            l.mem32_base + l.mem32_size - 1, l.io_base, l.io_base + l.io_size - 1)},
               pci_root_);
  }

  for (auto& dev : virtio::create_virtio_devices(cfg, mem_)) add_virtio(std::move(dev));
}

void DeviceManager::create_legacy(const config::VmConfig& cfg, boot::KernelKind kernel) {
  // COM1. A virtio console on stdio owns stdin: the serial port then only writes to stdout.
  SerialSpec spec = cfg.serial;
  if (cfg.console && cfg.console->kind == config::ConsoleConfig::Kind::Stdio && spec.kind == SerialSpec::Kind::Stdio)
    spec.input = false;
  serial_backend_ = SerialBackend::open(spec);
  serial_ = std::make_shared<Serial16550>(
      "serial0", [this](bool level) { vm_.set_irq_line(layout::kIrqCom1, level); },
      [this](std::span<const uint8_t> b) { serial_backend_->write(b); });
  res_.reserve_irq(layout::kIrqCom1, "serial0");
  add_pio({"serial", "serial0", fmt::format("io 0x3f8 irq 4 {}", serial_backend_->describe())}, layout::kCom1Base,
          layout::kCom1Len, serial_);
  if (spec.kind == SerialSpec::Kind::Pty)
    std::cerr << "vireo-vmm: serial0: " << serial_backend_->describe().substr(4) << std::endl;

  add_pio({"i8042", "i8042", "io 0x60,0x64 (reset only)"}, layout::kI8042Base, layout::kI8042Len,
          std::make_shared<I8042>([this] { events_.exit(2, "guest reset (i8042)"); }));
  add_pio({"rtc", "rtc", "io 0x70-0x71"}, layout::kRtcBase, layout::kRtcLen, std::make_shared<CmosRtc>());
  add_pio({"debug-exit", "debug-exit", "io 0x501"}, layout::kDebugExitPort, 1,
          std::make_shared<DebugExit>([this](uint8_t code) { events_.exit(code, fmt::format("debug-exit {}", code)); }));

  auto marker = std::make_shared<BootMarker>(micros_since_process_start,
                                             [this](const std::string& l) { events_.boot_log(l); });
  // Test guests also use port 0x80 (Cloud Hypervisor's debug port, one byte). Linux uses 0x80 for I/O
  // delays, so only test guests get it.
  const bool post = kernel == boot::KernelKind::TestGuestElf64;
  add_pio({"boot-marker", "boot-marker", post ? "io 0x502 (32-bit), io 0x80 (8-bit)" : "io 0x502 (32-bit)"},
          layout::kBootMarkerBase, layout::kBootMarkerLen, marker);
  if (post) {
    res_.reserve_pio(layout::kPostPort, 1, "boot-marker");
    pio_.insert(layout::kPostPort, 1, marker);
    std::lock_guard lock(mu_);
    entries_.back().ranges.emplace_back(AddressSpace::Pio, layout::kPostPort);
  }
}

void DeviceManager::add_entry(Entry e) {
  std::lock_guard lock(mu_);
  for (const auto& x : entries_)
    if (x.info.id == e.info.id) fail("devices: id '{}' is used twice", e.info.id);
  entries_.push_back(std::move(e));
}

void DeviceManager::add_pio(const DeviceInfo& info, uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
  res_.reserve_pio(base, len, info.id);
  pio_.insert(base, len, dev);
  add_entry({info, std::move(dev), {{AddressSpace::Pio, base}}});
}

void DeviceManager::add_mmio(const DeviceInfo& info, uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
  res_.reserve_mmio(base, len, info.id);
  mmio_.insert(base, len, dev);
  add_entry({info, std::move(dev), {{AddressSpace::Mmio, base}}});
}

uint8_t DeviceManager::add_pci(DeviceInfo info, std::shared_ptr<pci::PciFunction> fn) {
  if (!pci_root_) fail("devices: {} needs the PCI root (--transport pci)", info.id);
  const uint8_t slot = pci_root_->add_device(fn);
  // Interrupt pin and line as the function set them up (config 0x3d/0x3c), for the ACPI _PRT.
  if (const uint8_t pin = fn->cfg8(0x3d); pin >= 1 && pin <= 4) pci_intx_.push_back({slot, pin, fn->cfg8(0x3c)});
  const std::string where = fmt::format("pci 00:{:02x}.0 bar0={:#x}", slot, fn->bar(0).addr);
  info.details = info.details.empty() ? where : where + " " + info.details;
  add_entry({std::move(info), std::move(fn), {}});
  return slot;
}

void DeviceManager::add_virtio(std::shared_ptr<virtio::VirtioDevice> dev) {
  DeviceInfo info{dev->type_name(), dev->id(), dev->details()};
  if (auto* b = dynamic_cast<virtio::BalloonDevice*>(dev.get())) balloon_ = b;
  if (transport_ == config::Transport::Pci) {
    auto p = std::make_shared<virtio::VirtioPciDevice>(*this, dev);
    add_pci(std::move(info), p);
  } else {
    const uint64_t base = res_.allocate_mmio({layout::kVirtioMmioBase, layout::kVirtioMmioSize},
                                             layout::kVirtioMmioStride, dev->id());
    auto m = std::make_shared<virtio::VirtioMmioDevice>(*this, dev, base);
    mmio_.insert(base, layout::kVirtioMmioStride, m);
    append_cmdline(m->cmdline_entry());
    const std::string where = fmt::format("mmio {:#x} irq {}", base, m->irq());
    info.details = info.details.empty() ? where : where + " " + info.details;
    add_entry({std::move(info), m, {{AddressSpace::Mmio, base}}});
  }
  dev->start();
}

void DeviceManager::add_device(const DeviceInfo& info, std::shared_ptr<Device> dev) {
  add_entry({info, std::move(dev), {}});
}

// ---------------------------------------------------------------------------------------------------------
// Lifecycle

void DeviceManager::pause_devices() {
  std::lock_guard lock(mu_);
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)
    if (it->dev) it->dev->pause();
}

void DeviceManager::resume_devices() {
  std::lock_guard lock(mu_);
  for (auto& e : entries_)
    if (e.dev) e.dev->resume();
}

nlohmann::json DeviceManager::save_state() {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::object();
  for (auto& e : entries_) {
    if (!e.dev || e.dev->state_version() == 0) continue;
    out[e.info.id] = {{"version", e.dev->state_version()}, {"state", e.dev->save_state()}};
  }
  return out;
}

void DeviceManager::restore_state(const nlohmann::json& devices) {
  JsonReader all(devices, "state: devices");
  std::lock_guard lock(mu_);
  for (auto& e : entries_) {
    if (!e.dev || e.dev->state_version() == 0) continue;
    if (!all.has(e.info.id)) fail("state: device {} is missing from the saved state", e.info.id);
    JsonReader d = all.object(e.info.id);
    const uint32_t v = static_cast<uint32_t>(d.u64("version", 1, 0xffffffff));
    if (v > e.dev->state_version())
      fail("state: device {}: state version {} is newer than this vireo-vmm's ({})", e.info.id, v, e.dev->state_version());
    JsonReader st = d.object("state");
    e.dev->restore_state(st, v);
    st.finish();
    d.finish();
  }
  for (auto it = devices.begin(); it != devices.end(); ++it) {
    bool known = false;
    for (const auto& e : entries_) known |= e.dev && e.dev->state_version() != 0 && e.info.id == it.key();
    if (!known) fail("state: device {} is saved but this VM has no such device", it.key());
  }
  all.finish();
}

// ---------------------------------------------------------------------------------------------------------
// Queries and I/O

std::vector<DeviceInfo> DeviceManager::infos() const {
  std::lock_guard lock(mu_);
  std::vector<DeviceInfo> out;
  for (const auto& e : entries_) out.push_back(e.info);
  return out;
}

bool DeviceManager::acpi_pci_root(acpi::PciRoot& out) const {
  if (!pci_root_) return false;
  const auto& l = pci_root_->layout();
  out = {};
  out.ecam_base = l.ecam_base;
  out.ecam_size = pci::PciHostBridge::kEcamSize;
  out.mem32_base = l.mem32_base;  // the allocator's window for every memory BAR (64-bit ones too)
  out.mem32_size = l.mem32_size;
  out.io_base = static_cast<uint32_t>(l.io_base);
  out.io_size = static_cast<uint32_t>(l.io_size);
  for (const auto& [slot, pin, line] : pci_intx_)
    out.intx.push_back({static_cast<uint8_t>(slot), static_cast<uint8_t>(pin - 1), line});
  return true;
}

void DeviceManager::attach_io(EventLoop& loop) { serial_backend_->attach(loop, *serial_); }

void DeviceManager::press_power_button() {
  if (acpi_pm_) acpi_pm_->press_power_button();
}

// ---------------------------------------------------------------------------------------------------------
// VmHooks

namespace {
kvm::IoSpace io_space(AddressSpace s) { return s == AddressSpace::Pio ? kvm::IoSpace::Pio : kvm::IoSpace::Mmio; }
}  // namespace

void DeviceManager::add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> dm, int fd) {
  vm_.add_ioeventfd(io_space(space), addr, len, dm, fd);
}
void DeviceManager::remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> dm,
                                     int fd) {
  vm_.remove_ioeventfd(io_space(space), addr, len, dm, fd);
}
uint32_t DeviceManager::allocate_irq_line() { return res_.allocate_irq("device interrupt line"); }
void DeviceManager::set_irq_line(uint32_t line, bool level) { vm_.set_irq_line(line, level); }
void DeviceManager::add_irqfd(uint32_t gsi, int fd) { vm_.add_irqfd(gsi, fd); }
void DeviceManager::remove_irqfd(uint32_t gsi, int fd) { vm_.remove_irqfd(gsi, fd); }
uint32_t DeviceManager::allocate_msi_gsi() { return res_.allocate_gsi("msi"); }
void DeviceManager::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) { vm_.set_msi_route(gsi, address, data); }
void DeviceManager::signal_msi(uint64_t address, uint32_t data) { vm_.signal_msi(address, data); }

void DeviceManager::register_device(const DeviceInfo& info) { add_entry({info, nullptr, {}}); }

void DeviceManager::append_cmdline(const std::string& text) {
  if (!cmdline_.empty() && !text.empty()) cmdline_ += ' ';
  cmdline_ += text;
}

}  // namespace vireo::vmm
