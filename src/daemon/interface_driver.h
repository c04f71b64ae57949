// vireod's host interface driver (libvirt's iface-*): ethernet, bridge, bond and vlan interfaces defined
// in libvirt's interface XML (<etc>/vireo/interfaces), started and stopped through netlink; the live list
// and XML come from the kernel's links. iface-bridge/iface-unbridge move a NIC into a new bridge and back.
#pragma once
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/host.h"

namespace vireo::daemon {

struct IfaceDef {
  std::string type, name, start_mode, mac;
  unsigned mtu = 0;
  std::vector<std::pair<std::string, unsigned>> ipv4;  // static addresses
  std::string gateway;
  bool dhcp = false;
  // bridge
  std::string stp, delay;
  // bond
  std::string bond_mode;
  unsigned miimon = 0;
  // vlan
  unsigned vlan_tag = 0;
  std::string vlan_parent;
  std::vector<IfaceDef> members;  // bridge/bond members
};

IfaceDef parse_iface_xml(const std::string& xml);  // throws Error
std::string write_iface_xml(const IfaceDef& d);

class InterfaceDriver : public Driver {
 public:
  explicit InterfaceDriver(Host& host) : h_(host) {}
  void register_methods(MethodTable& table) override;
  void load() override;

 private:
  void start(const IfaceDef& d);
  void stop(const IfaceDef& d);
  IfaceDef live_def(const std::string& name);
  std::string dir() const { return h_.paths.config + "/interfaces"; }

  Host& h_;
  std::mutex mu_;
  std::map<std::string, IfaceDef> defs_;
};

}  // namespace vireo::daemon
