#include "daemon/netdev.h"

#include <fcntl.h>
#include <net/if.h>
#include <linux/if_arp.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "common/fd.h"
#include "daemon/domain_devices.h"
#include "daemon/util.h"

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

BridgeTap attach_port(const PortSpec& p) { return attach_bridge_tap(p.tap, p.bridge, p.mac); }

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
  for (const std::string& t : read_taps_file(path)) {
    std::string why;
    if (!delete_tap(t, &why)) problems.push_back(why);
  }
  if (problems.empty()) ::unlink(path.c_str());
  return problems;
}

}  // namespace vireo::daemon
