// rng, console and balloon through the virtio-mmio transport; create_virtio_devices.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "unit/virtio/test_driver.h"
#include "virtio/balloon.h"
#include "virtio/console.h"
#include "virtio/rng.h"
#include "config/flags.h"
#include "virtio/virtio_devices.h"
#include "virtio/virtio_mmio.h"

using namespace vireo;
using namespace vireo::virtio;
using namespace vireo::virtio::testing;

namespace {

constexpr uint64_t kBase = 0xD000'0000;
constexpr uint64_t kRing = 0x100000, kBuf = 0x200000;
constexpr uint64_t kModern = bit(kFVersion1) | bit(kFEventIdx) | bit(kFIndirectDesc);

class MmioRig {
 public:
  template <typename Make>
  explicit MmioRig(Make make) {
    dev = make(h.memory());
    mmio = std::make_shared<VirtioMmioDevice>(h, dev, kBase);
    h.mmio_bus().insert(kBase, VirtioMmioDevice::kWindowSize, mmio);
    dev->start();
    driver = std::make_unique<MmioDriver>(h, kBase);
  }
  ~MmioRig() {
    h.mmio_bus().remove(kBase);
    mmio.reset();
    dev.reset();
  }
  FakeHooks h;
  std::shared_ptr<VirtioDevice> dev;
  std::shared_ptr<VirtioMmioDevice> mmio;
  std::unique_ptr<MmioDriver> driver;
};

TEST(VirtioMmio, RegistersRngAndInterrupts) {
  MmioRig rig([](GuestMemory& m) { return std::make_shared<RngDevice>(m, "rng0"); });
  MmioDriver& d = *rig.driver;
  EXPECT_EQ(d.reg(0x000), 0x74726976u);
  EXPECT_EQ(d.reg(0x004), 2u);
  EXPECT_EQ(d.reg(0x008), kTypeRng);
  EXPECT_EQ(rig.mmio->cmdline_entry(), fmt::format("virtio_mmio.device=4K@0xd0000000:{}", rig.mmio->irq()));
  EXPECT_EQ(d.queue_max(0), 256);
  EXPECT_EQ(d.queue_max(1), 0);  // no such queue
  // Doorbell: one ioeventfd at QueueNotify with datamatch = queue index.
  ASSERT_EQ(rig.h.ioevents.size(), 1u);
  EXPECT_EQ(rig.h.ioevents[0].addr, kBase + 0x50);
  EXPECT_EQ(rig.h.ioevents[0].datamatch, std::optional<uint64_t>(0));
  GuestRing ring(rig.h.memory(), kRing, 8);
  ASSERT_TRUE(d.init(kModern, {&ring}) & kStatusDriverOk);
  EXPECT_EQ(d.reg(0x044), 1u);  // QueueReady
  EXPECT_EQ(d.reg(0x080), kRing);
  ring.set_desc(0, kBuf, 64, kDescFWrite);
  ring.set_desc(1, kBuf + 64, 64, kDescFWrite);
  ring.publish(0);
  ring.publish(1);
  d.notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ring.used_idx() == 2; }));
  EXPECT_EQ(rig.h.ioeventfd_hits, 1);
  EXPECT_EQ(ring.used(0).len, 64u);
  std::vector<uint8_t> a(64), b(64);
  rig.h.memory().read(kBuf, a);
  rig.h.memory().read(kBuf + 64, b);
  EXPECT_NE(a, b);  // random bytes (2^-512 chance of a false failure)
  EXPECT_NE(a, std::vector<uint8_t>(64, 0));
  // Used-buffer interrupt: level line up, InterruptStatus bit 0; ACK lowers the line.
  ASSERT_TRUE(FakeHooks::wait_for([&] { return rig.h.line(rig.mmio->irq()); }));
  EXPECT_EQ(d.reg(0x060) & 1, 1u);
  d.set_reg(0x064, 1);
  EXPECT_FALSE(rig.h.line(rig.mmio->irq()));
  EXPECT_EQ(d.reg(0x060), 0u);
  // Reset clears everything.
  d.write_status(0);
  EXPECT_EQ(d.reg(0x070), 0u);
  EXPECT_EQ(d.reg(0x044), 0u);
}

// A paused device writes nothing into guest memory, however often it is kicked; resume() catches up.
TEST(VirtioPause, NoDmaWhilePausedAndNoLostKick) {
  MmioRig rig([](GuestMemory& m) { return std::make_shared<RngDevice>(m, "rng0"); });
  MmioDriver& d = *rig.driver;
  GuestRing ring(rig.h.memory(), kRing, 8);
  ASSERT_TRUE(d.init(kModern, {&ring}) & kStatusDriverOk);
  rig.mmio->pause();
  EXPECT_TRUE(rig.dev->paused());
  rig.h.memory().write(kBuf, std::vector<uint8_t>(64, 0xAA));
  ring.set_desc(0, kBuf, 64, kDescFWrite);
  ring.publish(0);
  d.notify(0);
  d.notify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(ring.used_idx(), 0);
  std::vector<uint8_t> buf(64);
  rig.h.memory().read(kBuf, buf);
  EXPECT_EQ(buf, std::vector<uint8_t>(64, 0xAA));
  EXPECT_FALSE(rig.h.line(rig.mmio->irq()));
  rig.mmio->pause();  // idempotent
  rig.mmio->resume();
  EXPECT_FALSE(rig.dev->paused());
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ring.used_idx() == 1; }));
  rig.h.memory().read(kBuf, buf);
  EXPECT_NE(buf, std::vector<uint8_t>(64, 0xAA));
}

TEST(VirtioMmio, BadRingAddressBreaksDevice) {
  MmioRig rig([](GuestMemory& m) { return std::make_shared<RngDevice>(m, "rng0"); });
  MmioDriver& d = *rig.driver;
  QueueConfig c{8, 0xFFFF'0000'0000ull, kRing + 0x1000, kRing + 0x2000};  // descriptors outside RAM
  d.write_status(kStatusAcknowledge | kStatusDriver);
  d.write_driver_features(bit(kFVersion1));
  d.write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  d.setup_queue(0, c);
  d.write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_TRUE(d.status() & kStatusNeedsReset);
  EXPECT_TRUE(rig.dev->broken());
  EXPECT_EQ(d.reg(0x060) & 2, 2u);  // config change interrupt
  // Queue sizes that are not a power of two are rejected the same way after a reset.
  GuestRing ring(rig.h.memory(), kRing, 8);
  QueueConfig bad = ring.config();
  bad.size = 6;
  d.write_status(0);
  EXPECT_FALSE(rig.dev->broken());
  d.write_status(kStatusAcknowledge | kStatusDriver);
  d.write_driver_features(bit(kFVersion1));
  d.write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  d.setup_queue(0, bad);
  EXPECT_TRUE(rig.dev->broken());
}

TEST(VirtioConsole, EchoThroughPipes) {
  int in[2], out[2];
  ASSERT_EQ(::pipe2(in, O_NONBLOCK | O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  ConsoleBackendSpec spec;
  spec.kind = ConsoleBackendSpec::Kind::Fds;
  spec.in_fd = in[0];
  spec.out_fd = out[1];
  {
    MmioRig rig([&](GuestMemory& m) { return std::make_shared<ConsoleDevice>(m, "console0", spec); });
    MmioDriver& d = *rig.driver;
    EXPECT_EQ(d.reg(0x008), kTypeConsole);
    EXPECT_EQ(d.config_read(4, 4), 1u);  // max_nr_ports
    GuestRing rx(rig.h.memory(), kRing, 8), tx(rig.h.memory(), kRing + 0x10000, 8);
    ASSERT_TRUE(d.init(kModern, {&rx, &tx}) & kStatusDriverOk);
    // Guest -> host.
    const char msg[] = "hello from the guest\n";
    rig.h.memory().write(kBuf, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(msg), sizeof msg - 1));
    tx.set_desc(0, kBuf, sizeof msg - 1, 0);
    tx.publish(0);
    d.notify(1);
    char got[64] = {};
    ASSERT_EQ(::read(out[0], got, sizeof msg - 1), static_cast<ssize_t>(sizeof msg - 1));
    EXPECT_STREQ(got, msg);
    ASSERT_TRUE(FakeHooks::wait_for([&] { return tx.used_idx() == 1; }));
    // Host -> guest: data waits in the pipe until the guest posts a buffer.
    ASSERT_EQ(::write(in[1], "typed", 5), 5);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(rx.used_idx(), 0);
    rx.set_desc(0, kBuf + 0x1000, 3, kDescFWrite);
    rx.set_desc(1, kBuf + 0x2000, 64, kDescFWrite);
    rx.publish(0);
    d.notify(0);
    ASSERT_TRUE(FakeHooks::wait_for([&] { return rx.used_idx() == 1; }));
    EXPECT_EQ(rx.used(0).len, 3u);  // only what fits
    rx.publish(1);
    d.notify(0);
    ASSERT_TRUE(FakeHooks::wait_for([&] { return rx.used_idx() == 2; }));
    EXPECT_EQ(rx.used(1).len, 2u);
    char a[4] = {}, b[4] = {};
    rig.h.memory().read(kBuf + 0x1000, std::span<uint8_t>(reinterpret_cast<uint8_t*>(a), 3));
    rig.h.memory().read(kBuf + 0x2000, std::span<uint8_t>(reinterpret_cast<uint8_t*>(b), 2));
    EXPECT_STREQ(a, "typ");
    EXPECT_STREQ(b, "ed");
  }
  for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
}

// Port 0 on a listening unix socket (and on a pty): output reaches the client, client input the guest.
TEST(VirtioConsole, UnixSocketAndPty) {
  auto sock = std::filesystem::temp_directory_path() / ("vireo-console-" + std::to_string(::getpid()) + ".sock");
  for (int kind = 0; kind < 2; ++kind) {
    ConsoleBackendSpec spec;
    spec.kind = kind == 0 ? ConsoleBackendSpec::Kind::Unix : ConsoleBackendSpec::Kind::Pty;
    spec.path = sock.string();
    MmioRig rig([&](GuestMemory& m) { return std::make_shared<ConsoleDevice>(m, "console0", spec); });
    auto* con = static_cast<ConsoleDevice*>(rig.dev.get());
    MmioDriver& d = *rig.driver;
    int fd = -1;
    if (kind == 0) {
      EXPECT_EQ(con->details(), "unix=" + sock.string());
      fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::strncpy(a.sun_path, sock.c_str(), sizeof a.sun_path - 1);
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    } else {
      ASSERT_EQ(con->pty_path().rfind("/dev/pts/", 0), 0u) << con->pty_path();
      fd = ::open(con->pty_path().c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
      ASSERT_GE(fd, 0);
      termios t{};
      ASSERT_EQ(::tcgetattr(fd, &t), 0);
      cfmakeraw(&t);
      ASSERT_EQ(::tcsetattr(fd, TCSANOW, &t), 0);
    }
    GuestRing rx(rig.h.memory(), kRing, 8), tx(rig.h.memory(), kRing + 0x10000, 8);
    ASSERT_TRUE(d.init(kModern, {&rx, &tx}) & kStatusDriverOk);
    const std::string msg = kind == 0 ? "to the socket" : "to the pty";
    rig.h.memory().write(kBuf, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(msg.data()), msg.size()));
    tx.set_desc(0, kBuf, static_cast<uint32_t>(msg.size()), 0);
    tx.publish(0);
    d.notify(1);
    std::string got;
    ASSERT_TRUE(FakeHooks::wait_for([&] {
      char b[64];
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10) == 1) {
        ssize_t n = ::read(fd, b, sizeof b);
        if (n > 0) got.append(b, static_cast<size_t>(n));
      }
      return got.size() >= msg.size();
    }));
    EXPECT_EQ(got, msg);
    rx.set_desc(0, kBuf + 0x1000, 64, kDescFWrite);
    rx.publish(0);
    d.notify(0);
    ASSERT_EQ(::write(fd, "back", 4), 4);
    ASSERT_TRUE(FakeHooks::wait_for([&] { return rx.used_idx() == 1; }));
    char in[5] = {};
    rig.h.memory().read(kBuf + 0x1000, std::span<uint8_t>(reinterpret_cast<uint8_t*>(in), 4));
    EXPECT_STREQ(in, "back");
    EXPECT_EQ(rx.used(0).len, 4u);
    ::close(fd);
  }
  EXPECT_FALSE(std::filesystem::exists(sock));  // removed with the device
}

long rss_kib() {
  std::ifstream f("/proc/self/statm");
  long size, res;
  f >> size >> res;
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

TEST(VirtioBalloon, InflateDiscardsPagesAndStats) {
  MmioRig rig([](GuestMemory& m) { return std::make_shared<BalloonDevice>(m, "balloon0"); });
  auto* balloon = static_cast<BalloonDevice*>(rig.dev.get());
  MmioDriver& d = *rig.driver;
  EXPECT_EQ(d.reg(0x008), kTypeBalloon);
  uint64_t f = d.device_features();
  EXPECT_TRUE(f & bit(balloon_bits::kFStatsVq));
  EXPECT_TRUE(f & bit(balloon_bits::kFPageReporting));
  // Touch 4 MiB of guest RAM at 8 MiB with a pattern.
  constexpr uint64_t kArea = 8 << 20, kLen = 4 << 20;
  rig.h.memory().write(kArea, std::vector<uint8_t>(kLen, 0x77));
  GuestRing inflate(rig.h.memory(), kRing, 8), deflate(rig.h.memory(), kRing + 0x10000, 8),
      stats(rig.h.memory(), kRing + 0x20000, 8), report(rig.h.memory(), kRing + 0x30000, 8);
  ASSERT_TRUE(d.init(kModern | bit(balloon_bits::kFStatsVq) | bit(balloon_bits::kFPageReporting),
                     {&inflate, &deflate, &stats, &report}) & kStatusDriverOk);
  long before = rss_kib();
  // Inflate the first 2 MiB (512 pfns).
  std::vector<uint32_t> pfns;
  for (uint32_t i = 0; i < 512; ++i) pfns.push_back(static_cast<uint32_t>(kArea / 4096) + i);
  rig.h.memory().write(kBuf, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(pfns.data()), pfns.size() * 4));
  inflate.set_desc(0, kBuf, static_cast<uint32_t>(pfns.size() * 4), 0);
  inflate.publish(0);
  d.notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return inflate.used_idx() == 1; }));
  EXPECT_EQ(balloon->discarded_bytes(), 2u << 20);
  EXPECT_EQ(rig.h.memory().read_obj<uint8_t>(kArea), 0);                   // dropped page reads as zero
  EXPECT_EQ(rig.h.memory().read_obj<uint8_t>(kArea + (2 << 20)), 0x77);    // the rest is intact
  long after = rss_kib();
  EXPECT_LT(after, before - 1024) << "RSS did not drop by >= 1 MiB (before " << before << " KiB, after " << after << ")";
  // Free page reporting: a writable 1 MiB range is discarded too.
  report.set_desc(0, kArea + (2 << 20), 1 << 20, kDescFWrite);
  report.publish(0);
  d.notify(3);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return report.used_idx() == 1; }));
  EXPECT_EQ(balloon->discarded_bytes(), 3u << 20);
  EXPECT_EQ(rig.h.memory().read_obj<uint8_t>(kArea + (2 << 20)), 0);
  // Stats: the device keeps the buffer; values are parsed.
  uint8_t entry[20] = {};
  uint16_t tag = 4;  // VIRTIO_BALLOON_S_MEMFREE
  uint64_t val = 123456789;
  std::memcpy(entry, &tag, 2);
  std::memcpy(entry + 2, &val, 8);
  tag = 5;  // MEMTOT
  val = 987654321;
  std::memcpy(entry + 10, &tag, 2);
  std::memcpy(entry + 12, &val, 8);
  rig.h.memory().write(kBuf + 0x8000, entry);
  stats.set_desc(0, kBuf + 0x8000, sizeof entry, 0);
  stats.publish(0);
  d.notify(2);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return balloon->stats().size() == 2; }));
  EXPECT_EQ(balloon->stats()[4], 123456789u);
  EXPECT_EQ(balloon->stats()[5], 987654321u);
  EXPECT_EQ(stats.used_idx(), 0);
  balloon->request_stats();
  EXPECT_EQ(stats.used_idx(), 1);
  // Target and actual.
  balloon->set_target_pages(100);
  EXPECT_EQ(d.config_read(0, 4), 100u);
  d.config_write(4, 60, 4);
  EXPECT_EQ(balloon->actual_pages(), 60u);
  d.config_write(0, 5, 4);  // num_pages is read-only for the driver
  EXPECT_EQ(d.config_read(0, 4), 100u);
}

// ---- assembly (the transports are wired by the VMM's DeviceManager: tests/unit/vmm/device_manager_test.cpp)

TEST(VirtioDevicesAssembly, ConfigOrderAndIds) {
  auto path = std::filesystem::temp_directory_path() / ("vireo-vd-" + std::to_string(::getpid()) + ".img");
  { std::ofstream(path).write(std::string(65536, 'x').data(), 65536); }
  FakeHooks h;
  config::VmConfig c;
  c.disks.push_back(config::parse_disk("path=" + path.string() + ",format=raw,serial=abc"));
  c.rng = true;
  c.balloon = true;
  auto devs = create_virtio_devices(c, h.memory());
  ASSERT_EQ(devs.size(), 3u);
  EXPECT_EQ(devs[0]->type_name(), "virtio-blk");
  EXPECT_EQ(devs[0]->id(), "disk0");
  EXPECT_EQ(devs[0]->details(), "path=" + path.string() + " format=raw engine=uring");
  EXPECT_EQ(devs[1]->id(), "rng0");
  EXPECT_EQ(devs[2]->id(), "balloon0");
  devs.clear();
  std::filesystem::remove(path);
}

TEST(VirtioDevicesAssembly, MissingDiskIsAnError) {
  FakeHooks h;
  config::VmConfig o;
  o.disks.push_back(config::parse_disk("path=/nonexistent/disk.img"));
  EXPECT_THROW(create_virtio_devices(o, h.memory()), Error);
  // io_uring serves raw images only; asking for it on another format is refused, not silently ignored.
  o.disks[0] = config::parse_disk("path=/dev/null,format=qcow2,engine=uring");
  try {
    auto devs = create_virtio_devices(o, h.memory());
    ADD_FAILURE() << "engine=uring accepted for qcow2";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--disk /dev/null: engine=uring needs a raw image, not qcow2");
  }
}

}  // namespace
