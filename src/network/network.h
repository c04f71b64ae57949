// vireo/network: libvirt's virtual network XML (<network>) as a C++ model: parse with validation and
// defaults, write back in libvirt's element order. Elements the model does not know are kept verbatim.
// Also: IP address helpers shared by the network driver (prefixes, ranges, clashes).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xml/xml_util.h"

namespace vireo::network {

struct Lease {
  std::string expiry, unit;  // <lease expiry='1' unit='hours'/>
};

struct DhcpRange {
  std::string start, end;
  std::optional<Lease> lease;
};

struct DhcpHost {
  std::string mac, id, name, ip;
  std::optional<Lease> lease;
};

struct IpDef {
  std::string family;  // "" (ipv4) | "ipv4" | "ipv6"
  std::string address, netmask;
  std::optional<unsigned> prefix;
  std::string local_ptr;
  std::string tftp_root;
  bool dhcp = false;  // <dhcp> present
  std::vector<DhcpRange> ranges;
  std::vector<DhcpHost> hosts;
  std::string bootp_file, bootp_server;
  bool is_v6() const { return family == "ipv6"; }
  unsigned prefix_len() const;  // from prefix or netmask (ipv4 default: by class, as libvirt)
};

struct DnsForwarder {
  std::string domain, addr;
};
struct DnsTxt {
  std::string name, value;
};
struct DnsSrv {
  std::string service, protocol, domain, target, port, priority, weight;
};
struct DnsHost {
  std::string ip;
  std::vector<std::string> hostnames;
};
struct Dns {
  bool present = false;
  std::string enable, forward_plain_names;
  std::vector<DnsForwarder> forwarders;
  std::vector<DnsTxt> txts;
  std::vector<DnsSrv> srvs;
  std::vector<DnsHost> hosts;
};

struct VlanTag {
  unsigned id = 0;
  std::string native_mode;  // "" | tagged | untagged
};
struct Vlan {
  bool present = false;
  std::string trunk;  // "" | yes | no
  std::vector<VlanTag> tags;
};

struct VirtualPort {
  std::string type;  // openvswitch | 802.1Qbh | 802.1Qbg | midonet | "" (any)
  std::vector<std::pair<std::string, std::string>> params;  // <parameters interfaceid=.../>
  bool present = false;
  std::string param(const std::string& k) const;
};

struct PortGroup {
  std::string name, is_default;
  Vlan vlan;
  VirtualPort virtualport;
  xml::Extras extras;  // bandwidth, ...
};

struct Route {
  std::string family, address, netmask, prefix, gateway, metric;
};

struct Forward {
  std::string mode;  // "" (isolated) | nat | route | open | bridge | private | vepa | passthrough | hostdev
  std::string dev;
  bool nat_present = false;
  std::string nat_ipv6;
  std::string nat_addr_start, nat_addr_end, nat_port_start, nat_port_end;
  std::vector<std::string> interfaces;
  xml::Extras extras;  // <pf>, <address> (hostdev), driver, ...
};

struct Bridge {
  bool present = false;
  std::string name, stp, delay, mac_table_manager, zone;
};

struct NetworkDef {
  std::string ipv6, trust_guest_rx_filters;
  std::string name, uuid, title, description;
  std::string metadata;  // verbatim <metadata>...</metadata>
  Forward forward;
  Bridge bridge;
  unsigned mtu = 0;
  std::string mac;
  std::string domain_name, domain_local_only;
  Dns dns;
  Vlan vlan;
  std::string bandwidth;  // verbatim
  std::vector<IpDef> ips;
  std::vector<Route> routes;
  VirtualPort virtualport;
  std::vector<PortGroup> portgroups;
  xml::Extras extras;  // unknown top-level elements

  // nat/route/open/isolated: Vireo creates the bridge; bridge mode uses an existing one.
  bool managed_bridge() const {
    return forward.mode.empty() || forward.mode == "nat" || forward.mode == "route" || forward.mode == "open";
  }
  bool ovs() const { return virtualport.present && virtualport.type == "openvswitch"; }
  const PortGroup* portgroup(const std::string& name) const;  // "" -> the default one (or null)
};

// Throws vireo::Error with a one-line message ("ip: range 10.0.0.2 - 10.1.0.9 is not entirely within
// network 10.0.0.1/24").
NetworkDef parse_network_xml(const std::string& xml, bool generate_uuid = true);
std::string write_network_xml(const NetworkDef& def, int connections = -1);  // connections>=0: live attr

bool valid_network_name(const std::string& name);
// A domain interface's own <vlan>/<virtualport> (verbatim XML, "" = absent).
Vlan parse_vlan_xml(const std::string& xml, const std::string& what);
VirtualPort parse_virtualport_xml(const std::string& xml, const std::string& what);

// --- addresses
struct Addr {
  bool v6 = false;
  uint8_t b[16] = {};
};
std::optional<Addr> parse_addr(const std::string& text, bool v6);
std::string format_addr(const Addr& a);
bool same_subnet(const Addr& a, const Addr& b, unsigned prefix);
Addr network_of(const Addr& a, unsigned prefix);
int compare(const Addr& a, const Addr& b);
// "192.168.122.0/24" of an <ip>.
std::string cidr(const IpDef& ip);
// True if the two <ip> subnets overlap.
bool overlaps(const IpDef& a, const IpDef& b);

}  // namespace vireo::network
