#include "daemon/interface_driver.h"

#include <net/if.h>

#include "common/error.h"
#include "network/netlink.h"
#include "xml/xml_util.h"

namespace vireo::daemon {

using nlohmann::json;
using Lock = std::unique_lock<std::mutex>;
using pugi::xml_node;
using namespace vireo::xml;

bool network_addr_ok(const std::string& a);

namespace {

IfaceDef parse_node(xml_node n, bool top) {
  IfaceDef d;
  d.type = attr(n, "type");
  d.name = attr(n, "name");
  if (top) {
    if (d.type.empty()) fail("interface: missing type attribute");
    check_enum(d.type, {"ethernet", "bridge", "bond", "vlan"}, "interface type");
  } else if (d.type.empty()) {
    d.type = "ethernet";
  }
  if (d.name.empty() && !(top && d.type == "vlan")) fail("interface: missing name attribute");
  if (d.name.size() >= 16) fail("interface name '{}' is longer than 15 characters", d.name);
  d.start_mode = attr(n.child("start"), "mode");
  if (!d.start_mode.empty()) check_enum(d.start_mode, {"onboot", "none", "hotplug"}, "interface start mode");
  if (xml_node m = n.child("mac")) {
    d.mac = lower(attr(m, "address"));
    if (!valid_mac(d.mac)) fail("interface {}: invalid mac address '{}'", d.name, attr(m, "address"));
  }
  if (xml_node m = n.child("mtu")) d.mtu = parse_uint(attr(m, "size"), "interface mtu size", 68, 65535);
  for (xml_node p : n.children("protocol")) {
    if (attr(p, "family") != "ipv4") continue;
    d.dhcp = static_cast<bool>(p.child("dhcp"));
    for (xml_node ip : p.children("ip")) {
      const std::string a = attr(ip, "address");
      if (!network_addr_ok(a)) fail("interface {}: invalid ipv4 address '{}'", d.name, a);
      d.ipv4.emplace_back(a, attr(ip, "prefix").empty() ? 24 : parse_uint(attr(ip, "prefix"), "ip prefix", 0, 32));
    }
    d.gateway = attr(p.child("route"), "gateway");
  }
  if (d.type == "bridge") {
    xml_node b = n.child("bridge");
    d.stp = attr(b, "stp");
    d.delay = attr(b, "delay");
    for (xml_node m : b.children("interface")) d.members.push_back(parse_node(m, false));
  } else if (d.type == "bond") {
    xml_node b = n.child("bond");
    d.bond_mode = attr(b, "mode");
    if (d.bond_mode.empty()) d.bond_mode = "balance-rr";
    check_enum(d.bond_mode, {"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"},
               "bond mode");
    if (xml_node mi = b.child("miimon")) d.miimon = parse_uint(attr(mi, "freq"), "bond miimon freq", 0, 100000);
    for (xml_node m : b.children("interface")) d.members.push_back(parse_node(m, false));
    if (d.members.empty()) fail("bond {}: needs at least one <interface>", d.name);
  } else if (d.type == "vlan") {
    xml_node v = n.child("vlan");
    d.vlan_tag = parse_uint(attr(v, "tag"), "vlan tag", 0, 4095);
    d.vlan_parent = attr(v.child("interface"), "name");
    if (d.vlan_parent.empty()) fail("vlan interface: missing <vlan><interface name='...'/>");
    if (d.name.empty()) d.name = d.vlan_parent + "." + std::to_string(d.vlan_tag);
  }
  return d;
}

void write_node(xml_node parent, const IfaceDef& d, bool top) {
  xml_node n = parent.append_child("interface");
  n.append_attribute("type") = d.type.c_str();
  n.append_attribute("name") = d.name.c_str();
  if (top && !d.start_mode.empty()) n.append_child("start").append_attribute("mode") = d.start_mode.c_str();
  if (d.mtu) n.append_child("mtu").append_attribute("size") = d.mtu;
  if (!d.ipv4.empty() || d.dhcp) {
    xml_node p = n.append_child("protocol");
    p.append_attribute("family") = "ipv4";
    if (d.dhcp) p.append_child("dhcp");
    for (const auto& [a, pfx] : d.ipv4) {
      xml_node ip = p.append_child("ip");
      ip.append_attribute("address") = a.c_str();
      ip.append_attribute("prefix") = pfx;
    }
    if (!d.gateway.empty()) p.append_child("route").append_attribute("gateway") = d.gateway.c_str();
  }
  if (!d.mac.empty()) n.append_child("mac").append_attribute("address") = d.mac.c_str();
  if (d.type == "bridge") {
    xml_node b = n.append_child("bridge");
    set_attr(b, "stp", d.stp);
    set_attr(b, "delay", d.delay);
    for (const auto& m : d.members) write_node(b, m, false);
  } else if (d.type == "bond") {
    xml_node b = n.append_child("bond");
    b.append_attribute("mode") = d.bond_mode.c_str();
    if (d.miimon) b.append_child("miimon").append_attribute("freq") = d.miimon;
    for (const auto& m : d.members) write_node(b, m, false);
  } else if (d.type == "vlan") {
    xml_node v = n.append_child("vlan");
    v.append_attribute("tag") = d.vlan_tag;
    v.append_child("interface").append_attribute("name") = d.vlan_parent.c_str();
  }
}

[[noreturn]] void no_iface(const std::string& name) {
  throw RpcError(kNoInterface, "Interface not found: couldn't find interface named '" + name + "'");
}

}  // namespace

IfaceDef parse_iface_xml(const std::string& text) {
  pugi::xml_document doc;
  return parse_node(parse_root(doc, text, "interface"), true);
}

std::string write_iface_xml(const IfaceDef& d) {
  pugi::xml_document doc;
  write_node(doc, d, true);
  return write(doc);
}

void InterfaceDriver::load() {
  mkdirs(dir(), 0700);
  Lock l(mu_);
  for (const auto& name : list_dir(dir(), ".xml")) {
    try {
      defs_[name] = parse_iface_xml(read_file(dir() + "/" + name + ".xml"));
    } catch (const std::exception& e) {
      log(std::string("skipping interface definition: ") + e.what());
    }
  }
}

IfaceDef InterfaceDriver::live_def(const std::string& name) {
  auto links = network::list_links();
  const network::LinkInfo* me = nullptr;
  for (auto& l : links)
    if (l.name == name) me = &l;
  if (!me) no_iface(name);
  IfaceDef d;
  d.name = name;
  d.mac = me->mac;
  d.mtu = me->mtu;
  d.type = me->kind == "bridge" ? "bridge" : me->kind == "bond" ? "bond" : me->kind == "vlan" ? "vlan" : "ethernet";
  for (const auto& a : network::list_addresses())
    if (a.index == me->index && !a.v6) d.ipv4.emplace_back(a.address, a.prefix);
  for (auto& l : links) {
    if (l.master != me->index) continue;
    IfaceDef m;
    m.type = l.kind == "bridge" ? "bridge" : l.kind == "bond" ? "bond" : l.kind == "vlan" ? "vlan" : "ethernet";
    m.name = l.name;
    m.mac = l.mac;
    d.members.push_back(m);
  }
  if (d.type == "vlan") {
    d.vlan_tag = me->vlan_id;
    for (auto& l : links)
      if (l.index == me->link) d.vlan_parent = l.name;
  }
  if (d.type == "bond") d.bond_mode = "balance-rr";
  return d;
}

void InterfaceDriver::start(const IfaceDef& d) {
  const bool exists = ::if_nametoindex(d.name.c_str()) != 0;
  if (d.type == "ethernet" && !exists) failed("interface '" + d.name + "' does not exist on the host");
  bool made = false;
  try {
    if (!exists) {
      if (d.type == "bridge") {
        network::BridgeOptions o;
        o.stp = d.stp == "on";
        o.delay_s = d.delay.empty() ? 0 : static_cast<unsigned>(std::stod(d.delay));
        o.mac = d.mac;
        network::create_bridge(d.name, o);
      } else if (d.type == "bond") {
        network::create_bond(d.name, d.bond_mode, d.miimon);
      } else if (d.type == "vlan") {
        network::create_vlan(d.name, d.vlan_parent, d.vlan_tag);
      }
      made = true;
    }
    for (const auto& m : d.members) {
      if (::if_nametoindex(m.name.c_str()) == 0) failed("member interface '" + m.name + "' does not exist on the host");
      if (d.type == "bond") network::set_up(m.name, false);  // the kernel enslaves only down links to a bond
      network::set_master(m.name, d.name);
      network::set_up(m.name, true);
    }
    if (d.mtu) network::set_mtu(d.name, d.mtu);
    network::set_up(d.name, true);
    for (const auto& [a, p] : d.ipv4) network::add_address(d.name, a, p, false);
    if (!d.gateway.empty()) network::add_route("0.0.0.0", 0, d.gateway, false, 0);
  } catch (const RpcError&) {
    if (made) network::delete_link(d.name);
    throw;
  } catch (const Error& e) {
    if (made) network::delete_link(d.name);
    failed(e.what());
  }
}

void InterfaceDriver::stop(const IfaceDef& d) {
  if (::if_nametoindex(d.name.c_str()) == 0) invalid("interface is not running");
  try {
    for (const auto& m : d.members)
      if (::if_nametoindex(m.name.c_str()) != 0) network::set_master(m.name, "");
    if (d.type == "ethernet") network::set_up(d.name, false);
    else network::delete_link(d.name);
  } catch (const Error& e) {
    failed(e.what());
  }
}

void InterfaceDriver::register_methods(MethodTable& t) {
  using A = Access;
  t.add("iface-list", A::kReadOnly, [this](const json&, Call&) {
    Lock l(mu_);
    json out = json::array();
    std::map<std::string, bool> seen;
    for (const auto& li : network::list_links()) {
      if (li.name == "lo") continue;
      seen[li.name] = true;
      out.push_back({{"name", li.name}, {"active", li.up}, {"mac", li.mac}, {"defined", defs_.count(li.name) > 0}});
    }
    for (const auto& [n, d] : defs_)
      if (!seen.count(n)) out.push_back({{"name", n}, {"active", false}, {"mac", d.mac}, {"defined", true}});
    return out;
  });
  t.add("iface-dumpxml", A::kReadOnly, [this](const json& p, Call&) {
    const std::string name = param_str(p, "interface");
    Lock l(mu_);
    auto it = defs_.find(name);
    const bool live = ::if_nametoindex(name.c_str()) != 0;
    if (it != defs_.end() && (param_bool(p, "inactive") || !live)) return json{{"xml", write_iface_xml(it->second)}};
    return json{{"xml", write_iface_xml(live_def(name))}};
  });
  t.add("iface-define", A::kReadWrite, [this](const json& p, Call&) {
    IfaceDef d;
    try {
      d = parse_iface_xml(param_str(p, "xml"));
    } catch (const Error& e) {
      xml_error(e.what());
    }
    Lock l(mu_);
    atomic_write(dir() + "/" + d.name + ".xml", write_iface_xml(d));
    defs_[d.name] = d;
    return json{{"name", d.name}, {"mac", d.mac}};
  });
  auto defined = [this](const json& p) -> IfaceDef& {
    const std::string name = param_str(p, "interface");
    auto it = defs_.find(name);
    if (it == defs_.end()) no_iface(name);
    return it->second;
  };
  t.add("iface-undefine", A::kReadWrite, [this, defined](const json& p, Call&) {
    Lock l(mu_);
    IfaceDef& d = defined(p);
    remove_if_exists(dir() + "/" + d.name + ".xml");
    defs_.erase(d.name);
    return json::object();
  });
  t.add("iface-start", A::kReadWrite, [this, defined](const json& p, Call&) {
    Lock l(mu_);
    IfaceDef& d = defined(p);
    if (d.type != "ethernet" && ::if_nametoindex(d.name.c_str()) != 0) invalid("interface is already running");
    start(d);
    return json::object();
  });
  t.add("iface-destroy", A::kReadWrite, [this](const json& p, Call&) {
    const std::string name = param_str(p, "interface");
    Lock l(mu_);
    auto it = defs_.find(name);
    stop(it != defs_.end() ? it->second : live_def(name));
    return json::object();
  });
  // iface-bridge IFACE BRIDGE: a new bridge holding IFACE, with IFACE's addresses moved to it (the
  // "uplink into a bridge" step as one command); iface-unbridge reverses it.
  t.add("iface-bridge", A::kReadWrite, [this](const json& p, Call&) {
    const std::string nic = param_str(p, "interface"), br = param_str(p, "bridge");
    Lock l(mu_);
    IfaceDef in = live_def(nic);
    if (in.type == "bridge") invalid("interface '" + nic + "' is already a bridge");
    if (::if_nametoindex(br.c_str()) != 0) invalid("Bridge device " + br + " already exists");
    IfaceDef b;
    b.type = "bridge";
    b.name = br;
    b.start_mode = "onboot";
    b.stp = param_bool(p, "no_stp") ? "off" : "on";
    b.delay = std::to_string(param_u64(p, "delay", 0));
    b.ipv4 = in.ipv4;
    IfaceDef m;
    m.type = in.type;
    m.name = nic;
    m.mac = in.mac;
    b.members.push_back(m);
    b.mac = in.mac;  // the bridge keeps the uplink's MAC, so DHCP reservations and neighbours still match
    atomic_write(dir() + "/" + br + ".xml", write_iface_xml(b));
    defs_[br] = b;
    if (!param_bool(p, "no_start")) {
      // Addresses move from the NIC to the bridge.
      try {
        for (const auto& [a, pfx] : in.ipv4) network::del_address(nic, a, pfx, false);
      } catch (const Error& e) {
        failed(e.what());
      }
      start(b);
    }
    return json{{"started", !param_bool(p, "no_start")}};
  });
  t.add("iface-unbridge", A::kReadWrite, [this](const json& p, Call&) {
    const std::string br = param_str(p, "bridge");
    Lock l(mu_);
    IfaceDef b = live_def(br);
    if (b.type != "bridge") invalid("interface '" + br + "' is not a bridge");
    if (b.members.size() != 1) invalid("Bridge " + br + " has " + std::to_string(b.members.size()) + " interfaces attached; expected exactly one");
    const std::string nic = b.members[0].name;
    stop(b);
    remove_if_exists(dir() + "/" + br + ".xml");
    defs_.erase(br);
    IfaceDef n;
    n.type = "ethernet";
    n.name = nic;
    n.ipv4 = b.ipv4;
    start(n);  // the addresses come back to the NIC
    return json{{"interface", nic}};
  });
}

bool network_addr_ok(const std::string& a) {
  unsigned x[4];
  char tail;
  return std::sscanf(a.c_str(), "%u.%u.%u.%u%c", &x[0], &x[1], &x[2], &x[3], &tail) == 4 && x[0] < 256 && x[1] < 256 &&
         x[2] < 256 && x[3] < 256;
}

}  // namespace vireo::daemon
