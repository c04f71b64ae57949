// virtio-net on a real tap: frames the guest transmits appear on the host interface (captured with an
// AF_PACKET socket), and frames sent to the interface land in the guest's receive buffers. Skips where tap
// devices cannot be created.
#include "virtio/net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/tap.h"
#include "unit/virtio/test_driver.h"
#include "virtio/virtio_mmio.h"

using namespace vireo;
using namespace vireo::virtio;
using namespace vireo::virtio::testing;

namespace {

constexpr uint64_t kBase = 0xD000'0000, kRing = 0x100000, kBuf = 0x200000;
constexpr uint16_t kEtherType = 0x88b5;  // IEEE local experimental

std::vector<uint8_t> frame(const std::array<uint8_t, 6>& dst, const std::array<uint8_t, 6>& src, const std::string& payload) {
  std::vector<uint8_t> f(dst.begin(), dst.end());
  f.insert(f.end(), src.begin(), src.end());
  f.push_back(kEtherType >> 8);
  f.push_back(kEtherType & 0xff);
  f.insert(f.end(), payload.begin(), payload.end());
  f.resize(std::max<size_t>(f.size(), 60), 0);
  return f;
}

TEST(VirtioNet, TapExchange) {
  std::string why;
  if (!net::Tap::can_create(&why)) GTEST_SKIP() << "tap creation not permitted here: " << why;
  std::string name = "vireo-t" + std::to_string(::getpid() % 100000);
  const std::array<uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x99};
  FakeHooks h;
  auto tap = std::make_unique<net::Tap>(name, 1);
  auto dev = std::make_shared<NetDevice>(h.memory(), "net0", std::move(tap), mac);
  auto mmio = std::make_shared<VirtioMmioDevice>(h, dev, kBase);
  h.mmio_bus().insert(kBase, VirtioMmioDevice::kWindowSize, mmio);
  dev->start();
  MmioDriver d(h, kBase);
  EXPECT_EQ(d.reg(0x008), kTypeNet);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(d.config_read(i, 1), mac[i]);
  EXPECT_EQ(d.config_read(6, 2), net_bits::kStatusLinkUp);
  EXPECT_EQ(d.config_read(8, 2), 1u);  // max_virtqueue_pairs
  GuestRing rx(h.memory(), kRing, 16), tx(h.memory(), kRing + 0x10000, 16), ctrl(h.memory(), kRing + 0x20000, 16);
  uint64_t want = bit(kFVersion1) | bit(kFEventIdx) | bit(net_bits::kFMac) | bit(net_bits::kFStatus) |
                  bit(net_bits::kFMrgRxbuf) | bit(net_bits::kFCtrlVq) | bit(net_bits::kFCsum) |
                  bit(net_bits::kFGuestCsum) | bit(net_bits::kFCtrlGuestOffloads);
  ASSERT_TRUE(d.init(want, {&rx, &tx, &ctrl}) & kStatusDriverOk);

  // Host side: interface up (no IPv6 chatter), a packet socket on it.
  ASSERT_EQ(std::system(("sysctl -qw net.ipv6.conf." + name + ".disable_ipv6=1 2>/dev/null; ip link set dev " + name + " up").c_str()), 0);
  int ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
  ASSERT_GT(ifindex, 0);
  int ps = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
  ASSERT_GE(ps, 0);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(kEtherType);
  sll.sll_ifindex = ifindex;
  ASSERT_EQ(::bind(ps, reinterpret_cast<sockaddr*>(&sll), sizeof sll), 0);

  // Guest -> host: vnet header (no offload) + frame, split over two descriptors.
  const std::array<uint8_t, 6> host_mac{0x02, 0, 0, 0, 0, 1};
  auto out = frame(host_mac, mac, "vireo guest to host");
  std::vector<uint8_t> hdr(net_bits::kHdrSize, 0);
  h.memory().write(kBuf, hdr);
  h.memory().write(kBuf + 0x100, out);
  tx.set_desc(0, kBuf, net_bits::kHdrSize, kDescFNext, 1);
  tx.set_desc(1, kBuf + 0x100, static_cast<uint32_t>(out.size()), 0);
  tx.publish(0);
  d.notify(1);
  pollfd p{ps, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1) << "no frame on the tap";
  std::vector<uint8_t> got(2048);
  ssize_t n = ::recv(ps, got.data(), got.size(), 0);
  ASSERT_GE(n, 14);
  got.resize(static_cast<size_t>(n));
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 14 + 19), std::vector<uint8_t>(out.begin(), out.begin() + 33));
  ASSERT_TRUE(FakeHooks::wait_for([&] { return tx.used_idx() == 1; }));

  // Host -> guest: post receive buffers, send a frame to the interface.
  for (uint16_t i = 0; i < 4; ++i) {
    rx.set_desc(i, kBuf + 0x10000 + i * 0x1000, 2048, kDescFWrite);
    rx.publish(i);
  }
  d.notify(0);
  auto in = frame(mac, host_mac, "vireo host to guest");
  sockaddr_ll to = sll;
  to.sll_halen = 6;
  std::memcpy(to.sll_addr, mac.data(), 6);
  ASSERT_EQ(::sendto(ps, in.data(), in.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to), static_cast<ssize_t>(in.size()));
  ASSERT_TRUE(FakeHooks::wait_for([&] { return rx.used_idx() >= 1; })) << "no frame reached the guest";
  auto u = rx.used(0);
  EXPECT_EQ(u.len, net_bits::kHdrSize + in.size());
  uint64_t buf = kBuf + 0x10000 + u.id * 0x1000;
  EXPECT_EQ(h.memory().read_obj<uint16_t>(buf + 10), 1);  // num_buffers
  std::vector<uint8_t> rxf(in.size());
  h.memory().read(buf + net_bits::kHdrSize, rxf);
  EXPECT_EQ(rxf, in);

  // Control queue: GUEST_OFFLOADS_SET(csum) is accepted, an unknown class is refused.
  auto ctrl_cmd = [&](std::vector<uint8_t> cmd) {
    h.memory().write(kBuf + 0x30000, cmd);
    h.memory().write_obj<uint8_t>(kBuf + 0x31000, 0xee);
    uint16_t before = ctrl.used_idx();
    ctrl.set_desc(0, kBuf + 0x30000, static_cast<uint32_t>(cmd.size()), kDescFNext, 1);
    ctrl.set_desc(1, kBuf + 0x31000, 1, kDescFWrite);
    ctrl.publish(0);
    d.notify(2);
    EXPECT_TRUE(FakeHooks::wait_for([&] { return ctrl.used_idx() != before; }));
    return h.memory().read_obj<uint8_t>(kBuf + 0x31000);
  };
  EXPECT_EQ(ctrl_cmd({5, 0, 2, 0, 0, 0, 0, 0, 0, 0}), 0);
  EXPECT_EQ(ctrl_cmd({77, 0}), 1);
  EXPECT_FALSE(dev->broken());
  ::close(ps);
  h.mmio_bus().remove(kBase);
  mmio.reset();
  dev.reset();
}

TEST(VirtioNet, MultiQueue) {
  std::string why;
  if (!net::Tap::can_create(&why)) GTEST_SKIP() << "tap creation not permitted here: " << why;
  std::string name = "vireo-m" + std::to_string(::getpid() % 100000);
  const std::array<uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x9a};
  FakeHooks h;
  auto dev = std::make_shared<NetDevice>(h.memory(), "net0", std::make_unique<net::Tap>(name, 2), mac);
  auto mmio = std::make_shared<VirtioMmioDevice>(h, dev, kBase);
  h.mmio_bus().insert(kBase, VirtioMmioDevice::kWindowSize, mmio);
  dev->start();
  MmioDriver d(h, kBase);
  EXPECT_TRUE(d.device_features() & bit(net_bits::kFMq));
  EXPECT_EQ(d.config_read(8, 2), 2u);  // max_virtqueue_pairs
  EXPECT_EQ(d.queue_max(4), 256);     // control queue after 2 pairs
  EXPECT_EQ(d.queue_max(5), 0);
  std::vector<std::unique_ptr<GuestRing>> rings;
  std::vector<GuestRing*> ptrs;
  for (int i = 0; i < 5; ++i) {
    rings.push_back(std::make_unique<GuestRing>(h.memory(), kRing + 0x10000ull * i, 16));
    ptrs.push_back(rings.back().get());
  }
  uint64_t want = bit(kFVersion1) | bit(net_bits::kFMac) | bit(net_bits::kFCtrlVq) | bit(net_bits::kFMq);
  ASSERT_TRUE(d.init(want, ptrs) & kStatusDriverOk);
  GuestRing& ctrl = *rings[4];
  auto ctrl_cmd = [&](std::vector<uint8_t> cmd) {
    h.memory().write(kBuf + 0x30000, cmd);
    uint16_t before = ctrl.used_idx();
    ctrl.set_desc(0, kBuf + 0x30000, static_cast<uint32_t>(cmd.size()), kDescFNext, 1);
    ctrl.set_desc(1, kBuf + 0x31000, 1, kDescFWrite);
    ctrl.publish(0);
    d.notify(4);
    EXPECT_TRUE(FakeHooks::wait_for([&] { return ctrl.used_idx() != before; }));
    return h.memory().read_obj<uint8_t>(kBuf + 0x31000);
  };
  EXPECT_EQ(dev->active_pairs(), 1);     // until the driver asks for more
  EXPECT_EQ(ctrl_cmd({4, 0, 2, 0}), 0);  // VQ_PAIRS_SET 2
  EXPECT_EQ(dev->active_pairs(), 2);
  EXPECT_EQ(ctrl_cmd({4, 0, 3, 0}), 1);  // more than offered
  EXPECT_EQ(ctrl_cmd({4, 0, 0, 0}), 1);  // zero
  EXPECT_EQ(dev->active_pairs(), 2);
  // Transmit on the second pair's tx queue (3): the frame reaches the interface.
  ASSERT_EQ(std::system(("sysctl -qw net.ipv6.conf." + name + ".disable_ipv6=1 2>/dev/null; ip link set dev " + name + " up").c_str()), 0);
  int ps = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kEtherType));
  ASSERT_GE(ps, 0);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(kEtherType);
  sll.sll_ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
  ASSERT_EQ(::bind(ps, reinterpret_cast<sockaddr*>(&sll), sizeof sll), 0);
  auto out = frame({0x02, 0, 0, 0, 0, 2}, mac, "second queue pair");
  std::vector<uint8_t> pkt(net_bits::kHdrSize, 0);
  pkt.insert(pkt.end(), out.begin(), out.end());
  h.memory().write(kBuf, pkt);
  rings[3]->set_desc(0, kBuf, static_cast<uint32_t>(pkt.size()), 0);
  rings[3]->publish(0);
  d.notify(3);
  pollfd p{ps, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1);
  std::vector<uint8_t> got(2048);
  ssize_t n = ::recv(ps, got.data(), got.size(), 0);
  ASSERT_GE(n, 31);
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + 31, got.begin()));
  ::close(ps);
  h.mmio_bus().remove(kBase);
  mmio.reset();
  dev.reset();
}

TEST(VirtioNet, TapNameErrors) {
  EXPECT_THROW(net::Tap("", 1), Error);
  EXPECT_THROW(net::Tap("this-name-is-too-long", 1), Error);
  EXPECT_THROW(net::Tap("ok", 0), Error);
}

}  // namespace
