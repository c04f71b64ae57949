// <network> parse (validation, defaults) and writer (libvirt's element and attribute order).
#include <arpa/inet.h>

#include <cctype>
#include <cstring>

#include "common/error.h"
#include "network/network.h"

namespace vireo::network {

using pugi::xml_node;
using namespace vireo::xml;

namespace {

Lease parse_lease(xml_node n, const std::string& what) {
  Lease l{attr(n, "expiry"), attr(n, "unit")};
  if (!l.expiry.empty()) parse_ull(l.expiry, what + " lease expiry");
  if (!l.unit.empty()) check_enum(l.unit, {"seconds", "minutes", "hours"}, what + " lease unit");
  return l;
}

Vlan parse_vlan(xml_node n, const std::string& what) {
  Vlan v;
  if (!n) return v;
  v.present = true;
  v.trunk = attr(n, "trunk");
  if (!v.trunk.empty()) check_enum(v.trunk, {"yes", "no"}, what + " trunk");
  for (xml_node t : n.children("tag")) {
    VlanTag tag;
    tag.id = parse_uint(attr(t, "id"), what + " tag id", 0, 4095);
    tag.native_mode = attr(t, "nativeMode");
    if (!tag.native_mode.empty()) check_enum(tag.native_mode, {"tagged", "untagged"}, what + " tag nativeMode");
    v.tags.push_back(tag);
  }
  if (v.tags.empty()) fail("{}: missing tag id - each <vlan> must have at least one <tag id='N'/>", what);
  if (v.tags.size() > 1 && v.trunk == "no") fail("{}: multiple tags with trunk='no'", what);
  return v;
}

VirtualPort parse_virtualport(xml_node n, const std::string& what) {
  VirtualPort vp;
  if (!n) return vp;
  vp.present = true;
  vp.type = attr(n, "type");
  if (!vp.type.empty()) check_enum(vp.type, {"openvswitch", "802.1Qbh", "802.1Qbg", "midonet"}, what + " type");
  if (xml_node p = n.child("parameters")) {
    for (auto a : p.attributes()) {
      const std::string k = a.name(), val = a.value();
      if (k == "interfaceid" && normalize_uuid(val).empty()) fail("{}: invalid interfaceid '{}'", what, val);
      vp.params.emplace_back(k, k == "interfaceid" ? normalize_uuid(val) : val);
    }
  }
  return vp;
}

void write_vlan(xml_node parent, const Vlan& v) {
  if (!v.present) return;
  xml_node n = parent.append_child("vlan");
  set_attr(n, "trunk", v.trunk);
  for (const auto& t : v.tags) {
    xml_node e = n.append_child("tag");
    e.append_attribute("id") = t.id;
    set_attr(e, "nativeMode", t.native_mode);
  }
}

void write_virtualport(xml_node parent, const VirtualPort& vp) {
  if (!vp.present) return;
  xml_node n = parent.append_child("virtualport");
  set_attr(n, "type", vp.type);
  if (!vp.params.empty()) {
    xml_node p = n.append_child("parameters");
    for (const auto& [k, v] : vp.params) p.append_attribute(k.c_str()) = v.c_str();
  }
}

void write_lease(xml_node parent, const std::optional<Lease>& l) {
  if (!l) return;
  xml_node n = parent.append_child("lease");
  set_attr(n, "expiry", l->expiry);
  set_attr(n, "unit", l->unit);
}

unsigned mask_to_prefix(const std::string& mask, const std::string& what) {
  auto a = parse_addr(mask, false);
  if (!a) fail("{}: invalid netmask '{}'", what, mask);
  uint32_t m = (uint32_t(a->b[0]) << 24) | (uint32_t(a->b[1]) << 16) | (uint32_t(a->b[2]) << 8) | a->b[3];
  unsigned p = 0;
  while (p < 32 && (m & (0x80000000u >> p))) ++p;
  if (p < 32 && (m << p) != 0) fail("{}: invalid netmask '{}'", what, mask);
  return p;
}

}  // namespace

std::string VirtualPort::param(const std::string& k) const {
  for (const auto& [a, v] : params)
    if (a == k) return v;
  return "";
}

const PortGroup* NetworkDef::portgroup(const std::string& n) const {
  for (const auto& p : portgroups)
    if (n.empty() ? p.is_default == "yes" : p.name == n) return &p;
  return nullptr;
}

unsigned IpDef::prefix_len() const {
  if (prefix) return *prefix;
  if (!netmask.empty()) return mask_to_prefix(netmask, "ip netmask");
  if (is_v6()) return 64;
  auto a = parse_addr(address, false);
  if (!a) return 24;
  // Classful default, as libvirt (virSocketAddrPrefixToNetmask of the class).
  if (a->b[0] < 128) return 8;
  if (a->b[0] < 192) return 16;
  return 24;
}

Vlan parse_vlan_xml(const std::string& text, const std::string& what) {
  if (text.empty()) return {};
  pugi::xml_document doc;
  return parse_vlan(parse_root(doc, text, "vlan"), what);
}

VirtualPort parse_virtualport_xml(const std::string& text, const std::string& what) {
  if (text.empty()) return {};
  pugi::xml_document doc;
  return parse_virtualport(parse_root(doc, text, "virtualport"), what);
}

bool valid_network_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name[0] == '.') return false;
  for (char c : name)
    if (c == '/' || c == '\n' || std::isspace(static_cast<unsigned char>(c))) return false;
  return true;
}

NetworkDef parse_network_xml(const std::string& text, bool gen_uuid) {
  pugi::xml_document doc;
  xml_node root = parse_root(doc, text, "network");
  NetworkDef d;
  d.ipv6 = attr(root, "ipv6");
  if (!d.ipv6.empty()) check_enum(d.ipv6, {"yes", "no"}, "network ipv6");
  d.trust_guest_rx_filters = attr(root, "trustGuestRxFilters");
  if (!d.trust_guest_rx_filters.empty()) check_enum(d.trust_guest_rx_filters, {"yes", "no"}, "network trustGuestRxFilters");
  d.extras = extras(root, {"ipv6", "trustGuestRxFilters", "connections"},
                    {"name", "uuid", "title", "description", "metadata", "forward", "bridge", "mtu", "mac", "domain",
                     "dns", "vlan", "bandwidth", "ip", "route", "virtualport", "portgroup"});
  d.extras.attrs.clear();
  xml_node name = single(root, "name", "network");
  d.name = text_of(name);
  if (d.name.empty()) fail("network: missing <name>");
  if (!valid_network_name(d.name)) fail("network name '{}' cannot contain '/' or white space, or start with '.'", d.name);
  if (xml_node u = single(root, "uuid", "network")) {
    d.uuid = normalize_uuid(text_of(u));
    if (d.uuid.empty()) fail("network uuid: malformed uuid '{}'", text_of(u));
  } else if (gen_uuid) {
    d.uuid = generate_uuid();
  }
  d.title = text_of(single(root, "title", "network"));
  d.description = text_of(single(root, "description", "network"));
  if (xml_node m = single(root, "metadata", "network")) d.metadata = serialize(m);

  if (xml_node f = single(root, "forward", "network")) {
    Forward& fw = d.forward;
    fw.mode = attr(f, "mode");
    if (fw.mode.empty()) fw.mode = "nat";  // libvirt: <forward/> means NAT
    check_enum(fw.mode, {"nat", "route", "open", "bridge", "private", "vepa", "passthrough", "hostdev"}, "forward mode");
    fw.dev = attr(f, "dev");
    fw.extras = extras(f, {"mode", "dev"}, {"nat", "interface"});
    if (xml_node nat = single(f, "nat", "forward")) {
      if (fw.mode != "nat") fail("forward: <nat> is only valid with mode='nat', not '{}'", fw.mode);
      fw.nat_present = true;
      fw.nat_ipv6 = attr(nat, "ipv6");
      if (!fw.nat_ipv6.empty()) check_enum(fw.nat_ipv6, {"yes", "no"}, "forward nat ipv6");
      if (xml_node a = nat.child("address")) {
        fw.nat_addr_start = attr(a, "start");
        fw.nat_addr_end = attr(a, "end");
        if (!parse_addr(fw.nat_addr_start, false) || (!fw.nat_addr_end.empty() && !parse_addr(fw.nat_addr_end, false)))
          fail("forward nat address: invalid range {} - {}", fw.nat_addr_start, fw.nat_addr_end);
      }
      if (xml_node p = nat.child("port")) {
        fw.nat_port_start = attr(p, "start");
        fw.nat_port_end = attr(p, "end");
        const unsigned s = parse_uint(fw.nat_port_start, "forward nat port start", 0, 65535);
        const unsigned e = parse_uint(fw.nat_port_end, "forward nat port end", 0, 65535);
        if (s > e) fail("forward nat port: start {} is greater than end {}", s, e);
      }
    }
    for (xml_node i : f.children("interface")) {
      const std::string dev = attr(i, "dev");
      if (dev.empty()) fail("forward interface: missing dev attribute");
      fw.interfaces.push_back(dev);
    }
    // libvirt lists forward dev as the first <interface> too.
    if (!fw.dev.empty() && fw.interfaces.empty()) fw.interfaces.push_back(fw.dev);
    if (!fw.dev.empty() && !fw.interfaces.empty() && fw.interfaces[0] != fw.dev)
      fail("forward dev '{}' must match the first interface element dev '{}'", fw.dev, fw.interfaces[0]);
  }
  if (xml_node b = single(root, "bridge", "network")) {
    d.bridge.present = true;
    d.bridge.name = attr(b, "name");
    d.bridge.stp = attr(b, "stp");
    if (!d.bridge.stp.empty()) check_enum(d.bridge.stp, {"on", "off"}, "bridge stp");
    d.bridge.delay = attr(b, "delay");
    if (!d.bridge.delay.empty()) parse_ull(d.bridge.delay, "bridge delay");
    d.bridge.mac_table_manager = attr(b, "macTableManager");
    if (!d.bridge.mac_table_manager.empty()) check_enum(d.bridge.mac_table_manager, {"kernel", "libvirt"}, "bridge macTableManager");
    d.bridge.zone = attr(b, "zone");
    if (d.bridge.name.size() >= 16) fail("bridge name '{}' is longer than 15 characters", d.bridge.name);
  }
  if (d.forward.mode == "bridge" && d.bridge.name.empty() && d.forward.dev.empty() && d.forward.interfaces.empty())
    fail("network '{}': forward mode 'bridge' requires a bridge name or forward dev", d.name);
  if (d.managed_bridge()) {
    // libvirt always shows stp/delay for the bridges it creates.
    d.bridge.present = true;
    if (d.bridge.stp.empty()) d.bridge.stp = "on";
    if (d.bridge.delay.empty()) d.bridge.delay = "0";
  }
  if (xml_node m = single(root, "mtu", "network")) d.mtu = parse_uint(attr(m, "size"), "mtu size", 68, 65535);
  if (xml_node m = single(root, "mac", "network")) {
    d.mac = lower(attr(m, "address"));
    if (!valid_mac(d.mac)) fail("network mac: invalid address '{}'", attr(m, "address"));
    if (std::stoi(d.mac.substr(0, 2), nullptr, 16) & 1) fail("network mac: '{}' is a multicast address", d.mac);
  }
  if (xml_node dm = single(root, "domain", "network")) {
    d.domain_name = attr(dm, "name");
    d.domain_local_only = attr(dm, "localOnly");
    if (!d.domain_local_only.empty()) check_enum(d.domain_local_only, {"yes", "no"}, "domain localOnly");
  }
  if (xml_node dn = single(root, "dns", "network")) {
    Dns& dns = d.dns;
    dns.present = true;
    dns.enable = attr(dn, "enable");
    if (!dns.enable.empty()) check_enum(dns.enable, {"yes", "no"}, "dns enable");
    dns.forward_plain_names = attr(dn, "forwardPlainNames");
    if (!dns.forward_plain_names.empty()) check_enum(dns.forward_plain_names, {"yes", "no"}, "dns forwardPlainNames");
    for (xml_node f : dn.children("forwarder")) {
      DnsForwarder fw{attr(f, "domain"), attr(f, "addr")};
      if (fw.domain.empty() && fw.addr.empty()) fail("dns forwarder: needs addr or domain");
      if (!fw.addr.empty() && !parse_addr(fw.addr, false) && !parse_addr(fw.addr, true))
        fail("dns forwarder: invalid address '{}'", fw.addr);
      dns.forwarders.push_back(fw);
    }
    for (xml_node t : dn.children("txt")) {
      DnsTxt tx{attr(t, "name"), attr(t, "value")};
      if (tx.name.empty()) fail("dns txt: missing required name attribute");
      if (tx.name.find(' ') != std::string::npos) fail("dns txt: name '{}' cannot contain spaces", tx.name);
      dns.txts.push_back(tx);
    }
    for (xml_node s : dn.children("srv")) {
      DnsSrv srv{attr(s, "service"), attr(s, "protocol"), attr(s, "domain"), attr(s, "target"),
                 attr(s, "port"),    attr(s, "priority"), attr(s, "weight")};
      if (srv.service.empty()) fail("dns srv: missing required service attribute");
      if (srv.protocol.empty()) fail("dns srv: missing required protocol attribute");
      if (!srv.port.empty()) parse_uint(srv.port, "dns srv port", 1, 65535);
      dns.srvs.push_back(srv);
    }
    for (xml_node h : dn.children("host")) {
      DnsHost host{attr(h, "ip"), {}};
      if (!parse_addr(host.ip, false) && !parse_addr(host.ip, true)) fail("dns host: invalid ip '{}'", host.ip);
      for (xml_node hn : h.children("hostname"))
        if (!text_of(hn).empty()) host.hostnames.push_back(text_of(hn));
      if (host.hostnames.empty()) fail("dns host {}: missing hostname", host.ip);
      dns.hosts.push_back(host);
    }
  }
  d.vlan = parse_vlan(single(root, "vlan", "network"), "vlan");
  if (xml_node bw = single(root, "bandwidth", "network")) d.bandwidth = serialize(bw);
  bool dhcp4 = false, dhcp6 = false;
  for (xml_node ipn : root.children("ip")) {
    IpDef ip;
    ip.family = attr(ipn, "family");
    if (!ip.family.empty()) check_enum(ip.family, {"ipv4", "ipv6"}, "ip family");
    ip.address = attr(ipn, "address");
    auto a = parse_addr(ip.address, ip.is_v6());
    if (!a) fail("ip: invalid {} address '{}'", ip.is_v6() ? "IPv6" : "IPv4", ip.address);
    ip.netmask = attr(ipn, "netmask");
    if (!attr(ipn, "prefix").empty()) ip.prefix = parse_uint(attr(ipn, "prefix"), "ip prefix", 0, ip.is_v6() ? 128 : 32);
    if (!ip.netmask.empty()) {
      if (ip.is_v6()) fail("ip: netmask is not valid for IPv6 address '{}'", ip.address);
      if (ip.prefix) fail("ip {}: both netmask and prefix given", ip.address);
      mask_to_prefix(ip.netmask, "ip netmask");
    }
    ip.local_ptr = attr(ipn, "localPtr");
    if (xml_node t = ipn.child("tftp")) ip.tftp_root = attr(t, "root");
    if (xml_node dh = single(ipn, "dhcp", "ip")) {
      ip.dhcp = true;
      (ip.is_v6() ? dhcp6 : dhcp4) = true;
      const unsigned pfx = ip.prefix_len();
      for (xml_node r : dh.children("range")) {
        DhcpRange rg{attr(r, "start"), attr(r, "end"), std::nullopt};
        auto s = parse_addr(rg.start, ip.is_v6()), e = parse_addr(rg.end, ip.is_v6());
        if (!s || !e) fail("ip {} dhcp range: invalid address '{}'", ip.address, !s ? rg.start : rg.end);
        if (!same_subnet(*s, *a, pfx) || !same_subnet(*e, *a, pfx))
          fail("range {} - {} is not entirely within network {}/{}", rg.start, rg.end, ip.address, pfx);
        if (compare(*s, *e) > 0) fail("range {} - {} is reversed", rg.start, rg.end);
        if (xml_node l = r.child("lease")) rg.lease = parse_lease(l, "dhcp range");
        ip.ranges.push_back(rg);
      }
      for (xml_node h : dh.children("host")) {
        DhcpHost host{lower(attr(h, "mac")), attr(h, "id"), attr(h, "name"), attr(h, "ip"), std::nullopt};
        if (!host.mac.empty() && !valid_mac(host.mac)) fail("dhcp host: invalid mac address '{}'", attr(h, "mac"));
        if (!host.ip.empty()) {
          auto hip = parse_addr(host.ip, ip.is_v6());
          if (!hip) fail("dhcp host: invalid ip '{}'", host.ip);
          if (!same_subnet(*hip, *a, pfx)) fail("dhcp host ip {} is not within network {}/{}", host.ip, ip.address, pfx);
        }
        if (host.mac.empty() && host.id.empty() && host.name.empty())
          fail("dhcp host: static host definition needs mac, id or name");
        if (xml_node l = h.child("lease")) host.lease = parse_lease(l, "dhcp host");
        ip.hosts.push_back(host);
      }
      if (xml_node bp = dh.child("bootp")) {
        ip.bootp_file = attr(bp, "file");
        ip.bootp_server = attr(bp, "server");
      }
    }
    d.ips.push_back(ip);
  }
  if (d.managed_bridge() || d.forward.mode.empty()) {
    for (size_t i = 0; i < d.ips.size(); ++i)
      for (size_t j = i + 1; j < d.ips.size(); ++j)
        if (d.ips[i].dhcp && d.ips[j].dhcp && d.ips[i].is_v6() == d.ips[j].is_v6())
          fail("network '{}': multiple {} addresses with DHCP are not supported", d.name, d.ips[i].is_v6() ? "IPv6" : "IPv4");
  } else if (!d.ips.empty()) {
    fail("network '{}': <ip> is not supported with forward mode '{}'", d.name, d.forward.mode);
  }
  (void)dhcp4;
  (void)dhcp6;
  for (xml_node r : root.children("route")) {
    Route rt{attr(r, "family"), attr(r, "address"), attr(r, "netmask"), attr(r, "prefix"), attr(r, "gateway"), attr(r, "metric")};
    const bool v6 = rt.family == "ipv6";
    if (!parse_addr(rt.address, v6)) fail("route: invalid address '{}'", rt.address);
    if (!parse_addr(rt.gateway, v6)) fail("route: invalid gateway '{}'", rt.gateway);
    d.routes.push_back(rt);
  }
  d.virtualport = parse_virtualport(single(root, "virtualport", "network"), "virtualport");
  if (d.virtualport.present && d.forward.mode != "bridge" && d.forward.mode != "private" && d.forward.mode != "vepa" &&
      d.forward.mode != "passthrough")
    fail("network '{}': <virtualport> needs forward mode 'bridge'", d.name);
  int defaults = 0;
  for (xml_node pg : root.children("portgroup")) {
    PortGroup g;
    g.name = attr(pg, "name");
    if (g.name.empty()) fail("portgroup: missing name");
    g.is_default = attr(pg, "default");
    if (g.is_default == "yes") ++defaults;
    g.vlan = parse_vlan(pg.child("vlan"), "portgroup '" + g.name + "' vlan");
    g.virtualport = parse_virtualport(pg.child("virtualport"), "portgroup '" + g.name + "' virtualport");
    g.extras = extras(pg, {"name", "default"}, {"vlan", "virtualport"});
    for (const auto& o : d.portgroups)
      if (o.name == g.name) fail("network '{}': duplicate portgroup '{}'", d.name, g.name);
    d.portgroups.push_back(g);
  }
  if (defaults > 1) fail("network '{}': more than one default portgroup", d.name);
  return d;
}

std::string write_network_xml(const NetworkDef& d, int connections) {
  pugi::xml_document doc;
  xml_node root = doc.append_child("network");
  if (connections > 0) root.append_attribute("connections") = connections;
  set_attr(root, "ipv6", d.ipv6);
  set_attr(root, "trustGuestRxFilters", d.trust_guest_rx_filters);
  text_child(root, "name", d.name);
  if (!d.uuid.empty()) text_child(root, "uuid", d.uuid);
  if (!d.title.empty()) text_child(root, "title", d.title);
  if (!d.description.empty()) text_child(root, "description", d.description);
  if (!d.metadata.empty()) root.append_buffer(d.metadata.data(), d.metadata.size());
  if (!d.forward.mode.empty()) {
    const Forward& f = d.forward;
    xml_node n = root.append_child("forward");
    set_attr(n, "dev", f.dev);
    n.append_attribute("mode") = f.mode.c_str();
    for (const auto& [k, v] : f.extras.attrs) n.append_attribute(k.c_str()) = v.c_str();
    if (f.nat_present && (!f.nat_ipv6.empty() || !f.nat_addr_start.empty() || !f.nat_port_start.empty())) {
      xml_node nat = n.append_child("nat");
      set_attr(nat, "ipv6", f.nat_ipv6);
      if (!f.nat_addr_start.empty()) {
        xml_node a = nat.append_child("address");
        a.append_attribute("start") = f.nat_addr_start.c_str();
        a.append_attribute("end") = (f.nat_addr_end.empty() ? f.nat_addr_start : f.nat_addr_end).c_str();
      }
      if (!f.nat_port_start.empty()) {
        xml_node p = nat.append_child("port");
        p.append_attribute("start") = f.nat_port_start.c_str();
        p.append_attribute("end") = f.nat_port_end.c_str();
      }
    }
    for (const auto& i : f.interfaces) n.append_child("interface").append_attribute("dev") = i.c_str();
    add_children(n, f.extras);
  }
  if (d.bridge.present) {
    xml_node b = root.append_child("bridge");
    set_attr(b, "name", d.bridge.name);
    if (d.managed_bridge()) {
      set_attr(b, "stp", d.bridge.stp);
      set_attr(b, "delay", d.bridge.delay);
    }
    set_attr(b, "macTableManager", d.bridge.mac_table_manager);
    set_attr(b, "zone", d.bridge.zone);
  }
  if (d.mtu) root.append_child("mtu").append_attribute("size") = d.mtu;
  if (!d.mac.empty()) root.append_child("mac").append_attribute("address") = d.mac.c_str();
  if (!d.domain_name.empty()) {
    xml_node dm = root.append_child("domain");
    dm.append_attribute("name") = d.domain_name.c_str();
    set_attr(dm, "localOnly", d.domain_local_only);
  }
  if (d.dns.present && (!d.dns.enable.empty() || !d.dns.forward_plain_names.empty() || !d.dns.forwarders.empty() ||
                        !d.dns.txts.empty() || !d.dns.srvs.empty() || !d.dns.hosts.empty())) {
    xml_node n = root.append_child("dns");
    set_attr(n, "enable", d.dns.enable);
    set_attr(n, "forwardPlainNames", d.dns.forward_plain_names);
    for (const auto& f : d.dns.forwarders) {
      xml_node e = n.append_child("forwarder");
      set_attr(e, "domain", f.domain);
      set_attr(e, "addr", f.addr);
    }
    for (const auto& t : d.dns.txts) {
      xml_node e = n.append_child("txt");
      e.append_attribute("name") = t.name.c_str();
      set_attr(e, "value", t.value);
    }
    for (const auto& s : d.dns.srvs) {
      xml_node e = n.append_child("srv");
      for (auto [k, v] : {std::pair{"service", &s.service}, {"protocol", &s.protocol}, {"domain", &s.domain},
                          {"target", &s.target}, {"port", &s.port}, {"priority", &s.priority}, {"weight", &s.weight}})
        set_attr(e, k, *v);
    }
    for (const auto& h : d.dns.hosts) {
      xml_node e = n.append_child("host");
      e.append_attribute("ip") = h.ip.c_str();
      for (const auto& hn : h.hostnames) text_child(e, "hostname", hn);
    }
  }
  write_vlan(root, d.vlan);
  if (!d.bandwidth.empty()) root.append_buffer(d.bandwidth.data(), d.bandwidth.size());
  for (const IpDef& ip : d.ips) {
    xml_node n = root.append_child("ip");
    set_attr(n, "family", ip.family);
    n.append_attribute("address") = ip.address.c_str();
    set_attr(n, "netmask", ip.netmask);
    if (ip.prefix) n.append_attribute("prefix") = *ip.prefix;
    set_attr(n, "localPtr", ip.local_ptr);
    if (!ip.tftp_root.empty()) n.append_child("tftp").append_attribute("root") = ip.tftp_root.c_str();
    if (ip.dhcp && (!ip.ranges.empty() || !ip.hosts.empty() || !ip.bootp_file.empty())) {
      xml_node dh = n.append_child("dhcp");
      for (const auto& r : ip.ranges) {
        xml_node e = dh.append_child("range");
        e.append_attribute("start") = r.start.c_str();
        e.append_attribute("end") = r.end.c_str();
        write_lease(e, r.lease);
      }
      for (const auto& h : ip.hosts) {
        xml_node e = dh.append_child("host");
        set_attr(e, "mac", h.mac);
        set_attr(e, "id", h.id);
        set_attr(e, "name", h.name);
        set_attr(e, "ip", h.ip);
        write_lease(e, h.lease);
      }
      if (!ip.bootp_file.empty()) {
        xml_node e = dh.append_child("bootp");
        e.append_attribute("file") = ip.bootp_file.c_str();
        set_attr(e, "server", ip.bootp_server);
      }
    }
    // libvirt always writes <ip ...> and </ip> on their own lines, children or not.
    if (!n.first_child()) n.append_child(kOpenClose);
  }
  for (const Route& r : d.routes) {
    xml_node e = root.append_child("route");
    for (auto [k, v] : {std::pair{"family", &r.family}, {"address", &r.address}, {"netmask", &r.netmask},
                        {"prefix", &r.prefix}, {"gateway", &r.gateway}, {"metric", &r.metric}})
      set_attr(e, k, *v);
  }
  write_virtualport(root, d.virtualport);
  for (const PortGroup& g : d.portgroups) {
    xml_node e = root.append_child("portgroup");
    e.append_attribute("name") = g.name.c_str();
    set_attr(e, "default", g.is_default);
    write_vlan(e, g.vlan);
    write_virtualport(e, g.virtualport);
    add_children(e, g.extras);
  }
  add_children(root, d.extras);
  return write(doc);
}

// ----------------------------------------------------------------------------------------- addresses

std::optional<Addr> parse_addr(const std::string& text, bool v6) {
  Addr a;
  a.v6 = v6;
  if (text.empty()) return std::nullopt;
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, text.c_str(), a.b) != 1) return std::nullopt;
  return a;
}

std::string format_addr(const Addr& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(a.v6 ? AF_INET6 : AF_INET, a.b, buf, sizeof buf);
  return buf;
}

Addr network_of(const Addr& a, unsigned prefix) {
  Addr n = a;
  const unsigned bytes = a.v6 ? 16 : 4;
  for (unsigned i = 0; i < bytes; ++i) {
    const unsigned bit0 = i * 8;
    if (bit0 >= prefix) n.b[i] = 0;
    else if (bit0 + 8 > prefix) n.b[i] &= static_cast<uint8_t>(0xff << (8 - (prefix - bit0)));
  }
  return n;
}

bool same_subnet(const Addr& a, const Addr& b, unsigned prefix) {
  if (a.v6 != b.v6) return false;
  return compare(network_of(a, prefix), network_of(b, prefix)) == 0;
}

int compare(const Addr& a, const Addr& b) { return std::memcmp(a.b, b.b, a.v6 ? 16 : 4); }

std::string cidr(const IpDef& ip) {
  auto a = parse_addr(ip.address, ip.is_v6());
  if (!a) return ip.address;
  return format_addr(network_of(*a, ip.prefix_len())) + "/" + std::to_string(ip.prefix_len());
}

bool overlaps(const IpDef& x, const IpDef& y) {
  if (x.is_v6() != y.is_v6()) return false;
  auto a = parse_addr(x.address, x.is_v6()), b = parse_addr(y.address, y.is_v6());
  if (!a || !b) return false;
  return same_subnet(*a, *b, std::min(x.prefix_len(), y.prefix_len()));
}

}  // namespace vireo::network
