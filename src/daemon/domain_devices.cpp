#include "daemon/domain_devices.h"

#include <sstream>

#include "common/error.h"
#include "daemon/network_driver.h"
#include "daemon/storage_driver.h"
#include "network/network.h"

namespace vireo::daemon {

namespace {

void add_vlan(PortSpec& s, const network::Vlan& v) {
  if (!v.present) return;
  s.trunk = v.trunk == "yes" || v.tags.size() > 1;
  for (const auto& t : v.tags) {
    s.vlans.push_back(t.id);
    if (!t.native_mode.empty()) {
      s.native_vlan = t.id;
      s.native_mode = t.native_mode;
    }
  }
}

}  // namespace

StartPlan resolve_devices(Host& host, const domain::DomainDef& def) {
  StartPlan plan;
  plan.def = def;
  for (size_t n = 0; n < plan.def.devices.interfaces.size(); ++n) {
    domain::Interface& i = plan.def.devices.interfaces[n];
    const std::string what = "interface " + i.mac;
    network::Vlan vlan;
    network::VirtualPort vport;
    try {
      vlan = network::parse_vlan_xml(i.vlan_xml, what + " vlan");
      vport = network::parse_virtualport_xml(i.virtualport_xml, what + " virtualport");
    } catch (const Error& e) {
      xml_error(e.what());
    }
    PortSpec s;
    if (i.type == "network") {
      if (!host.networks) failed("no network driver");
      NetworkPort p = host.networks->port_for(i.source, i.portgroup, vlan, vport);
      i.type = "bridge";  // the VMM sees a tap on that bridge
      i.source = p.bridge;
      s.ovs = p.ovs;
      s.interfaceid = p.interfaceid;
      s.mtu = p.mtu;
      vlan = p.vlan;
    } else if (i.type == "bridge") {
      s.ovs = vport.present && vport.type == "openvswitch";
      s.interfaceid = vport.param("interfaceid");
    } else {
      continue;
    }
    s.net_index = n;
    s.bridge = i.source;
    s.tap = i.target_dev.empty() ? std::string(domain::kAutoTapName) : i.target_dev;
    s.mac = i.mac;
    if (s.ovs && s.interfaceid.empty()) s.interfaceid = xml::generate_uuid();
    add_vlan(s, vlan);
    plan.ports.push_back(std::move(s));
  }
  for (auto& d : plan.def.devices.disks) {
    if (d.type != "volume") continue;
    if (!host.storage) failed("no storage driver");
    VolumeTarget t = host.storage->volume_target(d.source_pool, d.source_volume);
    d.type = t.block ? "block" : "file";
    d.source = t.path;
    // libvirt takes the format from the volume when the disk does not say.
    if (t.format == "qcow2" || t.format == "raw") d.driver_type = t.format;
  }
  return plan;
}

void release_devices(Host&, const StartPlan&) {}
void release_devices_of(Host&, const domain::DomainDef&) {}

namespace {
std::string join_u(const std::vector<unsigned>& v) {
  std::string o;
  for (unsigned x : v) o += (o.empty() ? "" : ",") + std::to_string(x);
  return o;
}
}  // namespace

std::string format_port_plan(const std::vector<PortSpec>& ports) {
  std::string text;
  for (const auto& p : ports) {
    text += std::to_string(p.net_index) + " " + p.bridge + " " + p.tap + " " + p.mac;
    if (p.ovs) text += " ovs=1";
    if (!p.interfaceid.empty()) text += " iface-id=" + p.interfaceid;
    if (!p.vlans.empty()) text += (p.trunk ? " trunk=" : " vlan=") + join_u(p.vlans);
    if (p.native_vlan) text += " native=" + std::to_string(p.native_vlan);
    if (!p.native_mode.empty()) text += " native-mode=" + p.native_mode;
    if (p.mtu) text += " mtu=" + std::to_string(p.mtu);
    text += "\n";
  }
  return text;
}

std::vector<PortSpec> parse_port_plan(const std::string& text) {
  std::vector<PortSpec> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    std::istringstream f(line);
    PortSpec p;
    if (!(f >> p.net_index >> p.bridge >> p.tap >> p.mac)) fail("bad port line '{}'", line);
    for (std::string kv; f >> kv;) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos) fail("bad port line '{}'", line);
      const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
      try {
        if (k == "ovs") p.ovs = v == "1";
        else if (k == "iface-id") p.interfaceid = v;
        else if (k == "vlan" || k == "trunk") {
          p.trunk = k == "trunk";
          std::istringstream vs(v);
          for (std::string t; std::getline(vs, t, ',');) p.vlans.push_back(static_cast<unsigned>(std::stoul(t)));
        } else if (k == "native") p.native_vlan = static_cast<unsigned>(std::stoul(v));
        else if (k == "native-mode") p.native_mode = v;
        else if (k == "mtu") p.mtu = static_cast<unsigned>(std::stoul(v));
        else fail("bad port line '{}': unknown key '{}'", line, k);
      } catch (const std::logic_error&) {
        fail("bad port line '{}'", line);
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace vireo::daemon
