// From a domain definition to the host resources its devices use, at start: `<interface type='network'>`
// becomes a port on the network's bridge (Linux or Open vSwitch, with VLANs), `<disk type='volume'>` the
// volume's path. Kept apart from the VMM launch so the device config (vmm_args today, a typed VM config
// later) is produced from an already-resolved definition.
#pragma once
#include <string>
#include <vector>

#include "daemon/host.h"
#include "domain/domain.h"

namespace vireo::daemon {

// One tap the monitor creates and plugs in before it execs vireo-vmm (the NAME.bridges file).
struct PortSpec {
  size_t net_index = 0;   // which --net option of vmm_args()
  std::string bridge;     // Linux bridge or OVS bridge
  std::string tap;        // name or domain::kAutoTapName
  std::string mac;        // the guest's
  bool ovs = false;       // add the port through Open vSwitch's database
  std::string interfaceid;  // OVS external_ids:iface-id
  std::vector<unsigned> vlans;  // one tag (access) or, with trunk, the trunk list
  bool trunk = false;
  unsigned native_vlan = 0;     // trunk native VLAN (0: none)
  std::string native_mode;      // "tagged" | "untagged" | ""
  unsigned mtu = 0;
};

struct StartPlan {
  domain::DomainDef def;        // resolved: every interface is a bridge port, every disk a file/block
  std::vector<PortSpec> ports;
};

// Throws RpcError (network/pool/volume not found, network inactive, ...).
StartPlan resolve_devices(Host& host, const domain::DomainDef& def);
// Undo what resolve_devices took (nothing today beyond the taps the monitor removes).
void release_devices(Host& host, const StartPlan& plan);
void release_devices_of(Host& host, const domain::DomainDef& def);

// NAME.bridges: "NET_INDEX BRIDGE TAP MAC [key=value...]" per line (keys: ovs, iface-id, vlan, trunk,
// native, native-mode, mtu).
std::string format_port_plan(const std::vector<PortSpec>& ports);
std::vector<PortSpec> parse_port_plan(const std::string& text);  // throws Error on a bad line

}  // namespace vireo::daemon
