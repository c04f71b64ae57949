// Host network plumbing for <interface type='bridge'>: persistent tap devices enslaved to a bridge.
// ioctls only (TUNSETIFF/TUNSETPERSIST, SIOCSIFHWADDR/SIOCSIFFLAGS, SIOCBRADDIF); no `ip` subprocess.
#pragma once

#include <string>
#include <vector>

namespace vireo::daemon {

struct BridgeTap {
  std::string name;     // the tap's actual name
  bool created = false; // false: the tap existed before (left in place at teardown, as libvirt does)
  bool ovs = false;     // an Open vSwitch port (teardown also removes it from OVS's database)
};

// Creates (or opens an existing) tap `name` — a name, or a template such as "vnet%d" that the kernel
// fills in — with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, makes it persistent, gives it `guest_mac` with the
// first byte 0xfe (so the bridge never takes the guest's address), brings it up and adds it to `bridge`.
// Throws Error("bridge 'br0': no such device") etc.; a tap created here is removed again on failure.
BridgeTap attach_bridge_tap(const std::string& name, const std::string& bridge, const std::string& guest_mac);

struct PortSpec;
// The monitor's entry point for one port of NAME.bridges: a Linux-bridge port (attach_bridge_tap, then
// VLAN filtering when the port has VLANs) or an Open vSwitch port (the tap is added to the bridge
// through OVS's database, with tag/trunks and external_ids).
BridgeTap attach_port(const PortSpec& port);

// Removes an Open vSwitch port record (ovs-vsctl --if-exists del-port).
void ovs_del_port(const std::string& name);

// Removes a persistent tap (TUNSETPERSIST 0). False with `why` set if it cannot; a tap that no longer
// exists counts as removed.
bool delete_tap(const std::string& name, std::string* why = nullptr);

// The taps file: one created tap per line (DIR/NAME.taps): "NAME" or "NAME ovs".
std::vector<std::string> read_taps_file(const std::string& path);
// Deletes every tap listed in `path`, then the file. Returns the problems (one line each).
std::vector<std::string> delete_taps_in_file(const std::string& path);

}  // namespace vireo::daemon
