#include "net/tap.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace vireo::net {

Tap::Tap(const std::string& name, unsigned queues, int vnet_hdr_size) : name_(name), multi_queue_(queues > 1) {
  if (name.empty() || name.size() >= IFNAMSIZ) fail("tap '{}': interface names are 1-{} characters", name, IFNAMSIZ - 1);
  if (queues == 0 || queues > 256) fail("tap {}: {} queues (1-256 allowed)", name, queues);
  for (unsigned q = 0; q < queues; ++q) {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd) throw_errno("tap " + name + ": open /dev/net/tun");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue_ ? IFF_MULTI_QUEUE : 0);
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) throw_errno("tap " + name + ": TUNSETIFF");
    if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &vnet_hdr_size) < 0) throw_errno("tap " + name + ": TUNSETVNETHDRSZ");
    fds_.push_back(std::move(fd));
  }
  set_offload(0);
}

void Tap::set_offload(unsigned tun_flags) {
  for (auto& fd : fds_)
    if (::ioctl(fd.get(), TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags)) < 0)
      throw_errno("tap " + name_ + ": TUNSETOFFLOAD");
}

void Tap::set_queue_enabled(unsigned q, bool enabled) {
  if (!multi_queue_ || q >= fds_.size()) return;
  ifreq ifr{};
  ifr.ifr_flags = enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  if (::ioctl(fds_[q].get(), TUNSETQUEUE, &ifr) < 0 && errno != EINVAL)
    throw_errno("tap " + name_ + ": TUNSETQUEUE");
}

bool Tap::can_create(std::string* why) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) {
    if (why) *why = errno_message("open /dev/net/tun", errno);
    return false;
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "vireoprobe%d", IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) {
    if (why) *why = errno_message("TUNSETIFF", errno);
    return false;
  }
  return true;  // the probe tap disappears with the fd (not persistent)
}

}  // namespace vireo::net
