#include "virtio/virtio_devices.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "block/backend.h"
#include "block/block.h"
#include "common/size.h"
#include "net/tap.h"
#include "pci/pci.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"
#include "virtio/virtio_mmio.h"
#include "virtio/virtio_pci.h"

namespace vireo::virtio {

namespace {

// "k=v,k=v" -> ordered pairs; a bare word (no '=') maps to "".
std::vector<std::pair<std::string, std::string>> split_kv(const std::string& flag, const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  if (text.empty()) fail("{}: empty value", flag);
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item.empty()) fail("{}: empty item in '{}'", flag, text);
    size_t eq = item.find('=');
    if (eq == std::string::npos) out.emplace_back(item, "");
    else out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

bool parse_bool(const std::string& flag, const std::string& key, const std::string& v) {
  if (v == "on" || v == "yes" || v == "true" || v == "1") return true;
  if (v == "off" || v == "no" || v == "false" || v == "0") return false;
  fail("{}: {} must be on or off, not '{}'", flag, key, v);
}

uint16_t parse_count(const std::string& flag, const std::string& key, const std::string& v, unsigned max) {
  if (v.empty() || v.size() > 5 || v.find_first_not_of("0123456789") != std::string::npos)
    fail("{}: {} must be a number, not '{}'", flag, key, v);
  unsigned n = static_cast<unsigned>(std::stoul(v));
  if (n < 1 || n > max) fail("{}: {} must be 1-{}, not {}", flag, key, max, n);
  return static_cast<uint16_t>(n);
}

}  // namespace

DiskOptions parse_disk(const std::string& text) {
  const std::string flag = "--disk";
  DiskOptions d;
  for (auto& [k, v] : split_kv(flag, text)) {
    if (k == "path" || k == "file") d.path = v;
    else if (k == "format") {
      if (v != "raw" && v != "qcow2") fail("{}: format must be raw or qcow2, not '{}'", flag, v);
      d.format = v;
    } else if (k == "readonly") d.read_only = parse_bool(flag, k, v);
    else if (k == "cache") {
      if (v == "none" || v == "directsync") d.direct = true;
      else if (v == "writeback" || v == "writethrough" || v == "default") d.direct = false;
      else fail("{}: cache must be none, writeback or writethrough, not '{}'", flag, v);
    } else if (k == "serial") {
      if (v.size() > 20) fail("{}: serial is at most 20 characters ('{}' has {})", flag, v, v.size());
      d.serial = v;
    } else if (k == "queues") d.queues = parse_count(flag, k, v, 64);
    else if (k == "engine") {
      if (v != "auto" && v != "threads" && v != "uring") fail("{}: engine must be auto, threads or uring, not '{}'", flag, v);
      d.engine = v;
    } else fail("{}: unknown key '{}'", flag, k);
  }
  if (d.path.empty()) fail("{}: path= is required", flag);
  return d;
}

std::array<uint8_t, 6> parse_mac(const std::string& text) {
  std::array<uint8_t, 6> m{};
  if (text.size() != 17) fail("--net: bad mac '{}' (want xx:xx:xx:xx:xx:xx)", text);
  for (int i = 0; i < 6; ++i) {
    if (i < 5 && text[3 * i + 2] != ':') fail("--net: bad mac '{}' (want xx:xx:xx:xx:xx:xx)", text);
    std::string byte = text.substr(3 * i, 2);
    if (byte.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      fail("--net: bad mac '{}' (want xx:xx:xx:xx:xx:xx)", text);
    m[i] = static_cast<uint8_t>(std::stoul(byte, nullptr, 16));
  }
  if (m[0] & 1) fail("--net: mac '{}' is a multicast address", text);
  return m;
}

NetOptions parse_net(const std::string& text) {
  const std::string flag = "--net";
  NetOptions n;
  for (auto& [k, v] : split_kv(flag, text)) {
    if (k == "tap" || k == "ifname") {
      if (v.empty() || v.size() > 15) fail("{}: tap name must be 1-15 characters, not '{}'", flag, v);
      n.tap = v;
    } else if (k == "mac") n.mac = parse_mac(v);
    else if (k == "queues") n.queues = parse_count(flag, k, v, 16);
    else fail("{}: unknown key '{}'", flag, k);
  }
  if (n.tap.empty()) fail("{}: tap= is required", flag);
  return n;
}

ConsoleBackendSpec parse_console(const std::string& text) {
  ConsoleBackendSpec s;
  if (text == "stdio") s.kind = ConsoleBackendSpec::Kind::Stdio;
  else if (text == "pty") s.kind = ConsoleBackendSpec::Kind::Pty;
  else if (text.rfind("unix=", 0) == 0 && text.size() > 5) {
    s.kind = ConsoleBackendSpec::Kind::Unix;
    s.path = text.substr(5);
  } else fail("--console: must be stdio, pty or unix=PATH, not '{}'", text);
  return s;
}

Transport parse_transport(const std::string& text) {
  if (text == "pci") return Transport::Pci;
  if (text == "mmio") return Transport::Mmio;
  fail("--transport: must be pci or mmio, not '{}'", text);
}

// ---------------------------------------------------------------- assembly

VirtioDevices::VirtioDevices(VmHooks& hooks, const VirtioOptions& opts) : hooks_(hooks), transport_(opts.transport) {
  if (transport_ == Transport::Pci && opts.any()) {
    pci::PciHostBridge::Layout l;
    l.ecam_base = kPciEcamBase;
    l.mem32_base = kPciMem32Base;
    l.mem32_size = kPciMem32Size;
    bridge_ = std::make_unique<pci::PciHostBridge>(hooks_.pio_bus(), hooks_.mmio_bus(), l);
  }
  GuestMemory& mem = hooks_.memory();
  for (size_t i = 0; i < opts.disks.size(); ++i) {
    const DiskOptions& d = opts.disks[i];
    // Raw images go through io_uring (engine=auto|uring); other formats, and hosts where io_uring cannot be
    // set up (auto only), through the block layer's thread pool.
    const std::string format = d.format.empty() ? block::probe_format(d.path) : d.format;
    std::unique_ptr<block::BlockBackend> backend;
    std::string engine = "threads";
    if (d.engine == "uring" && format != "raw")
      fail("--disk {}: engine=uring needs a raw image, not {}", d.path, format);
    if (d.engine != "threads" && format == "raw") {
      block::UringBackend::Options uo;
      uo.read_only = d.read_only;
      uo.direct = d.direct;
      try {
        backend = std::make_unique<block::UringBackend>(d.path, uo);
        engine = "uring";
      } catch (const Error& e) {
        if (d.engine == "uring") throw;
        std::fprintf(stderr, "vireo-vmm: --disk %s: io_uring unavailable (%s), using threads\n", d.path.c_str(), e.what());
      }
    }
    if (!backend) {
      block::OpenOptions o;
      o.format = format;
      o.read_only = d.read_only;
      o.direct = d.direct;
      std::shared_ptr<block::BlockImage> img = block::open_image(d.path, o);
      backend = std::make_unique<block::ThreadPoolBackend>(img, std::max<unsigned>(2, 2u * d.queues));
    }
    BlockDevice::Config cfg;
    cfg.serial = d.serial;
    cfg.num_queues = d.queues;
    cfg.details = fmt::format("path={} format={} engine={}{}{}", d.path, format, engine, d.read_only ? " ro" : "",
                              d.direct ? " cache=none" : "");
    add(std::make_shared<BlockDevice>(mem, fmt::format("disk{}", i), std::move(backend), cfg));
  }
  for (size_t i = 0; i < opts.nets.size(); ++i) {
    const NetOptions& n = opts.nets[i];
    auto tap = std::make_unique<net::Tap>(n.tap, n.queues);
    std::array<uint8_t, 6> mac = n.mac.value_or(std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0x12, 0x34, static_cast<uint8_t>(0x56 + i)});
    add(std::make_shared<NetDevice>(mem, fmt::format("net{}", i), std::move(tap), mac));
  }
  if (opts.console) add(std::make_shared<ConsoleDevice>(mem, "console0", *opts.console));
  if (opts.rng) add(std::make_shared<RngDevice>(mem, "rng0"));
  if (opts.balloon) add(std::make_shared<BalloonDevice>(mem, "balloon0"));
  for (auto& e : entries_) e.dev->start();
}

BalloonDevice* VirtioDevices::balloon() {
  for (auto& e : entries_)
    if (auto* b = dynamic_cast<BalloonDevice*>(e.dev.get())) return b;
  return nullptr;
}

void VirtioDevices::add(std::shared_ptr<VirtioDevice> dev) {
  Entry e;
  e.dev = dev;
  std::string where;
  if (transport_ == Transport::Pci) {
    auto p = std::make_shared<VirtioPciDevice>(hooks_, dev);
    uint8_t slot = bridge_->add_device(p);
    where = fmt::format("pci 00:{:02x}.0 bar0={:#x}", slot, p->bar(0).addr);
    e.transport = p;
  } else {
    uint64_t base = kVirtioMmioBase + kVirtioMmioStride * entries_.size();
    auto m = std::make_shared<VirtioMmioDevice>(hooks_, dev, base);
    hooks_.mmio_bus().insert(base, VirtioMmioDevice::kWindowSize, m);
    hooks_.append_cmdline(m->cmdline_entry());
    where = fmt::format("mmio {:#x} irq {}", base, m->irq());
    e.mmio_base = base;
    e.transport = m;
  }
  std::string details = dev->details();
  hooks_.register_device({dev->type_name(), dev->id(), details.empty() ? where : where + " " + details});
  entries_.push_back(std::move(e));
}

VirtioDevices::~VirtioDevices() {
  // Stop device threads first (no more interrupts), then unwire transports, then drop the bridge.
  for (auto& e : entries_) e.dev->set_status(0);
  for (auto& e : entries_) {
    if (e.mmio_base) hooks_.mmio_bus().remove(e.mmio_base);
    e.transport.reset();
  }
  bridge_.reset();
  entries_.clear();
}

}  // namespace vireo::virtio
