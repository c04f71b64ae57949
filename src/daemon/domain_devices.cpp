#include "daemon/domain_devices.h"

#include <sstream>

#include "common/error.h"

namespace vireo::daemon {


StartPlan resolve_devices(Host& host, const domain::DomainDef& def) {
  (void)host;
  StartPlan plan;
  plan.def = def;
  for (const auto& p : domain::bridge_plan(plan.def)) {
    PortSpec s;
    s.net_index = p.net_index;
    s.bridge = p.bridge;
    s.tap = p.tap;
    s.mac = p.mac;
    plan.ports.push_back(std::move(s));
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
