// vireo/network: nftables rules of a virtual network through libnftables (the nft library, no shell):
// one table `inet vireo_<bridge>` per active network, so a network's rules come and go as one unit.
//   nat:      forward guests' traffic out and replies back in; masquerade to other subnets
//   route:    forward both ways, no NAT
//   isolated: reject forwarding into or out of the bridge (guests still talk to each other and the host)
//   open:     no rules
#pragma once
#include <string>

#include "network/network.h"

namespace vireo::network {

std::string firewall_table(const NetworkDef& def);   // "vireo_virbr0"
std::string firewall_rules(const NetworkDef& def);   // the nft script for the network (for tests and logs)
void firewall_apply(const NetworkDef& def);          // replaces the network's table; Error on failure
void firewall_remove(const NetworkDef& def);         // no table is fine
// Runs an nft script; returns nft's output. Throws Error("nftables: <nft's first error line>").
std::string nft_run(const std::string& script);

}  // namespace vireo::network
