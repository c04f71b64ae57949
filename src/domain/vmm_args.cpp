// DomainDef -> vireo-vmm command line (docs/vmm.md; the --disk/--net/--rng/--balloon spellings are the ones
// documented in docs/management.md).
#include "common/error.h"
#include "domain/domain.h"

namespace vireo::domain {

namespace {

std::string memory_arg(uint64_t kib) {
  if (kib % (1024 * 1024) == 0) return std::to_string(kib / (1024 * 1024)) + "G";
  if (kib % 1024 == 0) return std::to_string(kib / 1024) + "M";
  return std::to_string(kib) + "K";
}

// Values inside a key=value,key=value option must not contain the separators.
const std::string& plain(const std::string& v, const std::string& what) {
  if (v.find(',') != std::string::npos || v.find('=') != std::string::npos)
    fail("{}: '{}' contains ',' or '=', which vireo-vmm options cannot carry", what, v);
  return v;
}

}  // namespace

std::vector<std::string> vmm_args(const DomainDef& d, const VmmWiring& w) {
  std::vector<std::string> a;
  if (d.os.kernel.empty())
    fail("domain '{}': no <os><kernel>: Vireo has no firmware and boots kernels directly", d.name);
  a.insert(a.end(), {"--name", d.name});
  a.insert(a.end(), {"--kernel", d.os.kernel});
  if (!d.os.initrd.empty()) a.insert(a.end(), {"--initrd", d.os.initrd});
  if (!d.os.cmdline.empty()) a.insert(a.end(), {"--cmdline", d.os.cmdline});
  if (d.hugepages)
    a.insert(a.end(), {"--memory", "size=" + memory_arg(d.memory_kib) + ",hugepages=on"});
  else
    a.insert(a.end(), {"--memory", memory_arg(d.memory_kib)});
  a.insert(a.end(), {"--cpus", std::to_string(d.active_vcpus())});
  if (d.cpu.present) {
    if (d.cpu.mode == "host-passthrough" || d.cpu.mode == "maximum")
      a.insert(a.end(), {"--cpu", "host-passthrough"});
    else if (d.cpu.mode == "host-model")
      a.insert(a.end(), {"--cpu", "host-model"});
    else
      // check='full' is libvirt's "QEMU must provide every feature" (QEMU's enforce); otherwise features
      // the host cannot offer are dropped with a warning, as QEMU does.
      a.insert(a.end(), {"--cpu", (d.cpu.model.empty() ? std::string("custom") : "custom=" + d.cpu.model) +
                                      (d.cpu.check == "full" ? ",enforce" : "")});
  }
  const bool has_serial = !d.devices.serials.empty() || !d.devices.consoles.empty();
  a.insert(a.end(), {"--serial", has_serial ? w.serial : "none"});
  if (!w.api_socket.empty()) a.insert(a.end(), {"--api-socket", w.api_socket});

  for (const Disk& k : d.devices.disks) {
    const std::string what = "disk '" + k.target_dev + "'";
    if (k.target_bus != "virtio") fail("{}: bus '{}' is not supported (vireo-vmm has virtio disks only)", what, k.target_bus);
    if (k.source.empty()) fail("{}: no source (empty drives are not supported)", what);
    std::string s = "path=" + plain(k.source, what) + ",format=" + k.driver_type;
    if (k.readonly) s += ",readonly=on";
    // cache: vireo-vmm knows none/directsync (O_DIRECT) and writeback/writethrough; 'unsafe' runs as
    // writeback. io= and discard= have no vireo-vmm equivalent (reported as unsupported by the parser).
    if (k.cache == "unsafe") s += ",cache=writeback";
    else if (!k.cache.empty() && k.cache != "default") s += ",cache=" + k.cache;
    if (!k.serial.empty()) s += ",serial=" + plain(k.serial, what);
    a.insert(a.end(), {"--disk", s});
  }
  for (const Interface& i : d.devices.interfaces) {
    const std::string what = "interface " + i.mac;
    if (i.model != "virtio") fail("{}: model '{}' is not supported (virtio only)", what, i.model);
    std::string s;
    if (i.type == "ethernet") s = "tap=" + plain(i.target_dev, what);
    else if (i.type == "bridge")
      // The monitor creates the tap (named from <target dev>, else the kernel's next free vnetN: the
      // placeholder kAutoTapName) and enslaves it to the bridge before it execs vireo-vmm (bridge_plan()).
      s = "tap=" + (i.target_dev.empty() ? std::string(kAutoTapName) : plain(i.target_dev, what));
    else fail("{}: type '{}' needs a libvirt-style network service, which Vireo does not have; use type 'bridge'", what, i.type);
    s += ",mac=" + i.mac;
    a.insert(a.end(), {"--net", s});
  }
  if (!d.devices.rngs.empty()) a.push_back("--rng");
  if (d.devices.memballoon.present && d.devices.memballoon.model == "virtio") a.push_back("--balloon");
  return a;
}

std::vector<BridgePort> bridge_plan(const DomainDef& d) {
  std::vector<BridgePort> plan;
  for (size_t n = 0; n < d.devices.interfaces.size(); ++n) {
    const Interface& i = d.devices.interfaces[n];
    if (i.type == "bridge") plan.push_back({n, i.source, i.target_dev.empty() ? std::string(kAutoTapName) : i.target_dev, i.mac});
  }
  return plan;
}

}  // namespace vireo::domain
