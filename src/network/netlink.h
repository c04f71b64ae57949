// vireo/network: host links through rtnetlink (libmnl), never `ip` in a shell: bridges, bonds, VLAN and
// VXLAN links, addresses, up/down, masters, bridge VLAN filtering, and the link/address dumps behind
// iface-list. Errors are one line: "create bridge virbr0: file exists".
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vireo::network {

struct LinkInfo {
  int index = 0;
  std::string name;
  std::string kind;  // "bridge", "bond", "vlan", "vxlan", "veth", "tun", "openvswitch", "" (physical)
  std::string mac;
  unsigned mtu = 0;
  bool up = false;         // IFF_UP
  bool running = false;    // IFF_RUNNING (carrier)
  int master = 0;          // ifindex of the bridge/bond it is enslaved to
  int link = 0;            // vlan: the parent ifindex
  unsigned vlan_id = 0;    // vlan
};

struct AddrInfo {
  int index = 0;
  bool v6 = false;
  std::string address;
  unsigned prefix = 0;
};

std::vector<LinkInfo> list_links();
std::optional<LinkInfo> find_link(const std::string& name);
std::vector<AddrInfo> list_addresses();

struct BridgeOptions {
  bool stp = true;
  unsigned delay_s = 0;
  std::string mac;  // "" keeps the kernel's
  unsigned mtu = 0;
  bool vlan_filtering = false;
};
void create_bridge(const std::string& name, const BridgeOptions& o);
// mode: balance-rr active-backup balance-xor broadcast 802.3ad balance-tlb balance-alb; miimon in ms.
void create_bond(const std::string& name, const std::string& mode, unsigned miimon_ms);
void create_vlan(const std::string& name, const std::string& parent, unsigned id);
struct VxlanOptions {
  unsigned vni = 0;
  std::string remote, local, group;  // IPv4
  std::string dev;                   // underlay device
  unsigned port = 4789;
};
void create_vxlan(const std::string& name, const VxlanOptions& o);
void delete_link(const std::string& name);  // a missing link is not an error
void set_up(const std::string& name, bool up);
void set_mtu(const std::string& name, unsigned mtu);
void set_master(const std::string& name, const std::string& master);  // "" releases
void add_address(const std::string& name, const std::string& address, unsigned prefix, bool v6);
void del_address(const std::string& name, const std::string& address, unsigned prefix, bool v6);
void add_route(const std::string& dst, unsigned prefix, const std::string& gateway, bool v6, unsigned metric);
// Bridge VLAN filtering on a port: `pvid` + untagged for an access port, or tagged members for a trunk.
void bridge_vlan_add(const std::string& port, unsigned vid, bool pvid, bool untagged);
void bridge_vlan_del(const std::string& port, unsigned vid);
void set_sysctl(const std::string& path, const std::string& value);  // /proc/sys/...

}  // namespace vireo::network
