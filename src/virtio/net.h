// vireo/virtio: virtio-net (5.1) on a tap device. Queue pairs rx/tx 0..N-1 map to tap queues (IFF_MULTI_QUEUE),
// then a control queue (MQ pairs, guest offloads, rx mode/MAC accepted). Frames carry the 12-byte
// virtio_net_hdr both ways; offloads the guest accepts are told to the tap with TUNSETOFFLOAD.
#pragma once
#include <array>
#include <memory>
#include <vector>

#include "net/tap.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

namespace net_bits {
inline constexpr int kFCsum = 0, kFGuestCsum = 1, kFCtrlGuestOffloads = 2, kFMtu = 3, kFMac = 5,
                     kFGuestTso4 = 7, kFGuestTso6 = 8, kFGuestEcn = 9, kFGuestUfo = 10, kFHostTso4 = 11,
                     kFHostTso6 = 12, kFHostEcn = 13, kFHostUfo = 14, kFMrgRxbuf = 15, kFStatus = 16,
                     kFCtrlVq = 17, kFCtrlRx = 18, kFCtrlVlan = 19, kFGuestAnnounce = 21, kFMq = 22,
                     kFCtrlMacAddr = 23;
inline constexpr uint32_t kHdrSize = 12;
inline constexpr uint16_t kStatusLinkUp = 1;
}  // namespace net_bits

class NetDevice : public VirtioDevice {
 public:
  NetDevice(GuestMemory& mem, std::string id, std::unique_ptr<net::Tap> tap, std::array<uint8_t, 6> mac);
  ~NetDevice() override;
  std::string type_name() const override { return "virtio-net"; }
  std::string details() const override;
  uint16_t pairs() const { return pairs_; }  // offered (max_virtqueue_pairs)
  uint16_t active_pairs() const {
    std::lock_guard lock(mu_);
    return active_pairs_;
  }

 protected:
  uint64_t features() const override;
  void process_queue(uint16_t q) override;
  void activate() override;
  void device_reset() override;
  void pause_io() override;
  // Snapshot (net_state in virtio_state_devices.cpp): active pairs and guest offloads; a frame waiting
  // for receive buffers is dropped (as a lost packet) and its held chains handed back.
  uint16_t held_chains(uint16_t q) const override;
  nlohmann::json save_device() override;
  void restore_device(JsonReader& r) override;

 private:
  void rx(uint16_t pair);
  void tx(uint16_t pair);
  void ctrl();
  void watch_tap(uint16_t pair, bool on);
  void set_active_pairs(uint16_t n);
  uint8_t handle_ctrl(uint8_t cls, uint8_t cmd, const std::vector<uint8_t>& data);
  void apply_guest_offloads(uint64_t guest_features);

  std::unique_ptr<net::Tap> tap_;
  std::array<uint8_t, 6> mac_;
  uint16_t pairs_;
  uint16_t active_pairs_ = 1;
  uint64_t guest_offloads_ = 0;  // last applied to the tap
  std::vector<bool> watching_;
  std::vector<std::vector<uint8_t>> pending_;  // a frame read from the tap that did not fit yet (per pair)
  std::vector<std::vector<DescChain>> held_;   // receive chains popped for the pending frame (per pair)
  std::vector<uint8_t> rxbuf_;
};

}  // namespace vireo::virtio
