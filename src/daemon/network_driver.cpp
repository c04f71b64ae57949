// Network driver: the table, definitions, RPC methods (host plumbing in network_host.cpp).
#include "daemon/network_driver.h"

#include <net/if.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>

#include "common/error.h"
#include "network/dnsmasq.h"
#include "network/netlink.h"

namespace vireo::daemon {

using nlohmann::json;
using Lock = std::unique_lock<std::mutex>;
using network::NetworkDef;

namespace {

[[noreturn]] void no_network(const std::string& key, bool uuid) {
  throw RpcError(kNoNetwork, std::string("Network not found: no network with matching ") + (uuid ? "uuid" : "name") +
                                 " '" + key + "'");
}

NetworkDef parse(const std::string& xml) {
  try {
    return network::parse_network_xml(xml);
  } catch (const Error& e) {
    xml_error(e.what());
  }
}

}  // namespace

void NetworkDriver::register_methods(MethodTable& t) {
  using A = Access;
  t.add("net-list", A::kReadOnly, [this](const json&, Call&) {
    Lock l(mu_);
    json out = json::array();
    for (auto& [n, net] : nets_) out.push_back(summary(*net));
    return out;
  });
  t.add("net-lookup", A::kReadOnly, [this](const json& p, Call&) {
    auto n = find(param_str(p, "network"));
    Lock l(mu_);
    return summary(*n);
  });
  t.add("net-define", A::kReadWrite, [this](const json& p, Call&) { return define(param_str(p, "xml"), false); });
  t.add("net-create", A::kReadWrite, [this](const json& p, Call&) { return define(param_str(p, "xml"), true); });
  auto by_net = [this](auto fn) {
    return [this, fn](const json& p, Call&) -> json {
      auto n = find(param_str(p, "network"));
      Lock l(mu_);
      if (nets_.count(n->name) == 0 || nets_[n->name] != n) no_network(n->name, false);
      return fn(n, p);
    };
  };
  t.add("net-start", A::kReadWrite, by_net([this](const std::shared_ptr<Net>& n, const json&) {
          start(*n);
          return summary(*n);
        }));
  t.add("net-destroy", A::kReadWrite, by_net([this](const std::shared_ptr<Net>& n, const json&) {
          stop(*n);
          if (!n->persistent()) nets_.erase(n->name);
          return json::object();
        }));
  t.add("net-undefine", A::kReadWrite, by_net([this](const std::shared_ptr<Net>& n, const json&) {
          undefine(n);
          return json::object();
        }));
  t.add("net-dumpxml", A::kReadOnly, by_net([](const std::shared_ptr<Net>& n, const json& p) {
          const bool inactive = param_bool(p, "inactive") && n->config;
          return json{{"xml", network::write_network_xml(inactive ? *n->config : n->current())}};
        }));
  t.add("net-info", A::kReadOnly, by_net([this](const std::shared_ptr<Net>& n, const json&) {
          json s = summary(*n);
          s["bridge"] = n->current().bridge.name;
          return s;
        }));
  t.add("net-autostart", A::kReadWrite, by_net([this](const std::shared_ptr<Net>& n, const json& p) {
          set_autostart(*n, param_bool(p, "enable"));
          return json::object();
        }));
  t.add("net-dhcp-leases", A::kReadOnly, by_net([this](const std::shared_ptr<Net>& n, const json& p) {
          return leases(*n, param_str_or(p, "mac", ""));
        }));
  t.add("net-update", A::kReadWrite,
        by_net([this](const std::shared_ptr<Net>& n, const json& p) { return update(*n, p); }));
}

json NetworkDriver::summary(const Net& n) {
  return json{{"name", n.name}, {"uuid", n.uuid}, {"active", n.active}, {"persistent", n.persistent()}, {"autostart", n.autostart}};
}

std::shared_ptr<Net> NetworkDriver::find(const std::string& key) {
  Lock l(mu_);
  auto it = nets_.find(key);
  if (it != nets_.end()) return it->second;
  const std::string uuid = xml::normalize_uuid(key);
  for (auto& [n, net] : nets_)
    if (!uuid.empty() && net->uuid == uuid) return net;
  no_network(key, !uuid.empty());
}

void NetworkDriver::load() {
  mkdirs(config_dir(), 0700);
  mkdirs(autostart_dir(), 0700);
  mkdirs(run_dir(), 0700);
  mkdirs(dnsmasq_dir(), 0700);
  Lock l(mu_);
  for (const auto& name : list_dir(config_dir(), ".xml")) {
    const std::string path = config_dir() + "/" + name + ".xml";
    try {
      NetworkDef def = network::parse_network_xml(read_file(path), false);
      if (def.name != name) fail("{}: holds network '{}', expected '{}'", path, def.name, name);
      auto n = std::make_shared<Net>();
      n->name = name;
      n->uuid = def.uuid;
      n->config = std::move(def);
      struct stat st{};
      n->autostart = ::lstat((autostart_dir() + "/" + name + ".xml").c_str(), &st) == 0;
      nets_[name] = n;
    } catch (const std::exception& e) {
      log(std::string("skipping network definition: ") + e.what());
    }
  }
  // Networks that were active when the previous vireod ended: still up if their bridge is.
  for (const auto& name : list_dir(run_dir(), ".xml")) {
    const std::string path = run_dir() + "/" + name + ".xml";
    try {
      NetworkDef def = network::parse_network_xml(read_file(path), false);
      auto& n = nets_[name];
      if (!n) {
        n = std::make_shared<Net>();
        n->name = name;
        n->uuid = def.uuid;
      }
      n->live = std::move(def);
      n->active = true;
      refresh_after_restart(*n);
    } catch (const std::exception& e) {
      log("network '" + name + "': " + e.what());
      auto it = nets_.find(name);
      if (it != nets_.end()) {
        it->second->active = false;
        it->second->live.reset();
        if (!it->second->persistent()) nets_.erase(it);
      }
      ::unlink(path.c_str());
    }
  }
}

void NetworkDriver::autostart() {
  Lock l(mu_);
  for (auto& [name, n] : nets_) {
    if (!n->autostart || n->active) continue;
    try {
      start(*n);
      log("autostarted network '" + name + "'");
    } catch (const std::exception& e) {
      log("autostart of network '" + name + "' failed: " + e.what());
    }
  }
}

void NetworkDriver::define_default_if_missing() {
  Lock l(mu_);
  if (nets_.count("default")) return;
  l.unlock();
  define(
      "<network>\n  <name>default</name>\n  <forward mode='nat'/>\n  <bridge name='virbr0' stp='on' delay='0'/>\n"
      "  <ip address='192.168.122.1' netmask='255.255.255.0'>\n    <dhcp>\n"
      "      <range start='192.168.122.2' end='192.168.122.254'/>\n    </dhcp>\n  </ip>\n</network>\n",
      false);
  auto n = find("default");
  Lock l2(mu_);
  set_autostart(*n, true);
}

void NetworkDriver::fill_defaults(NetworkDef& def, const std::string& self) {
  if (def.managed_bridge()) {
    if (def.bridge.name.empty() || def.bridge.name.find("%d") != std::string::npos) {
      const std::string tmpl = def.bridge.name.empty() ? "virbr%d" : def.bridge.name;
      for (int i = 0; i < 256; ++i) {
        std::string cand = tmpl.substr(0, tmpl.find("%d")) + std::to_string(i) + tmpl.substr(tmpl.find("%d") + 2);
        bool used = ::if_nametoindex(cand.c_str()) != 0;
        for (auto& [n, o] : nets_)
          if (n != self && o->current().bridge.name == cand) used = true;
        if (!used) {
          def.bridge.name = cand;
          break;
        }
      }
      if (def.bridge.name.find("%d") != std::string::npos || def.bridge.name.empty())
        failed("no free bridge name for template '" + tmpl + "'");
    }
    if (def.mac.empty()) def.mac = xml::random_mac();
  }
}

void NetworkDriver::check_clashes(const NetworkDef& def) {
  for (auto& [n, o] : nets_) {
    if (n == def.name) continue;
    const NetworkDef& od = o->current();
    if (o->uuid == def.uuid) failed("network '" + n + "' is already defined with uuid " + def.uuid);
    if (def.managed_bridge() && !def.bridge.name.empty() && od.bridge.name == def.bridge.name && od.managed_bridge())
      failed("bridge name '" + def.bridge.name + "' already in use by network '" + n + "'");
  }
}

json NetworkDriver::define(const std::string& xml, bool transient) {
  NetworkDef def = parse(xml);
  Lock l(mu_);
  auto it = nets_.find(def.name);
  std::shared_ptr<Net> n = it == nets_.end() ? nullptr : it->second;
  if (n) {
    if (n->uuid != def.uuid && xml.find("<uuid") != std::string::npos)
      failed("network '" + def.name + "' already exists with uuid " + n->uuid);
    def.uuid = n->uuid;  // redefining by name keeps the uuid
    if (transient) failed("network '" + def.name + "' already exists");
    // A redefinition keeps the bridge and MAC that were assigned, unless it names new ones.
    if (def.bridge.name.empty()) def.bridge.name = n->current().bridge.name;
    if (def.mac.empty()) def.mac = n->current().mac;
  }
  check_clashes(def);
  fill_defaults(def, def.name);
  check_clashes(def);
  if (!n) {
    n = std::make_shared<Net>();
    n->name = def.name;
    n->uuid = def.uuid;
  }
  if (transient) {
    n->live = def;
    start(*n);  // throws before the network is listed
    nets_[def.name] = n;
    return summary(*n);
  }
  atomic_write(config_dir() + "/" + def.name + ".xml", network::write_network_xml(def));
  n->config = def;
  nets_[def.name] = n;
  return summary(*n);
}

void NetworkDriver::undefine(const std::shared_ptr<Net>& n) {
  if (!n->persistent()) invalid("network is not persistent");
  remove_if_exists(config_dir() + "/" + n->name + ".xml");
  remove_if_exists(autostart_dir() + "/" + n->name + ".xml");
  n->autostart = false;
  if (!n->active) {
    nets_.erase(n->name);
  } else {
    if (!n->live) n->live = n->config;
    n->config.reset();
  }
}

void NetworkDriver::set_autostart(Net& n, bool on) {
  if (!n.persistent()) invalid("cannot set autostart for transient network");
  set_autostart_link(autostart_dir(), n.name, "../" + n.name + ".xml", on);
  n.autostart = on;
}

void NetworkDriver::save_live(const Net& n) {
  atomic_write(run_dir() + "/" + n.name + ".xml", network::write_network_xml(*n.live));
}

void NetworkDriver::start(Net& n) {
  if (n.active) invalid("network is already active");
  NetworkDef def = n.live ? *n.live : *n.config;
  // Another active network on the same bridge or subnet.
  for (auto& [name, o] : nets_) {
    if (name == n.name || !o->active) continue;
    const NetworkDef& od = o->current();
    if (def.managed_bridge() && od.bridge.name == def.bridge.name)
      failed("bridge '" + def.bridge.name + "' is in use by active network '" + name + "'");
    for (const auto& a : def.ips)
      for (const auto& b : od.ips)
        if (network::overlaps(a, b))
          failed("network " + network::cidr(a) + " overlaps network '" + name + "' (" + network::cidr(b) + ")");
  }
  try {
    plumb(def);
  } catch (const RpcError&) {
    throw;
  } catch (const Error& e) {
    failed(e.what());
  }
  n.live = def;
  n.active = true;
  save_live(n);
}

void NetworkDriver::stop(Net& n) {
  if (!n.active) invalid("network is not active");
  unplumb(*n.live);
  ::unlink((run_dir() + "/" + n.name + ".xml").c_str());
  n.active = false;
  if (n.persistent()) n.live.reset();
}

NetworkPort NetworkDriver::port_for(const std::string& name, const std::string& portgroup, const network::Vlan& iface_vlan,
                                    const network::VirtualPort& iface_vport) {
  auto n = find(name);
  Lock l(mu_);
  if (!n->active) invalid("network '" + name + "' is not active");
  const NetworkDef& d = *n->live;
  NetworkPort p;
  p.network = name;
  if (d.managed_bridge()) p.bridge = d.bridge.name;
  else if (d.forward.mode == "bridge") p.bridge = d.bridge.name.empty() ? d.forward.dev : d.bridge.name;
  else throw RpcError(kUnsupported, "unsupported configuration: network '" + name + "' has forward mode '" + d.forward.mode +
                                        "', which Vireo does not support for guest interfaces (use nat, route, open, isolated or bridge)");
  const network::PortGroup* pg = d.portgroup(portgroup);
  if (!portgroup.empty() && !pg) failed("network '" + name + "' has no portgroup '" + portgroup + "'");
  const network::VirtualPort* vp = iface_vport.present ? &iface_vport
                                   : (pg && pg->virtualport.present) ? &pg->virtualport
                                   : d.virtualport.present ? &d.virtualport : nullptr;
  p.ovs = d.ovs() || (vp && vp->type == "openvswitch");
  if (vp) p.interfaceid = vp->param("interfaceid");
  p.vlan = iface_vlan.present ? iface_vlan : (pg && pg->vlan.present) ? pg->vlan : d.vlan;
  p.mtu = d.mtu;
  return p;
}

json NetworkDriver::leases(Net& n, const std::string& mac) {
  if (!n.active) invalid("network '" + n.name + "' is not active");
  json out = json::array();
  const NetworkDef& d = *n.live;
  for (const auto& l : network::read_leases(network::DnsmasqFiles::in(dnsmasq_dir(), n.name).leases)) {
    if (!mac.empty() && xml::lower(mac) != xml::lower(l.mac)) continue;
    unsigned prefix = l.v6 ? 64 : 24;
    for (const auto& ip : d.ips)
      if (ip.is_v6() == l.v6) {
        auto a = network::parse_addr(ip.address, ip.is_v6()), b = network::parse_addr(l.ip, l.v6);
        if (a && b && network::same_subnet(*a, *b, ip.prefix_len())) prefix = ip.prefix_len();
      }
    out.push_back(json{{"expiry", l.expiry}, {"mac", l.mac}, {"type", l.v6 ? "ipv6" : "ipv4"}, {"ip", l.ip},
                       {"prefix", prefix}, {"hostname", l.hostname}, {"client_id", l.client_id}});
  }
  return out;
}

}  // namespace vireo::daemon
