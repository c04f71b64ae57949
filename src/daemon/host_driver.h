// vireod's host and statistics methods (read-only): hostname, nodeinfo, capabilities, sysinfo, and per
// domain domiflist, domblklist, vcpuinfo, domstats, domifstat, domblkstat. The data a virsh user gets from
// the same verbs, read on the daemon's host (so remote connections report the remote host).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/host.h"

namespace vireo::daemon {

class HostDriver : public Driver {
 public:
  explicit HostDriver(Host& host) : h_(host) {}
  void register_methods(MethodTable& table) override;
  void load() override {}

 private:
  Host& h_;
};

// Pieces with their inputs explicit, for tests.
nlohmann::json node_info(const std::string& proc, const std::string& sys);  // /proc, /sys
// <sysinfo type='smbios'> from a /sys/class/dmi/id directory (empty sections left out).
std::string sysinfo_xml(const std::string& dmi_dir);
std::string capabilities_xml(const nlohmann::json& node, const std::string& host_uuid, const std::string& vmm);
// libvirt's numeric reason for a state word and reason word ("shut off", "destroyed" -> 2).
int reason_number(const std::string& state, const std::string& reason);

}  // namespace vireo::daemon
