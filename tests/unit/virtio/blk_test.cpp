// virtio-blk end to end through the virtio-pci transport (config cycles, BAR registers, ioeventfd doorbells)
// on a FakeHooks, with the real block layer on a temp file.
#include "virtio/blk.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "block/backend.h"
#include "block/block.h"
#include "pci/pci.h"
#include "unit/virtio/test_driver.h"
#include "virtio/virtio_pci.h"

using namespace vireo;
using namespace vireo::virtio;
using namespace vireo::virtio::testing;

namespace {

constexpr uint64_t kRing = 0x100000, kHdr = 0x200000, kBuf = 0x210000, kStatus = 0x220000;
constexpr uint64_t kDiskSize = 1 << 20;
constexpr uint64_t kWant = bit(kFVersion1) | bit(kFIndirectDesc) | bit(kFEventIdx) | bit(blk::kFFlush) |
                           bit(blk::kFDiscard) | bit(blk::kFWriteZeroes) | bit(blk::kFBlkSize) | bit(blk::kFRo) |
                           bit(blk::kFSegMax);

struct Header {
  uint32_t type, reserved;
  uint64_t sector;
};

class VirtioBlk : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() / ("vireo-blk-test-" + std::to_string(::getpid()) + ".img");
    std::vector<uint8_t> init(kDiskSize);
    for (size_t i = 0; i < init.size(); ++i) init[i] = static_cast<uint8_t>(i * 7 + 3);
    std::ofstream(path_, std::ios::binary).write(reinterpret_cast<const char*>(init.data()), init.size());
  }
  void TearDown() override {
    driver_.reset();
    bridge_.reset();
    pci_.reset();
    dev_.reset();
    std::filesystem::remove(path_);
  }
  void make(bool read_only, uint16_t queues = 1, bool direct = false) {
    block::OpenOptions o;
    o.format = "raw";
    o.read_only = read_only;
    o.direct = direct;
    o.take_locks = false;
    std::shared_ptr<block::BlockImage> img = block::open_image(path_.string(), o);
    auto backend = std::make_unique<block::ThreadPoolBackend>(img, 2);
    BlockDevice::Config cfg;
    cfg.serial = "VIREO-SERIAL-1";
    cfg.num_queues = queues;
    dev_ = std::make_shared<BlockDevice>(h_.memory(), "disk0", std::move(backend), cfg);
    bridge_ = std::make_unique<pci::PciHostBridge>(h_.pio_bus(), h_.mmio_bus());
    pci_ = std::make_shared<VirtioPciDevice>(h_, dev_);
    bridge_->add_device(pci_);
    dev_->start();
    driver_ = std::make_unique<PciDriver>(h_, 0x1042);
    ring_ = std::make_unique<GuestRing>(h_.memory(), kRing, 16);
    ASSERT_TRUE(driver_->init(kWant, {ring_.get()}) & kStatusDriverOk);
  }
  // Submits header [+ out data] [+ in buffer] + status as one chain; returns the status byte.
  uint8_t request(uint32_t type, uint64_t sector, uint32_t out_len, uint32_t in_len, uint32_t* used_len = nullptr) {
    Header hdr{type, 0, sector};
    h_.memory().write_obj(kHdr, hdr);
    h_.memory().write_obj<uint8_t>(kStatus, 0xee);
    uint16_t i = 0;
    ring_->set_desc(i, kHdr, sizeof hdr, kDescFNext, i + 1);
    ++i;
    if (out_len) {
      ring_->set_desc(i, kBuf, out_len, kDescFNext, i + 1);
      ++i;
    }
    if (in_len) {
      ring_->set_desc(i, kBuf, in_len, kDescFNext | kDescFWrite, i + 1);
      ++i;
    }
    ring_->set_desc(i, kStatus, 1, kDescFWrite);
    uint16_t before = ring_->used_idx();
    ring_->set_used_event(before);  // event idx: interrupt me for this completion
    ring_->publish(0);
    driver_->notify(0);
    EXPECT_TRUE(FakeHooks::wait_for([&] { return ring_->used_idx() != before; })) << "no completion";
    if (used_len) *used_len = ring_->used(before).len;
    return h_.memory().read_obj<uint8_t>(kStatus);
  }
  std::vector<uint8_t> file_bytes(uint64_t off, size_t n) {
    std::vector<uint8_t> v(n);
    std::ifstream f(path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(off));
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n));
    return v;
  }

  FakeHooks h_;
  std::filesystem::path path_;
  std::shared_ptr<BlockDevice> dev_;
  std::unique_ptr<pci::PciHostBridge> bridge_;
  std::shared_ptr<VirtioPciDevice> pci_;
  std::unique_ptr<PciDriver> driver_;
  std::unique_ptr<GuestRing> ring_;
};

TEST_F(VirtioBlk, ConfigSpaceAndFeatures) {
  make(false);
  EXPECT_EQ(driver_->config_read(0, 8), kDiskSize / 512);  // capacity in sectors
  EXPECT_EQ(driver_->config_read(20, 4), 512u);              // blk_size
  uint64_t f = driver_->device_features();
  EXPECT_TRUE(f & bit(kFVersion1));
  EXPECT_TRUE(f & bit(blk::kFFlush));
  EXPECT_FALSE(f & bit(blk::kFRo));
  // Class code: mass storage; device id 0x1040 + 2; revision 1.
  EXPECT_EQ(driver_->cfg_read(driver_->slot(), 0x08, 4) >> 8, 0x018000u);
  EXPECT_EQ(driver_->cfg_read(driver_->slot(), 0x08, 1), 1u);
  // Doorbell goes through an ioeventfd at notify base + 0 * multiplier.
  EXPECT_EQ(h_.ioevents.size(), 1u);
  EXPECT_EQ(h_.ioevents[0].addr, driver_->bar() + driver_->notify_off());
}

TEST_F(VirtioBlk, WriteLandsInFileAndReadsBack) {
  make(false);
  std::vector<uint8_t> pattern(8192);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(0xA5 ^ i ^ (i >> 8));
  h_.memory().write(kBuf, pattern);
  uint32_t used = 0;
  EXPECT_EQ(request(blk::kTOut, 24, 8192, 0, &used), blk::kSOk);
  EXPECT_EQ(used, 1u);
  EXPECT_EQ(request(blk::kTFlush, 0, 0, 0), blk::kSOk);
  EXPECT_EQ(file_bytes(24 * 512, 8192), pattern);
  // Neighbouring bytes untouched.
  EXPECT_EQ(file_bytes(24 * 512 - 1, 1)[0], static_cast<uint8_t>((24 * 512 - 1) * 7 + 3));
  std::vector<uint8_t> zero(8192, 0);
  h_.memory().write(kBuf, zero);
  EXPECT_EQ(request(blk::kTIn, 24, 0, 8192, &used), blk::kSOk);
  EXPECT_EQ(used, 8193u);
  std::vector<uint8_t> back(8192);
  h_.memory().read(kBuf, back);
  EXPECT_EQ(back, pattern);
}

// Pause drains what is in flight: once pause() returns, the used ring and the buffers stay still until
// resume(), which then finishes every request that was queued meanwhile.
TEST_F(VirtioBlk, PauseDrainsInFlightAndStopsDma) {
  make(false);
  constexpr uint16_t kN = 5;  // 3 descriptors each, 16 in the ring
  for (uint16_t r = 0; r < kN; ++r) {
    const uint64_t hdr = kHdr + 0x100 * r, buf = 0x300000 + 0x10000 * r, st = kStatus + 0x10 * r;
    h_.memory().write_obj(hdr, Header{blk::kTIn, 0, uint64_t{r} * 8});
    h_.memory().write_obj<uint8_t>(st, 0xee);
    const uint16_t d = static_cast<uint16_t>(3 * r);
    ring_->set_desc(d, hdr, sizeof(Header), kDescFNext, d + 1);
    ring_->set_desc(d + 1, buf, 4096, kDescFNext | kDescFWrite, d + 2);
    ring_->set_desc(d + 2, st, 1, kDescFWrite);
  }
  for (uint16_t r = 0; r < kN / 2; ++r) ring_->publish(static_cast<uint16_t>(3 * r));
  driver_->notify(0);
  pci_->pause();
  const uint16_t at_pause = ring_->used_idx();
  for (uint16_t r = kN / 2; r < kN; ++r) ring_->publish(static_cast<uint16_t>(3 * r));
  driver_->notify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(ring_->used_idx(), at_pause);
  for (uint16_t r = at_pause; r < kN; ++r) EXPECT_EQ(h_.memory().read_obj<uint8_t>(kStatus + 0x10 * r), 0xee) << r;
  pci_->resume();
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ring_->used_idx() == kN; }));
  for (uint16_t r = 0; r < kN; ++r) {
    EXPECT_EQ(h_.memory().read_obj<uint8_t>(kStatus + 0x10 * r), blk::kSOk) << r;
    std::vector<uint8_t> b(4096);
    h_.memory().read(0x300000 + 0x10000 * r, b);
    EXPECT_EQ(b, file_bytes(uint64_t{r} * 8 * 512, 4096)) << r;
  }
}

TEST_F(VirtioBlk, GetIdAndErrors) {
  make(false);
  uint32_t used = 0;
  EXPECT_EQ(request(blk::kTGetId, 0, 0, 20, &used), blk::kSOk);
  EXPECT_EQ(used, 21u);
  char id[21] = {};
  h_.memory().read(kBuf, std::span<uint8_t>(reinterpret_cast<uint8_t*>(id), 20));
  EXPECT_STREQ(id, "VIREO-SERIAL-1");
  EXPECT_EQ(request(blk::kTIn, kDiskSize / 512, 0, 512), blk::kSIoErr);      // past the end
  EXPECT_EQ(request(blk::kTIn, kDiskSize / 512 - 1, 0, 1024), blk::kSIoErr);  // straddles the end
  EXPECT_EQ(request(blk::kTIn, ~0ull, 0, 512), blk::kSIoErr);                // sector overflow
  EXPECT_EQ(request(99, 0, 0, 512), blk::kSUnsupp);
  EXPECT_FALSE(dev_->broken());
}

TEST_F(VirtioBlk, DiscardAndWriteZeroes) {
  make(false);
  struct Seg {
    uint64_t sector;
    uint32_t num, flags;
  };
  h_.memory().write_obj(kBuf, Seg{8, 16, 1});  // write-zeroes with unmap
  EXPECT_EQ(request(blk::kTWriteZeroes, 0, 16, 0), blk::kSOk);
  EXPECT_EQ(file_bytes(8 * 512, 16 * 512), std::vector<uint8_t>(16 * 512, 0));
  EXPECT_NE(file_bytes(8 * 512 - 1, 1)[0], 0);
  h_.memory().write_obj(kBuf, Seg{64, 8, 0});
  EXPECT_EQ(request(blk::kTDiscard, 0, 16, 0), blk::kSOk);
  h_.memory().write_obj(kBuf, Seg{64, 8, 1});  // unmap flag on discard: unsupported
  EXPECT_EQ(request(blk::kTDiscard, 0, 16, 0), blk::kSUnsupp);
  h_.memory().write_obj(kBuf, Seg{kDiskSize / 512 - 4, 8, 0});
  EXPECT_EQ(request(blk::kTDiscard, 0, 16, 0), blk::kSIoErr);
}

TEST_F(VirtioBlk, ReadOnlyDisk) {
  make(true);
  EXPECT_TRUE(driver_->device_features() & bit(blk::kFRo));
  h_.memory().write(kBuf, std::vector<uint8_t>(512, 0x55));
  EXPECT_EQ(request(blk::kTOut, 0, 512, 0), blk::kSIoErr);
  struct Seg {
    uint64_t sector;
    uint32_t num, flags;
  };
  h_.memory().write_obj(kBuf, Seg{0, 8, 0});
  EXPECT_EQ(request(blk::kTDiscard, 0, 16, 0), blk::kSIoErr);
  EXPECT_EQ(request(blk::kTWriteZeroes, 0, 16, 0), blk::kSIoErr);
  EXPECT_EQ(request(blk::kTIn, 0, 0, 512), blk::kSOk);
  EXPECT_EQ(file_bytes(0, 4), (std::vector<uint8_t>{3, 10, 17, 24}));  // unchanged
}

TEST_F(VirtioBlk, MalformedChainBreaksDeviceUntilReset) {
  make(false);
  // A chain that loops: 0 -> 1 -> 0.
  ring_->set_desc(0, kHdr, 16, kDescFNext, 1);
  ring_->set_desc(1, kBuf, 16, kDescFNext, 0);
  ring_->publish(0);
  driver_->notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return driver_->status() & kStatusNeedsReset; }));
  EXPECT_TRUE(dev_->broken());
  // Config change interrupt on INTx (MSI-X is off): ISR bit 1, line raised.
  EXPECT_TRUE(h_.line(pci_->intx_line()));
  EXPECT_EQ(driver_->read_isr() & 2, 2);
  EXPECT_FALSE(h_.line(pci_->intx_line()));  // reading ISR deasserts
  // Further requests are not processed.
  uint16_t used = ring_->used_idx();
  driver_->notify(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(ring_->used_idx(), used);
  // Reset + re-initialise: works again.
  ring_ = std::make_unique<GuestRing>(h_.memory(), kRing, 16);
  ASSERT_TRUE(driver_->init(kWant, {ring_.get()}) & kStatusDriverOk);
  EXPECT_FALSE(dev_->broken());
  EXPECT_EQ(request(blk::kTIn, 0, 0, 512), blk::kSOk);
}

TEST_F(VirtioBlk, MissingStatusByteBreaksDevice) {
  make(false);
  ring_->set_desc(0, kHdr, 16, 0);  // header only
  ring_->publish(0);
  driver_->notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return dev_->broken(); }));
}

TEST_F(VirtioBlk, RejectsLegacyDriver) {
  make(false);
  driver_->write_status(0);
  driver_->write_status(kStatusAcknowledge | kStatusDriver);
  driver_->write_driver_features(bit(blk::kFFlush));  // no VERSION_1
  driver_->write_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  EXPECT_FALSE(driver_->status() & kStatusFeaturesOk);
}

TEST_F(VirtioBlk, MsixVectorsRouteThroughIrqfd) {
  make(false);
  int slot = driver_->slot();
  uint8_t cap = driver_->msix_cap();
  ASSERT_NE(cap, 0);
  EXPECT_EQ(driver_->cfg_read(slot, cap + 2, 2) & 0x7ff, 1u);  // 2 vectors (config + 1 queue) -> N-1 = 1
  uint32_t table = driver_->cfg_read(slot, cap + 4, 4);
  ASSERT_EQ(table & 7, 0u);  // BIR 0
  uint64_t entry1 = driver_->bar() + (table & ~7u) + 16;
  h_.mmio_write(entry1, 0xfee00000, 4);
  h_.mmio_write(entry1 + 4, 0, 4);
  h_.mmio_write(entry1 + 8, 0x4041, 4);
  h_.mmio_write(entry1 + 12, 0, 4);  // unmask
  driver_->cfg_write(slot, cap + 2, 0x8000, 2);  // MSI-X enable
  driver_->set_common(22, 0, 2);
  driver_->set_common(26, 1, 2);  // queue 0 -> vector 1
  EXPECT_EQ(driver_->common(26, 2), 1u);
  driver_->set_common(26, 7, 2);  // out of range -> NO_VECTOR
  EXPECT_EQ(driver_->common(26, 2), 0xffffu);
  driver_->set_common(26, 1, 2);
  EXPECT_EQ(request(blk::kTIn, 0, 0, 512), blk::kSOk);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return !h_.irqfds.empty(); }));
  uint32_t gsi = h_.irqfds.begin()->first;
  EXPECT_TRUE(h_.take_irqfd(gsi));
  EXPECT_EQ(h_.routes[gsi], (std::pair<uint64_t, uint32_t>{0xfee00000, 0x4041}));
  EXPECT_FALSE(h_.line(pci_->intx_line()));
  // Masked: the completion sets the pending bit instead; unmasking delivers it.
  h_.mmio_write(entry1 + 12, 1, 4);
  EXPECT_EQ(request(blk::kTIn, 0, 0, 512), blk::kSOk);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return (h_.mmio_read(driver_->bar() + 0x6000, 8) & 2) != 0; }));
  EXPECT_FALSE(h_.take_irqfd(gsi));
  h_.mmio_write(entry1 + 12, 0, 4);
  EXPECT_TRUE(h_.take_irqfd(gsi));
  EXPECT_EQ(h_.mmio_read(driver_->bar() + 0x6000, 8), 0u);
  // Re-programming the entry re-programs the route.
  h_.mmio_write(entry1 + 8, 0x4042, 4);
  EXPECT_EQ(h_.routes[gsi].second, 0x4042u);
}

// The open flags of our fd on the disk file, from /proc/self/fdinfo.
static long open_flags_of(const std::filesystem::path& path) {
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec) != path) continue;
    std::ifstream info("/proc/self/fdinfo/" + e.path().filename().string());
    std::string key;
    while (info >> key) {
      if (key == "flags:") {
        std::string v;
        info >> v;
        return std::stol(v, nullptr, 8);
      }
    }
  }
  return -1;
}

TEST_F(VirtioBlk, CacheNoneUsesODirect) {
  make(false, 1, /*direct=*/true);
  long flags = open_flags_of(path_);
  ASSERT_GE(flags, 0);
  EXPECT_TRUE(flags & O_DIRECT);
  // Sector-aligned but not page-aligned guest buffer: still byte-exact.
  std::vector<uint8_t> pattern(4096);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 13 + 1);
  h_.memory().write(kBuf, pattern);
  EXPECT_EQ(request(blk::kTOut, 3, 4096, 0), blk::kSOk);
  EXPECT_EQ(file_bytes(3 * 512, 4096), pattern);
  h_.memory().write(kBuf, std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(request(blk::kTIn, 3, 0, 4096), blk::kSOk);
  std::vector<uint8_t> back(4096);
  h_.memory().read(kBuf, back);
  EXPECT_EQ(back, pattern);
}

TEST_F(VirtioBlk, MultiQueue) {
  make(false, 2);
  EXPECT_TRUE(driver_->device_features() & bit(blk::kFMq));
  EXPECT_EQ(driver_->config_read(34, 2), 2u);
  GuestRing r1(h_.memory(), kRing + 0x10000, 16);
  ASSERT_TRUE(driver_->init(kWant | bit(blk::kFMq), {ring_.get(), &r1}) & kStatusDriverOk);
  Header hdr{blk::kTGetId, 0, 0};
  h_.memory().write_obj(kHdr, hdr);
  r1.set_desc(0, kHdr, 16, kDescFNext, 1);
  r1.set_desc(1, kBuf, 20, kDescFNext | kDescFWrite, 2);
  r1.set_desc(2, kStatus, 1, kDescFWrite);
  r1.publish(0);
  driver_->notify(1);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return r1.used_idx() == 1; }));
  EXPECT_EQ(h_.memory().read_obj<uint8_t>(kStatus), blk::kSOk);
  EXPECT_EQ(ring_->used_idx(), 0);
}

}  // namespace
