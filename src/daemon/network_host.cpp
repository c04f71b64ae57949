// Network driver, host side: bridge + addresses + routes (netlink), nftables, dnsmasq; and finding them
// again after a daemon restart.
#include <net/if.h>

#include "common/error.h"
#include "daemon/network_driver.h"
#include "network/dnsmasq.h"
#include "network/firewall.h"
#include "network/netlink.h"

namespace vireo::daemon {

using network::NetworkDef;

namespace {

bool any_v6(const NetworkDef& d) {
  for (const auto& ip : d.ips)
    if (ip.is_v6()) return true;
  return false;
}

// "Network is already in use by interface eth0" when a host interface other than `bridge` has an
// address in one of the network's subnets (libvirt's route-collision check).
void check_host_subnets(const NetworkDef& d) {
  auto links = network::list_links();
  auto name_of = [&](int idx) {
    for (auto& l : links)
      if (l.index == idx) return l.name;
    return std::string("?");
  };
  for (const auto& a : network::list_addresses()) {
    const std::string dev = name_of(a.index);
    if (dev == d.bridge.name) continue;
    for (const auto& ip : d.ips) {
      if (ip.is_v6() != a.v6) continue;
      network::IpDef host;
      host.family = a.v6 ? "ipv6" : "ipv4";
      host.address = a.address;
      host.prefix = a.prefix;
      if (a.v6 && a.address.rfind("fe80:", 0) == 0) continue;
      if (network::overlaps(ip, host))
        throw RpcError(kInternal, "internal error: Network is already in use by interface " + dev);
    }
  }
}

}  // namespace

void NetworkDriver::plumb(const NetworkDef& d) {
  if (!d.managed_bridge()) {
    // forward mode bridge: the bridge must exist (a Linux bridge or an Open vSwitch bridge).
    const std::string br = d.bridge.name.empty() ? d.forward.dev : d.bridge.name;
    if (::if_nametoindex(br.c_str()) == 0) failed("bridge '" + br + "' of network '" + d.name + "' does not exist");
    return;
  }
  if (::if_nametoindex(d.bridge.name.c_str()) != 0)
    failed("bridge '" + d.bridge.name + "' already exists on the host");
  check_host_subnets(d);
  bool bridge_made = false, fw = false;
  try {
    network::BridgeOptions bo;
    bo.stp = d.bridge.stp != "off";
    bo.delay_s = d.bridge.delay.empty() ? 0 : static_cast<unsigned>(std::stoul(d.bridge.delay));
    bo.mac = d.mac;
    bo.mtu = d.mtu;
    bo.vlan_filtering = d.vlan.present;
    network::create_bridge(d.bridge.name, bo);
    bridge_made = true;
    if (any_v6(d)) {
      // Addresses on a bridge without ports still work; no DAD delay (addresses are added NODAD).
      try {
        network::set_sysctl("/proc/sys/net/ipv6/conf/" + d.bridge.name + "/disable_ipv6", "0");
      } catch (const Error&) {
      }
    }
    for (const auto& ip : d.ips) network::add_address(d.bridge.name, ip.address, ip.prefix_len(), ip.is_v6());
    network::set_up(d.bridge.name, true);
    for (const auto& r : d.routes) {
      const bool v6 = r.family == "ipv6";
      unsigned pfx = r.prefix.empty() ? (v6 ? 64 : 24) : static_cast<unsigned>(std::stoul(r.prefix));
      network::add_route(r.address, pfx, r.gateway, v6, r.metric.empty() ? 0 : static_cast<unsigned>(std::stoul(r.metric)));
    }
    if (d.forward.mode == "nat" || d.forward.mode == "route") {
      network::set_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
      if (any_v6(d)) network::set_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    }
    if (d.forward.mode != "open") {
      network::firewall_apply(d);
      fw = true;
    }
    if (network::needs_dnsmasq(d))
      network::dnsmasq_start(h_.opts.dnsmasq, d, network::DnsmasqFiles::in(dnsmasq_dir(), d.name));
  } catch (...) {
    if (fw) {
      try {
        network::firewall_remove(d);
      } catch (...) {
      }
    }
    if (bridge_made) {
      try {
        network::delete_link(d.bridge.name);
      } catch (...) {
      }
    }
    throw;
  }
}

void NetworkDriver::unplumb(const NetworkDef& d) {
  if (!d.managed_bridge()) return;
  network::dnsmasq_stop(network::DnsmasqFiles::in(dnsmasq_dir(), d.name));
  if (d.forward.mode != "open") {
    try {
      network::firewall_remove(d);
    } catch (const Error& e) {
      log("network '" + d.name + "': " + e.what());
    }
  }
  try {
    network::delete_link(d.bridge.name);
  } catch (const Error& e) {
    log("network '" + d.name + "': " + e.what());
  }
}

void NetworkDriver::refresh_after_restart(Net& n) {
  const NetworkDef& d = *n.live;
  if (!d.managed_bridge()) return;
  if (::if_nametoindex(d.bridge.name.c_str()) == 0) fail("bridge {} is gone; the network is inactive", d.bridge.name);
  // Rules may have been flushed meanwhile; replacing the table is idempotent.
  if (d.forward.mode != "open") network::firewall_apply(d);
  if (network::needs_dnsmasq(d)) {
    const auto f = network::DnsmasqFiles::in(dnsmasq_dir(), d.name);
    if (pid_t pid = network::dnsmasq_running(f)) {
      log("network '" + n.name + "' is active (dnsmasq pid " + std::to_string(pid) + ")");
    } else {
      network::dnsmasq_start(h_.opts.dnsmasq, d, f);
      log("network '" + n.name + "': dnsmasq restarted");
    }
  }
}

}  // namespace vireo::daemon
