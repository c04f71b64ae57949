#include "virtio/virtio_devices.h"

#include <fmt/format.h>

#include <cstdio>

#include "block/backend.h"
#include "block/block.h"
#include "net/tap.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/console.h"
#include "virtio/net.h"
#include "virtio/rng.h"

namespace vireo::virtio {

std::array<uint8_t, 6> default_mac(size_t index) {
  return {0x52, 0x54, 0x00, 0x12, 0x34, static_cast<uint8_t>(0x56 + index)};
}

namespace {

std::shared_ptr<VirtioDevice> make_disk(const config::DiskConfig& d, size_t index, GuestMemory& mem) {
  // Raw images go through io_uring (engine=auto|uring); other formats, and hosts where io_uring cannot be
  // set up (auto only), through the block layer's thread pool.
  const std::string format = d.format.empty() ? block::probe_format(d.path) : d.format;
  std::unique_ptr<block::BlockBackend> backend;
  std::string engine = "threads";
  if (d.engine == "uring" && format != "raw") fail("--disk {}: engine=uring needs a raw image, not {}", d.path, format);
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
  return std::make_shared<BlockDevice>(mem, fmt::format("disk{}", index), std::move(backend), cfg);
}

ConsoleBackendSpec console_spec(const config::ConsoleConfig& c) {
  ConsoleBackendSpec s;
  switch (c.kind) {
    case config::ConsoleConfig::Kind::Stdio: s.kind = ConsoleBackendSpec::Kind::Stdio; break;
    case config::ConsoleConfig::Kind::Pty: s.kind = ConsoleBackendSpec::Kind::Pty; break;
    case config::ConsoleConfig::Kind::Unix:
      s.kind = ConsoleBackendSpec::Kind::Unix;
      s.path = c.path;
      break;
  }
  return s;
}

}  // namespace

std::vector<std::shared_ptr<VirtioDevice>> create_virtio_devices(const config::VmConfig& cfg, GuestMemory& mem) {
  std::vector<std::shared_ptr<VirtioDevice>> out;
  for (size_t i = 0; i < cfg.disks.size(); ++i) out.push_back(make_disk(cfg.disks[i], i, mem));
  for (size_t i = 0; i < cfg.nets.size(); ++i) {
    const config::NetConfig& n = cfg.nets[i];
    auto tap = std::make_unique<net::Tap>(n.tap, n.queues);
    out.push_back(std::make_shared<NetDevice>(mem, fmt::format("net{}", i), std::move(tap), n.mac.value_or(default_mac(i))));
  }
  if (cfg.console) out.push_back(std::make_shared<ConsoleDevice>(mem, "console0", console_spec(*cfg.console)));
  if (cfg.rng) out.push_back(std::make_shared<RngDevice>(mem, "rng0"));
  if (cfg.balloon) out.push_back(std::make_shared<BalloonDevice>(mem, "balloon0"));
  return out;
}

}  // namespace vireo::virtio
