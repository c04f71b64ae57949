#include "devices/bus.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"

namespace vireo {
namespace {

class Recorder : public BusDevice {
 public:
  void read(uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(offset + i);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    last_offset = offset;
    last.assign(data.begin(), data.end());
  }
  std::string name() const override { return "recorder"; }
  uint64_t last_offset = ~0ull;
  std::vector<uint8_t> last;
};

TEST(Bus, DispatchesWithRelativeOffsets) {
  Bus bus("pio");
  auto dev = std::make_shared<Recorder>();
  bus.insert(0x3f8, 8, dev);
  uint8_t v[2] = {0xaa, 0xbb};
  EXPECT_TRUE(bus.write(0x3fa, v));
  EXPECT_EQ(dev->last_offset, 2u);
  EXPECT_EQ(dev->last, (std::vector<uint8_t>{0xaa, 0xbb}));
  uint8_t r[1];
  EXPECT_TRUE(bus.read(0x3fd, r));
  EXPECT_EQ(r[0], 5);
}

TEST(Bus, UnclaimedReadsAreAllOnes) {
  Bus bus("mmio");
  bus.insert(0x1000, 0x100, std::make_shared<Recorder>());
  uint8_t r[4] = {};
  EXPECT_FALSE(bus.read(0x2000, r));
  EXPECT_EQ(r[0], 0xff);
  EXPECT_EQ(r[3], 0xff);
  // An access straddling the end of a range is not claimed by the device.
  EXPECT_FALSE(bus.read(0x10fe, r));
}

TEST(Bus, RejectsOverlapAndEmpty) {
  Bus bus("pio");
  bus.insert(0x60, 1, std::make_shared<Recorder>());
  bus.insert(0x64, 1, std::make_shared<Recorder>());
  EXPECT_THROW(bus.insert(0x5f, 2, std::make_shared<Recorder>()), Error);
  EXPECT_THROW(bus.insert(0x64, 1, std::make_shared<Recorder>()), Error);
  EXPECT_THROW(bus.insert(0x70, 0, std::make_shared<Recorder>()), Error);
  EXPECT_TRUE(bus.remove(0x64));
  bus.insert(0x64, 1, std::make_shared<Recorder>());
}

}  // namespace
}  // namespace vireo
