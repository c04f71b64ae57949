// vireo/net: tap devices for virtio-net: IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, optionally IFF_MULTI_QUEUE (one fd
// per queue pair), offload control (TUNSETOFFLOAD) and queue attach/detach (TUNSETQUEUE).
#pragma once
#include <string>
#include <vector>

#include "common/fd.h"

namespace vireo::net {

// TUN_F_* offload bits the guest can receive (linux/if_tun.h values).
inline constexpr unsigned kTunCsum = 0x01, kTunTso4 = 0x02, kTunTso6 = 0x04, kTunTsoEcn = 0x08, kTunUfo = 0x10;

class Tap {
 public:
  // Opens (creating it if it does not exist and we may) the tap `name`, `queues` fds (IFF_MULTI_QUEUE
  // when > 1), non-blocking, with a vnet header of `vnet_hdr_size` bytes (12 for virtio 1.x).
  // Throws Error("tap NAME: ...: operation not permitted") when not allowed.
  Tap(const std::string& name, unsigned queues, int vnet_hdr_size = 12);
  const std::string& name() const { return name_; }
  unsigned queues() const { return static_cast<unsigned>(fds_.size()); }
  int fd(unsigned q) const { return fds_.at(q).get(); }
  void set_offload(unsigned tun_flags);                // every queue (TUNSETOFFLOAD)
  void set_queue_enabled(unsigned q, bool enabled);    // multi-queue: attach/detach (TUNSETQUEUE)

  // True if this process can create tap devices here (for tests: skip otherwise), with the reason.
  static bool can_create(std::string* why);

 private:
  std::string name_;
  std::vector<UniqueFd> fds_;
  bool multi_queue_;
};

}  // namespace vireo::net
