// vireod's network driver: libvirt-style virtual networks. A managed network (nat, route, open, isolated)
// is a Linux bridge made through netlink, an nftables table and one dnsmasq; a bridge-mode network names
// an existing Linux or Open vSwitch bridge. Definitions live in <etc>/vireo/networks, active networks'
// live definitions in <run>/vireo/networks (so a restarted vireod finds them up), dnsmasq's files in
// <var/lib>/vireo/dnsmasq.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/host.h"
#include "network/network.h"

namespace vireo::daemon {

struct Net {
  std::string name, uuid;
  std::optional<network::NetworkDef> config;  // persistent definition
  std::optional<network::NetworkDef> live;    // while active (or transient)
  bool active = false, autostart = false;
  bool persistent() const { return config.has_value(); }
  const network::NetworkDef& current() const { return live ? *live : *config; }
};

// Where a domain interface on a network plugs in.
struct NetworkPort {
  std::string network;
  std::string bridge;
  bool ovs = false;
  std::string interfaceid;
  network::Vlan vlan;
  unsigned mtu = 0;
};

class NetworkDriver : public Driver {
 public:
  explicit NetworkDriver(Host& host) : h_(host) {}
  void register_methods(MethodTable& table) override;
  void load() override;
  void autostart() override;

  // For `<interface type='network'>` at domain start: the network must be active. `portgroup` "" picks
  // the default portgroup; the interface's own <vlan>/<virtualport> win over the network's.
  NetworkPort port_for(const std::string& network, const std::string& portgroup, const network::Vlan& iface_vlan,
                       const network::VirtualPort& iface_vport);

  // Defines the network "default" (NAT, 192.168.122.0/24, DHCP, autostart) unless a network of that name
  // exists, as libvirt's packaging does (vireod --define-default, scripts/setup.sh).
  void define_default_if_missing();

 private:
  std::shared_ptr<Net> find(const std::string& key);  // name or uuid; throws kNoNetwork
  nlohmann::json summary(const Net& n);
  nlohmann::json define(const std::string& xml, bool transient);
  void start(Net& n);
  void stop(Net& n);
  void undefine(const std::shared_ptr<Net>& n);
  void set_autostart(Net& n, bool on);
  nlohmann::json update(Net& n, const nlohmann::json& p);
  nlohmann::json leases(Net& n, const std::string& mac);
  void fill_defaults(network::NetworkDef& def, const std::string& self);
  void check_clashes(const network::NetworkDef& def);
  void save_live(const Net& n);

  // network_host.cpp: host plumbing
  void plumb(const network::NetworkDef& def);
  void unplumb(const network::NetworkDef& def);
  void refresh_after_restart(Net& n);
  std::string dnsmasq_dir() const { return h_.paths.state + "/dnsmasq"; }
  std::string config_dir() const { return h_.paths.config + "/networks"; }
  std::string autostart_dir() const { return config_dir() + "/autostart"; }
  std::string run_dir() const { return h_.paths.run + "/networks"; }

  Host& h_;
  std::mutex mu_;  // the table and every operation (network operations are rare and short)
  std::map<std::string, std::shared_ptr<Net>> nets_;
};

}  // namespace vireo::daemon
