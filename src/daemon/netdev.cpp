#include "daemon/netdev.h"

#include <fcntl.h>
#include <net/if.h>
#include <linux/if_arp.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "common/fd.h"
#include "daemon/domain_devices.h"
#include "daemon/util.h"
#include "network/netlink.h"

extern char** environ;

namespace vireo::daemon {

namespace {

constexpr short kTapFlags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;

bool iface_exists(const std::string& name) {
  return !name.empty() && name.find('%') == std::string::npos && ::if_nametoindex(name.c_str()) != 0;
}

void fill_name(ifreq& ifr, const std::string& name) {
  std::memset(ifr.ifr_name, 0, IFNAMSIZ);
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), size_t(IFNAMSIZ - 1)));
}

bool parse_mac(const std::string& text, unsigned char out[6]) {
  unsigned v[6];
  char tail;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
    return false;
  for (int i = 0; i < 6; ++i) out[i] = static_cast<unsigned char>(v[i]);
  return true;
}

}  // namespace

BridgeTap attach_bridge_tap(const std::string& name, const std::string& bridge, const std::string& guest_mac) {
  if (name.empty() || name.size() >= IFNAMSIZ) fail("tap '{}': interface names are 1-{} characters", name, IFNAMSIZ - 1);
  if (bridge.empty() || bridge.size() >= IFNAMSIZ) fail("bridge '{}': invalid interface name", bridge);
  const unsigned br_index = ::if_nametoindex(bridge.c_str());
  if (br_index == 0) fail("bridge '{}': {}", bridge, errno == ENODEV ? "no such device" : std::strerror(errno));
  struct stat st{};
  const std::string br_dir = "/sys/class/net/" + bridge + "/bridge";
  if (::stat(br_dir.c_str(), &st) < 0) fail("bridge '{}': not a bridge device", bridge);

  BridgeTap t;
  t.created = !iface_exists(name);
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) throw_errno("tap " + name + ": open /dev/net/tun");
  ifreq ifr{};
  fill_name(ifr, name);
  ifr.ifr_flags = kTapFlags;
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) < 0) throw_errno("tap " + name + ": TUNSETIFF");
  t.name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  auto cleanup_fail = [&](const std::string& what, int err) {
    if (t.created) (void)::ioctl(tun.get(), TUNSETPERSIST, 0);
    fail("{}", errno_message("tap " + t.name + ": " + what, err));
  };
  if (::ioctl(tun.get(), TUNSETPERSIST, 1) < 0) cleanup_fail("TUNSETPERSIST", errno);

  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) cleanup_fail("socket", errno);
  unsigned char mac[6];
  if (t.created && parse_mac(guest_mac, mac)) {
    ifreq hw{};
    fill_name(hw, t.name);
    hw.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    mac[0] = 0xfe;
    std::memcpy(hw.ifr_hwaddr.sa_data, mac, 6);
    if (::ioctl(sock.get(), SIOCSIFHWADDR, &hw) < 0) cleanup_fail("set MAC address", errno);
  }
  ifreq fl{};
  fill_name(fl, t.name);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &fl) < 0) cleanup_fail("get flags", errno);
  fl.ifr_flags |= IFF_UP;
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &fl) < 0) cleanup_fail("set up", errno);
  ifreq br{};
  fill_name(br, bridge);
  br.ifr_ifindex = static_cast<int>(::if_nametoindex(t.name.c_str()));
  if (br.ifr_ifindex == 0 || ::ioctl(sock.get(), SIOCBRADDIF, &br) < 0) {
    const int e = errno;
    if (t.created) (void)::ioctl(tun.get(), TUNSETPERSIST, 0);
    fail("{}", errno_message("add tap " + t.name + " to bridge '" + bridge + "'", e));
  }
  return t;  // closing `tun` leaves the persistent tap for vireo-vmm to open
}

namespace {

// ovs-vsctl talks to OVS's database (ovsdb-server); vireod runs it the way libvirt does, with a timeout
// so a missing ovsdb-server is an error rather than a hang.
void ovs_vsctl(std::vector<std::string> args) {
  args.insert(args.begin(), {"ovs-vsctl", "--timeout=5"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int err[2];
  if (::pipe2(err, O_CLOEXEC) < 0) throw_errno("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  pid_t pid;
  const int rc = ::posix_spawnp(&pid, "ovs-vsctl", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(err[1]);
  if (rc != 0) {
    ::close(err[0]);
    throw_errno("run ovs-vsctl", rc);
  }
  std::string msg;
  char buf[1024];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) msg.append(buf, static_cast<size_t>(n));
  ::close(err[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    if (const auto nl = msg.rfind('\n'); nl != std::string::npos) msg = msg.substr(nl + 1);
    fail("{}", msg.empty() ? "ovs-vsctl failed" : msg);
  }
}

std::string join(const std::vector<unsigned>& v) {
  std::string o;
  for (unsigned x : v) o += (o.empty() ? "" : ",") + std::to_string(x);
  return o;
}

// A plain tap (no bridge) for an Open vSwitch port: persistent, fe: MAC, up.
BridgeTap make_tap(const std::string& name, const std::string& guest_mac);

}  // namespace

BridgeTap attach_port(const PortSpec& p) {
  if (!p.ovs) {
    BridgeTap t = attach_bridge_tap(p.tap, p.bridge, p.mac);
    if (!p.vlans.empty()) {
      try {
        // Linux bridge VLANs: the bridge filters; an access port is untagged in its VLAN (PVID), a trunk
        // carries its VLANs tagged (and its native one untagged).
        network::set_sysctl("/sys/class/net/" + p.bridge + "/bridge/vlan_filtering", "1");
        network::bridge_vlan_del(t.name, 1);
        if (!p.trunk) {
          network::bridge_vlan_add(t.name, p.vlans[0], true, true);
        } else {
          for (unsigned v : p.vlans) {
            const bool native = v == p.native_vlan && p.native_mode == "untagged";
            network::bridge_vlan_add(t.name, v, native, native);
          }
        }
      } catch (const Error& e) {
        if (t.created) delete_tap(t.name);
        fail("bridge '{}' VLAN filtering: {}", p.bridge, e.what());
      }
    }
    return t;
  }
  BridgeTap t = make_tap(p.tap, p.mac);
  std::vector<std::string> a = {"--", "--if-exists", "del-port", t.name, "--", "add-port", p.bridge, t.name};
  if (!p.vlans.empty()) {
    if (!p.trunk) {
      a.push_back("tag=" + std::to_string(p.vlans[0]));
    } else {
      a.push_back("trunks=" + join(p.vlans));
      if (p.native_vlan) {
        a.push_back("tag=" + std::to_string(p.native_vlan));
        a.push_back(std::string("vlan_mode=") + (p.native_mode == "tagged" ? "native-tagged" : "native-untagged"));
      }
    }
  }
  a.insert(a.end(), {"--", "set", "Interface", t.name, "external-ids:attached-mac=" + p.mac});
  if (!p.interfaceid.empty()) a.insert(a.end(), {"--", "set", "Interface", t.name, "external-ids:iface-id=" + p.interfaceid});
  a.insert(a.end(), {"--", "set", "Interface", t.name, "external-ids:iface-status=active"});
  try {
    ovs_vsctl(a);
  } catch (const Error& e) {
    if (t.created) delete_tap(t.name);
    fail("add tap {} to Open vSwitch bridge '{}': {}", t.name, p.bridge, e.what());
  }
  t.ovs = true;
  return t;
}

void ovs_del_port(const std::string& name) { ovs_vsctl({"--", "--if-exists", "del-port", name}); }

namespace {
BridgeTap make_tap(const std::string& name, const std::string& guest_mac) {
  if (name.empty() || name.size() >= IFNAMSIZ) fail("tap '{}': interface names are 1-{} characters", name, IFNAMSIZ - 1);
  BridgeTap t;
  t.created = !iface_exists(name);
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) throw_errno("tap " + name + ": open /dev/net/tun");
  ifreq ifr{};
  fill_name(ifr, name);
  ifr.ifr_flags = kTapFlags;
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) < 0) throw_errno("tap " + name + ": TUNSETIFF");
  t.name.assign(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
  if (::ioctl(tun.get(), TUNSETPERSIST, 1) < 0) throw_errno("tap " + t.name + ": TUNSETPERSIST");
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  unsigned char mac[6];
  if (t.created && parse_mac(guest_mac, mac)) {
    ifreq hw{};
    fill_name(hw, t.name);
    hw.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    mac[0] = 0xfe;
    std::memcpy(hw.ifr_hwaddr.sa_data, mac, 6);
    (void)::ioctl(sock.get(), SIOCSIFHWADDR, &hw);
  }
  ifreq fl{};
  fill_name(fl, t.name);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &fl) == 0) {
    fl.ifr_flags |= IFF_UP;
    (void)::ioctl(sock.get(), SIOCSIFFLAGS, &fl);
  }
  return t;
}
}  // namespace

bool delete_tap(const std::string& name, std::string* why) {
  if (!iface_exists(name)) return true;
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) {
    if (why) *why = errno_message("tap " + name + ": open /dev/net/tun", errno);
    return false;
  }
  ifreq ifr{};
  fill_name(ifr, name);
  ifr.ifr_flags = kTapFlags;
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) < 0 || ::ioctl(tun.get(), TUNSETPERSIST, 0) < 0) {
    if (why) *why = errno_message("delete tap " + name, errno);
    return false;
  }
  return true;  // the tap goes away when `tun` closes
}

std::vector<std::string> read_taps_file(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(try_read_file(path).value_or(""));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::vector<std::string> delete_taps_in_file(const std::string& path) {
  std::vector<std::string> problems;
  for (const std::string& line : read_taps_file(path)) {
    // "NAME" or "NAME ovs" (an Open vSwitch port: its database record goes too).
    const std::string t = line.substr(0, line.find(' '));
    if (line.size() > t.size() && line.substr(t.size() + 1) == "ovs") {
      try {
        ovs_del_port(t);
      } catch (const Error& e) {
        problems.push_back(e.what());
      }
    }
    std::string why;
    if (!delete_tap(t, &why)) problems.push_back(why);
  }
  if (problems.empty()) ::unlink(path.c_str());
  return problems;
}

}  // namespace vireo::daemon
