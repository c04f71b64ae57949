// vireo/network: one dnsmasq (Debian's) per virtual network for DHCP and DNS, as libvirt runs it: a
// generated config file, a hosts file for static DHCP hosts (re-read on SIGHUP), an addn-hosts file for
// <dns><host>, and dnsmasq's own lease file, which net-dhcp-leases reads.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "network/network.h"

namespace vireo::network {

struct DnsmasqFiles {
  std::string conf, pid, leases, hostsfile, addnhosts;
  static DnsmasqFiles in(const std::string& dir, const std::string& network);  // DIR/NETWORK.{conf,pid,...}
};

bool needs_dnsmasq(const NetworkDef& def);  // a managed bridge with an address (DNS) or DHCP
std::string dnsmasq_conf(const NetworkDef& def, const DnsmasqFiles& f);
std::string dnsmasq_hostsfile(const NetworkDef& def);  // "mac,ip,name" per static host
std::string dnsmasq_addnhosts(const NetworkDef& def);  // "ip name..." per <dns><host>

// Writes the files and starts dnsmasq (it daemonizes and writes its pid file). Throws Error with
// dnsmasq's own message ("dnsmasq: failed to create listening socket ...") when it does not start.
pid_t dnsmasq_start(const std::string& binary, const NetworkDef& def, const DnsmasqFiles& f);
// The pid of the dnsmasq serving this config if it still runs, else 0.
pid_t dnsmasq_running(const DnsmasqFiles& f);
void dnsmasq_stop(const DnsmasqFiles& f);
void dnsmasq_reload(const NetworkDef& def, const DnsmasqFiles& f);  // rewrite hosts files + SIGHUP

struct DhcpLease {
  long long expiry = 0;  // unix time; 0 = infinite
  std::string mac, ip, hostname, client_id;
  bool v6 = false;
};
std::vector<DhcpLease> read_leases(const std::string& path);

}  // namespace vireo::network
