// DomainDef -> the typed VM configuration vireo-vmm runs from (config/vm_config.h), and the equivalent
// vireo-vmm command line (config::to_flags) for callers that still pass flags.
#include "common/error.h"
#include "config/flags.h"
#include "domain/domain.h"

namespace vireo::domain {

namespace {

// Values inside a key=value,key=value option must not contain the separators.
const std::string& plain(const std::string& v, const std::string& what) {
  if (v.find(',') != std::string::npos || v.find('=') != std::string::npos)
    fail("{}: '{}' contains ',' or '=', which vireo-vmm options cannot carry", what, v);
  return v;
}

}  // namespace

config::VmConfig vm_config(const DomainDef& d, const VmmWiring& w) {
  if (d.os.kernel.empty())
    fail("domain '{}': no <os><kernel>: Vireo has no firmware and boots kernels directly", d.name);
  config::VmConfig c;
  c.name = d.name;
  c.arch = cpu::parse_arch(d.os.arch, "os/type arch");
  c.boot.kernel = d.os.kernel;
  c.boot.initrd = d.os.initrd;
  c.boot.cmdline = d.os.cmdline;
  c.memory.size = d.memory_kib * 1024;
  c.memory.hugepages = d.hugepages;
  c.cpus = d.active_vcpus();
  if (d.cpu.present) {
    // check='full' is libvirt's "QEMU must provide every feature" (QEMU's enforce); otherwise features the
    // host cannot offer are dropped with a warning, as QEMU does.
    if (d.cpu.mode == "host-passthrough" || d.cpu.mode == "maximum") c.cpu = cpu::parse_cpu_spec("host-passthrough");
    else if (d.cpu.mode == "host-model") c.cpu = cpu::parse_cpu_spec("host-model");
    else
      c.cpu = cpu::parse_cpu_spec((d.cpu.model.empty() ? std::string("custom") : "custom=" + d.cpu.model) +
                                  (d.cpu.check == "full" ? ",enforce" : ""));
  }
  const bool has_serial = !d.devices.serials.empty() || !d.devices.consoles.empty();
  c.serial = parse_serial_spec(has_serial ? w.serial : "none");
  c.api_socket = w.api_socket;

  for (const Disk& k : d.devices.disks) {
    const std::string what = "disk '" + k.target_dev + "'";
    if (k.target_bus != "virtio") fail("{}: bus '{}' is not supported (vireo-vmm has virtio disks only)", what, k.target_bus);
    if (k.source.empty()) fail("{}: no source (empty drives are not supported)", what);
    config::DiskConfig disk;
    disk.path = plain(k.source, what);
    disk.format = k.driver_type;
    disk.read_only = k.readonly;
    // cache: none/directsync are O_DIRECT; writeback, writethrough and 'unsafe' run through the page cache.
    // io= and discard= have no vireo-vmm equivalent (reported as unsupported by the parser).
    disk.direct = k.cache == "none" || k.cache == "directsync";
    disk.serial = plain(k.serial, what);
    disk.validate(what);
    c.disks.push_back(disk);
  }
  for (const Interface& i : d.devices.interfaces) {
    const std::string what = "interface " + i.mac;
    if (i.model != "virtio") fail("{}: model '{}' is not supported (virtio only)", what, i.model);
    config::NetConfig n;
    if (i.type == "ethernet") n.tap = plain(i.target_dev, what);
    else if (i.type == "bridge")
      // The monitor creates the tap (named from <target dev>, else the kernel's next free vnetN: the
      // placeholder kAutoTapName) and enslaves it to the bridge before it execs vireo-vmm (bridge_plan()).
      n.tap = i.target_dev.empty() ? std::string(kAutoTapName) : plain(i.target_dev, what);
    else fail("{}: type '{}' needs a libvirt-style network service, which Vireo does not have; use type 'bridge'", what, i.type);
    n.mac = config::parse_mac(what, i.mac);
    n.validate(what);
    c.nets.push_back(n);
  }
  c.rng = !d.devices.rngs.empty();
  c.balloon = d.devices.memballoon.present && d.devices.memballoon.model == "virtio";
  c.validate();
  return c;
}

std::vector<std::string> vmm_args(const DomainDef& d, const VmmWiring& w) { return config::to_flags(vm_config(d, w)); }

std::vector<BridgePort> bridge_plan(const DomainDef& d) {
  std::vector<BridgePort> plan;
  for (size_t n = 0; n < d.devices.interfaces.size(); ++n) {
    const Interface& i = d.devices.interfaces[n];
    if (i.type == "bridge") plan.push_back({n, i.source, i.target_dev.empty() ? std::string(kAutoTapName) : i.target_dev, i.mac});
  }
  return plan;
}

}  // namespace vireo::domain
