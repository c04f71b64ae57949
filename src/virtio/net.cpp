#include "virtio/net.h"

#include <sys/uio.h>

#include <cerrno>
#include <cstring>

namespace vireo::virtio {

using namespace net_bits;

namespace {
constexpr uint8_t kCtrlRx = 0, kCtrlMac = 1, kCtrlMq = 4, kCtrlGuestOffloads = 5;
constexpr uint8_t kAckOk = 0, kAckErr = 1;
constexpr size_t kMaxFrame = kHdrSize + 65550;  // 64 KiB GSO frame + Ethernet/VLAN headers
}  // namespace

NetDevice::NetDevice(GuestMemory& mem, std::string id, std::unique_ptr<net::Tap> tap, std::array<uint8_t, 6> mac)
    : VirtioDevice(mem, std::move(id), kTypeNet, static_cast<uint16_t>(2 * tap->queues() + 1), 256),
      tap_(std::move(tap)),
      mac_(mac),
      pairs_(static_cast<uint16_t>(tap_->queues())),
      watching_(pairs_, false),
      pending_(pairs_),
      held_(pairs_),
      rxbuf_(kMaxFrame) {
  config_.assign(12, 0);
  std::memcpy(config_.data(), mac_.data(), 6);
  uint16_t status = kStatusLinkUp, max_pairs = pairs_;
  std::memcpy(config_.data() + 6, &status, 2);
  std::memcpy(config_.data() + 8, &max_pairs, 2);
  for (uint16_t p = 1; p < pairs_; ++p) tap_->set_queue_enabled(p, false);
}

NetDevice::~NetDevice() { shutdown(); }

std::string NetDevice::details() const {
  return fmt::format("tap={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} queues={}", tap_->name(), mac_[0], mac_[1],
                     mac_[2], mac_[3], mac_[4], mac_[5], pairs_);
}

uint64_t NetDevice::features() const {
  uint64_t f = bit(kFCsum) | bit(kFGuestCsum) | bit(kFCtrlGuestOffloads) | bit(kFMac) | bit(kFGuestTso4) |
               bit(kFGuestTso6) | bit(kFGuestEcn) | bit(kFHostTso4) | bit(kFHostTso6) | bit(kFHostEcn) |
               bit(kFMrgRxbuf) | bit(kFStatus) | bit(kFCtrlVq) | bit(kFCtrlRx) | bit(kFCtrlMacAddr);
  if (pairs_ > 1) f |= bit(kFMq);
  return f;
}

void NetDevice::apply_guest_offloads(uint64_t g) {
  guest_offloads_ = g;
  unsigned tun = 0;
  if (g & bit(kFGuestCsum)) {
    tun |= net::kTunCsum;
    if (g & bit(kFGuestTso4)) tun |= net::kTunTso4;
    if (g & bit(kFGuestTso6)) tun |= net::kTunTso6;
    if (g & bit(kFGuestEcn)) tun |= net::kTunTsoEcn;
  }
  tap_->set_offload(tun);
}

void NetDevice::activate() {
  uint64_t g = 0;
  for (int b : {kFGuestCsum, kFGuestTso4, kFGuestTso6, kFGuestEcn})
    if (negotiated(b)) g |= bit(b);
  apply_guest_offloads(g);
  set_active_pairs(1);
}

void NetDevice::device_reset() {
  for (uint16_t p = 0; p < pairs_; ++p) {
    watch_tap(p, false);
    pending_[p].clear();
    held_[p].clear();
  }
  try {
    tap_->set_offload(0);
  } catch (const Error&) {
  }
}

void NetDevice::pause_io() {
  // Level-triggered tap fds would wake the device thread for nothing; resume() runs rx again, which re-arms.
  for (uint16_t p = 0; p < pairs_; ++p) watch_tap(p, false);
}

void NetDevice::set_active_pairs(uint16_t n) {
  active_pairs_ = n;
  for (uint16_t p = 0; p < pairs_; ++p) {
    tap_->set_queue_enabled(p, p < n);
    if (p >= n) watch_tap(p, false);
  }
  for (uint16_t p = 0; p < n; ++p) rx(p);
}

void NetDevice::watch_tap(uint16_t pair, bool on) {
  if (watching_[pair] == on) return;
  int fd = tap_->fd(pair);
  if (on) {
    loop_.add(fd, EPOLLIN, [this, pair](uint32_t) {
      std::lock_guard lock(mu_);
      if (!active()) return;
      try {
        rx(pair);
      } catch (const std::exception& e) {
        fail_device(e.what());
      }
    });
  } else {
    loop_.remove(fd);
  }
  watching_[pair] = on;
}

void NetDevice::process_queue(uint16_t q) {
  if (q == 2 * pairs_) return ctrl();
  uint16_t pair = q / 2;
  if (q % 2 == 0) rx(pair);
  else tx(pair);
}

void NetDevice::rx(uint16_t pair) {
  Virtqueue* vq = queue(static_cast<uint16_t>(2 * pair));
  if (!vq || pair >= active_pairs_) return;
  const bool mrg = negotiated(kFMrgRxbuf);
  bool notify_needed = false;
  for (;;) {
    std::vector<uint8_t>& frame = pending_[pair];
    if (frame.empty()) {
      ssize_t n = ::read(tap_->fd(pair), rxbuf_.data(), rxbuf_.size());
      if (n <= 0) {
        watch_tap(pair, true);  // wait for the next frame
        break;
      }
      frame.assign(rxbuf_.begin(), rxbuf_.begin() + n);
    }
    // Place the frame into one buffer, or several with MRG_RXBUF (num_buffers in the header).
    std::vector<DescChain> used;
    uint64_t placed = 0;
    bool out_of_buffers = false;
    std::vector<DescChain>& held = held_[pair];
    while (placed < frame.size()) {
      std::optional<DescChain> chain;
      if (used.size() < held.size()) {
        chain = held[used.size()];
      } else {
        chain = vq->pop();
        if (!chain) {
          out_of_buffers = true;
          break;
        }
        if (chain->writable_bytes < kHdrSize)
          throw QueueError("virtio-net: receive buffer smaller than the header");
        held.push_back(*chain);
      }
      used.push_back(std::move(*chain));
      placed += used.back().writable_bytes;
      if (!mrg) break;
    }
    if (out_of_buffers) {
      // Not enough room yet: keep the chains popped so far and the frame, and wait for more buffers.
      if (!vq->enable_notifications()) {
        watch_tap(pair, false);
        break;
      }
      continue;
    }
    held.clear();
    if (!mrg && used[0].writable_bytes < frame.size()) {
      // The guest's buffer cannot hold this frame: drop it (as a NIC would), return the buffer.
      frame.clear();
      complete(static_cast<uint16_t>(2 * pair), used[0], 0);
      continue;
    }
    uint16_t nbuf = static_cast<uint16_t>(used.size());
    std::memcpy(frame.data() + 10, &nbuf, 2);  // num_buffers (the tap leaves it unset)
    uint64_t off = 0;
    for (auto& c : used) {
      size_t n = std::min<uint64_t>(c.writable_bytes, frame.size() - off);
      copy_to_segments(mem_, c.writable, 0, std::span<const uint8_t>(frame.data() + off, n));
      off += n;
      vq->push(c, static_cast<uint32_t>(n));
    }
    notify_needed = true;
    frame.clear();
  }
  if (notify_needed) notify_queue(static_cast<uint16_t>(2 * pair));
}

void NetDevice::tx(uint16_t pair) {
  Virtqueue* vq = queue(static_cast<uint16_t>(2 * pair + 1));
  if (!vq) return;
  std::vector<iovec> iov;
  do {
    vq->disable_notifications();
    while (auto chain = vq->pop()) {
      if (chain->readable_bytes < kHdrSize || chain->readable_bytes > kMaxFrame)
        throw QueueError(fmt::format("virtio-net: transmit buffer of {} bytes", chain->readable_bytes));
      iov.clear();
      for (const auto& s : chain->readable) {
        auto span = mem_.slice(s.addr, s.len);
        if (!span) throw QueueError("virtio-net: buffer outside guest RAM");
        iov.push_back({span->data(), span->size()});
      }
      // A full tap queue drops the frame, as a NIC would.
      (void)::writev(tap_->fd(pair), iov.data(), static_cast<int>(iov.size()));
      complete(static_cast<uint16_t>(2 * pair + 1), *chain, 0);
    }
  } while (vq->enable_notifications());
}

uint8_t NetDevice::handle_ctrl(uint8_t cls, uint8_t cmd, const std::vector<uint8_t>& data) {
  switch (cls) {
    case kCtrlMq:
      if (cmd == 0 && data.size() >= 2 && negotiated(kFMq)) {
        uint16_t n;
        std::memcpy(&n, data.data(), 2);
        if (n < 1 || n > pairs_) return kAckErr;
        set_active_pairs(n);
        return kAckOk;
      }
      return kAckErr;
    case kCtrlGuestOffloads:
      if (cmd == 0 && data.size() >= 8) {
        uint64_t g;
        std::memcpy(&g, data.data(), 8);
        if (g & ~(bit(kFGuestCsum) | bit(kFGuestTso4) | bit(kFGuestTso6) | bit(kFGuestEcn) | bit(kFGuestUfo)))
          return kAckErr;
        apply_guest_offloads(g);
        return kAckOk;
      }
      return kAckErr;
    case kCtrlRx:   // promiscuous/allmulti: the tap delivers everything anyway
    case kCtrlMac:  // MAC filter tables / address: accepted, no filtering
      return kAckOk;
    default:
      return kAckErr;
  }
}

void NetDevice::ctrl() {
  Virtqueue* vq = queue(static_cast<uint16_t>(2 * pairs_));
  if (!vq) return;
  do {
    vq->disable_notifications();
    while (auto chain = vq->pop()) {
      if (chain->readable_bytes < 2 || chain->writable_bytes < 1 || chain->readable_bytes > 4096)
        throw QueueError("virtio-net: malformed control command");
      std::vector<uint8_t> cmd(chain->readable_bytes);
      copy_from_segments(mem_, chain->readable, 0, cmd);
      std::vector<uint8_t> data(cmd.begin() + 2, cmd.end());
      uint8_t ack = handle_ctrl(cmd[0], cmd[1], data);
      copy_to_segments(mem_, chain->writable, 0, std::span<const uint8_t>(&ack, 1));
      complete(static_cast<uint16_t>(2 * pairs_), *chain, 1);
    }
  } while (vq->enable_notifications());
}

}  // namespace vireo::virtio
