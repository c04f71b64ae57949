#include "network/firewall.h"

#include <nftables/libnftables.h>

#include <memory>
#include <sstream>

#include "common/error.h"

namespace vireo::network {

std::string firewall_table(const NetworkDef& d) { return "vireo_" + d.bridge.name; }

std::string firewall_rules(const NetworkDef& d) {
  const std::string t = firewall_table(d), br = "\"" + d.bridge.name + "\"";
  const std::string& mode = d.forward.mode;
  std::ostringstream s;
  s << "table inet " << t << " {\n";
  // Forwarding.
  s << "  chain forward {\n    type filter hook forward priority filter; policy accept;\n";
  s << "    iifname " << br << " oifname " << br << " accept\n";
  for (const IpDef& ip : d.ips) {
    const std::string fam = ip.is_v6() ? "ip6" : "ip", net = cidr(ip);
    if (mode == "nat" && (!ip.is_v6() || d.forward.nat_ipv6 == "yes")) {
      s << "    iifname " << br << " " << fam << " saddr " << net << " accept\n";
      s << "    oifname " << br << " " << fam << " daddr " << net << " ct state related,established accept\n";
    } else if (mode == "route" || (mode == "nat" && ip.is_v6())) {
      s << "    iifname " << br << " " << fam << " saddr " << net << " accept\n";
      s << "    oifname " << br << " " << fam << " daddr " << net << " accept\n";
    }
  }
  if (mode != "open") {
    s << "    iifname " << br << " reject with icmpx type port-unreachable\n";
    s << "    oifname " << br << " reject with icmpx type port-unreachable\n";
  }
  s << "  }\n";
  if (mode == "nat") {
    s << "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
    std::string to_addr, to_port;
    if (!d.forward.nat_addr_start.empty())
      to_addr = d.forward.nat_addr_start + (d.forward.nat_addr_end.empty() || d.forward.nat_addr_end == d.forward.nat_addr_start ? "" : "-" + d.forward.nat_addr_end);
    const std::string ports = d.forward.nat_port_start.empty() ? "1024-65535" : d.forward.nat_port_start + "-" + d.forward.nat_port_end;
    for (const IpDef& ip : d.ips) {
      if (ip.is_v6() && d.forward.nat_ipv6 != "yes") continue;
      const std::string fam = ip.is_v6() ? "ip6" : "ip", net = cidr(ip);
      if (!ip.is_v6()) {
        // Multicast and broadcast stay local, as libvirt's rules do.
        s << "    ip saddr " << net << " ip daddr 224.0.0.0/24 return\n";
        s << "    ip saddr " << net << " ip daddr 255.255.255.255 return\n";
      }
      const std::string match = "    " + fam + " saddr " + net + " " + fam + " daddr != " + net;
      if (!to_addr.empty() && !ip.is_v6()) {
        s << match << " meta l4proto { tcp, udp } snat ip to " << to_addr << ":" << ports << "\n";
        s << match << " snat ip to " << to_addr << "\n";
      } else {
        s << match << " meta l4proto { tcp, udp } masquerade to :" << ports << "\n";
        s << match << " masquerade\n";
      }
    }
    s << "  }\n";
  }
  s << "}\n";
  return s.str();
}

std::string nft_run(const std::string& script) {
  std::unique_ptr<nft_ctx, decltype(&nft_ctx_free)> ctx(nft_ctx_new(NFT_CTX_DEFAULT), nft_ctx_free);
  if (!ctx) fail("nftables: cannot create a context");
  nft_ctx_buffer_output(ctx.get());
  nft_ctx_buffer_error(ctx.get());
  const int rc = nft_run_cmd_from_buffer(ctx.get(), script.c_str());
  const std::string out = nft_ctx_get_output_buffer(ctx.get());
  if (rc != 0) {
    std::string err = nft_ctx_get_error_buffer(ctx.get());
    const auto nl = err.find('\n');
    if (nl != std::string::npos) err.resize(nl);
    fail("nftables: {}", err.empty() ? "command failed" : err);
  }
  return out;
}

void firewall_apply(const NetworkDef& d) {
  // "add table" then "delete table" makes the delete succeed whether or not it existed; the whole
  // buffer is one transaction, so the old rules are replaced atomically.
  const std::string t = firewall_table(d);
  nft_run("add table inet " + t + "\ndelete table inet " + t + "\n" + firewall_rules(d));
}

void firewall_remove(const NetworkDef& d) {
  const std::string t = firewall_table(d);
  nft_run("add table inet " + t + "\ndelete table inet " + t + "\n");
}

}  // namespace vireo::network
