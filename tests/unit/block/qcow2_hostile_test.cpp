// Crafted hostile images: every one must give a clear Error, never a crash, hang or huge allocation.
#include <gtest/gtest.h>

#include "block/qcow2.h"
#include "common/error.h"
#include "helpers.h"

using namespace vireo::block;
using namespace blocktest;

namespace {

void put32(std::vector<uint8_t>& v, size_t at, uint32_t x) {
  for (int i = 0; i < 4; i++) v[at + i] = static_cast<uint8_t>(x >> (24 - 8 * i));
}
void put64(std::vector<uint8_t>& v, size_t at, uint64_t x) {
  put32(v, at, static_cast<uint32_t>(x >> 32));
  put32(v, at + 4, static_cast<uint32_t>(x));
}
uint64_t get64(const std::vector<uint8_t>& v, size_t at) {
  uint64_t x = 0;
  for (int i = 0; i < 8; i++) x = x << 8 | v[at + i];
  return x;
}

class Hostile : public testing::Test {
 protected:
  void SetUp() override {
    CreateOptions c;
    c.size = 4 << 20;
    path = d.path("h.qcow2");
    create_image(path, c);
    auto img = open_image(path, rw());
    img->write(0, pattern(300000, 1));
    img.reset();
    good = read_file(path);
  }
  // Opens (read-only), reads everything, block status and check; returns the error text, "" if none.
  std::string exercise(const std::vector<uint8_t>& bytes) {
    write_file(path, bytes);
    try {
      auto img = Qcow2Image::open(path, ro());
      std::vector<uint8_t> buf(std::min<uint64_t>(img->size(), 1 << 20));
      img->read(0, buf);
      img->block_status(0, img->size());
      img->check(RepairMode::None);
      return "";
    } catch (const vireo::Error& e) {
      EXPECT_GT(std::string(e.what()).size(), 5u);
      return e.what();
    }
  }
  TempDir d;
  std::string path;
  std::vector<uint8_t> good;
};

TEST_F(Hostile, GoodImageIsFine) { EXPECT_EQ(exercise(good), ""); }

TEST_F(Hostile, HugeL1Size) {
  auto b = good;
  put32(b, 36, 0x7fffffff);
  EXPECT_NE(exercise(b).find("L1 table too large"), std::string::npos);
}

TEST_F(Hostile, L1TooSmallForSize) {
  auto b = good;
  put64(b, 24, 1ULL << 50);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, HugeVirtualSize) {
  auto b = good;
  put64(b, 24, UINT64_MAX);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, UnalignedL1Offset) {
  auto b = good;
  put64(b, 40, get64(b, 40) + 8);
  EXPECT_NE(exercise(b).find("L1"), std::string::npos);
}

TEST_F(Hostile, L1BeyondEof) {
  auto b = good;
  put64(b, 40, 1ULL << 40);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, UnknownIncompatibleBitRefused) {
  auto b = good;
  put64(b, 72, 1ULL << 40);
  std::string e = exercise(b);
  EXPECT_NE(e.find("Unsupported qcow2 feature"), std::string::npos) << e;
}

TEST_F(Hostile, ExternalDataFileRefused) {
  auto b = good;
  put64(b, 72, 1ULL << 2);
  EXPECT_NE(exercise(b).find("external data"), std::string::npos);
}

TEST_F(Hostile, BadClusterBitsAndVersion) {
  auto b = good;
  put32(b, 20, 40);
  EXPECT_NE(exercise(b), "");
  b = good;
  put32(b, 4, 7);
  EXPECT_NE(exercise(b), "");
  b = good;
  b[0] = 'X';
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, RefcountTableTooLargeOrUnaligned) {
  auto b = good;
  put32(b, 56, 0x10000000);
  EXPECT_NE(exercise(b), "");
  b = good;
  put64(b, 48, 12345);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, SnapshotTableOutOfRange) {
  auto b = good;
  put32(b, 60, 5);
  put64(b, 64, 1ULL << 40);
  EXPECT_NE(exercise(b), "");
  b = good;
  put32(b, 60, 1000000);
  put64(b, 64, 65536);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, L2EntryUnalignedOrBeyondEof) {
  uint64_t l1 = get64(good, 40);
  uint64_t l2 = get64(good, l1) & 0x00fffffffffffe00ULL;
  auto b = good;
  put64(b, l2, (1ULL << 63) | 0x12345600);  // unaligned host offset
  EXPECT_NE(exercise(b).find("unaligned"), std::string::npos);
  b = good;
  put64(b, l2, (1ULL << 63) | (1ULL << 45));  // far beyond EOF: reads zeroes, check reports it
  EXPECT_EQ(exercise(b), "");
  b = good;
  put64(b, l1, (1ULL << 63) | 0x300);  // unaligned L2 table offset
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, CompressedDescriptorOutOfRange) {
  uint64_t l1 = get64(good, 40);
  uint64_t l2 = get64(good, l1) & 0x00fffffffffffe00ULL;
  auto b = good;
  put64(b, l2, (1ULL << 62) | (0x3fULL << 54) | ((1ULL << 54) - 1));
  std::string e = exercise(b);
  EXPECT_NE(e, "");
  b = good;
  put64(b, l2, (1ULL << 62) | 0x30000);  // garbage "compressed" data inside the file
  EXPECT_NE(exercise(b).find("compressed"), std::string::npos);
}

TEST_F(Hostile, AllOnesL2EntryIsNotACachedCluster) {
  // Regression (libFuzzer): an all-ones entry once matched the empty decompression cache key.
  uint64_t l1 = get64(good, 40);
  uint64_t l2 = get64(good, l1) & 0x00fffffffffffe00ULL;
  auto b = good;
  put64(b, l2, UINT64_MAX);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, HeaderExtensionLengthOverflow) {
  auto b = good;
  uint32_t hlen = static_cast<uint32_t>(b[100]) << 24 | b[101] << 16 | b[102] << 8 | b[103];
  put32(b, hlen, 0x99999999);
  put32(b, hlen + 4, 0xfffffff0);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, BackingFileNameOutOfCluster) {
  auto b = good;
  put64(b, 8, 65530);
  put32(b, 16, 1000);
  EXPECT_NE(exercise(b), "");
}

TEST_F(Hostile, RefcountBlocksPointingAtEachOther) {
  auto b = good;
  uint64_t rt = get64(b, 48);
  for (int i = 0; i < 16; i++) put64(b, rt + i * 8, rt);  // every block is the table itself
  std::string e = exercise(b);
  (void)e;  // may or may not fail; must simply not crash or hang
  // Writing to it must not scribble over the table: corrupt images are refused or repaired.
  write_file(path, b);
  try {
    auto img = open_image(path, rw());
    img->write(1 << 20, pattern(200000, 2));
    img->flush();
  } catch (const vireo::Error&) {
  }
}

TEST(HostileChain, BackingLoopIsDetected) {
  TempDir d;
  CreateOptions c;
  c.size = 1 << 20;
  create_image(d.path("a.qcow2"), c);
  c.backing_file = "a.qcow2";
  c.backing_format = "qcow2";
  create_image(d.path("b.qcow2"), c);
  // Point a at b: a -> b -> a.
  {
    auto a = Qcow2Image::open(d.path("a.qcow2"), rw());
    OpenOptions o;
    a->set_backing("", "");
  }
  auto raw = read_file(d.path("a.qcow2"));
  auto rawb = read_file(d.path("b.qcow2"));
  // Copy b's header cluster (which names a.qcow2) but name b.qcow2 instead.
  std::string hay(rawb.begin(), rawb.begin() + 65536);
  auto at = hay.find("a.qcow2");
  ASSERT_NE(at, std::string::npos);
  rawb[at] = 'b';  // b now names itself
  write_file(d.path("b.qcow2"), rawb);
  try {
    open_image(d.path("b.qcow2"), ro());
    FAIL() << "self-referencing backing chain was accepted";
  } catch (const vireo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("loop"), std::string::npos) << e.what();
  }
  (void)raw;
}

TEST(HostileChain, MissingBackingFileIsAClearError) {
  TempDir d;
  CreateOptions c;
  c.size = 1 << 20;
  c.backing_file = "nope.qcow2";
  c.backing_format = "qcow2";
  create_image(d.path("t.qcow2"), c);
  try {
    open_image(d.path("t.qcow2"), ro());
    FAIL() << "missing backing file accepted";
  } catch (const vireo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Could not open backing file"), std::string::npos) << e.what();
  }
  OpenOptions o = ro();
  o.open_backing = false;
  EXPECT_NO_THROW(open_image(d.path("t.qcow2"), o));
  c.size = 0;
  EXPECT_THROW(create_image(d.path("u.qcow2"), c), vireo::Error);  // size from a missing backing file
}

}  // namespace
