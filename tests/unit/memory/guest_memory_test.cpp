#include "memory/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <array>
#include <cstring>
#include <limits>

namespace vireo {
namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t GiB = 1ull << 30;

MemoryConfig cfg(uint64_t size) {
  MemoryConfig c;
  c.size = size;
  return c;
}

TEST(GuestMemory, SmallRamIsOneRegionAtZero) {
  GuestMemory m(cfg(64 * MiB));
  ASSERT_EQ(m.regions().size(), 1u);
  EXPECT_EQ(m.regions()[0].gpa, 0u);
  EXPECT_EQ(m.regions()[0].size, 64 * MiB);
  EXPECT_EQ(m.size(), 64 * MiB);
  EXPECT_GE(m.memfd(), 0);
  struct stat st{};
  ASSERT_EQ(fstat(m.memfd(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 64 * MiB);
}

TEST(GuestMemory, LargeRamSplitsAroundTheMmioHole) {
  // MAP_NORESERVE: 4 GiB of address space costs nothing until touched.
  GuestMemory m(cfg(4 * GiB));
  ASSERT_EQ(m.regions().size(), 2u);
  EXPECT_EQ(m.regions()[0].gpa, 0u);
  EXPECT_EQ(m.regions()[0].size, layout::kLowRamEnd);
  EXPECT_EQ(m.regions()[1].gpa, layout::kHighRamStart);
  EXPECT_EQ(m.regions()[1].size, 4 * GiB - layout::kLowRamEnd);
  EXPECT_EQ(m.regions()[1].fd_offset, layout::kLowRamEnd);

  // Edges of the low region and the hole.
  EXPECT_TRUE(m.contains(layout::kLowRamEnd - 8, 8));
  EXPECT_FALSE(m.contains(layout::kLowRamEnd - 4, 8));  // straddles into the hole
  EXPECT_FALSE(m.contains(layout::kLowRamEnd, 1));
  EXPECT_FALSE(m.contains(layout::kMmioHoleEnd - 1, 1));
  EXPECT_FALSE(m.contains(layout::kLowRamEnd - 8, layout::kHighRamStart - layout::kLowRamEnd + 16));  // across
  EXPECT_TRUE(m.contains(layout::kHighRamStart, 1));
  const uint64_t end = layout::kHighRamStart + m.regions()[1].size;
  EXPECT_TRUE(m.contains(end - 1, 1));
  EXPECT_FALSE(m.contains(end - 1, 2));
  EXPECT_FALSE(m.contains(end, 1));
  EXPECT_TRUE(m.contains(end, 0));

  // High RAM is backed by the same memfd, right after low RAM.
  const uint32_t v = 0xdeadbeef;
  m.write_obj(layout::kHighRamStart + 16, v);
  uint32_t back = 0;
  ASSERT_EQ(pread(m.memfd(), &back, 4, static_cast<off_t>(layout::kLowRamEnd + 16)), 4);
  EXPECT_EQ(back, v);
}

TEST(GuestMemory, ReadWriteRoundTripAndOutOfRangeThrows) {
  GuestMemory m(cfg(2 * MiB));
  const std::array<uint8_t, 4> in{1, 2, 3, 4};
  m.write(0x1000, in);
  std::array<uint8_t, 4> out{};
  m.read(0x1000, out);
  EXPECT_EQ(in, out);
  m.write(2 * MiB - 4, in);  // last 4 bytes
  EXPECT_THROW(m.write(2 * MiB - 3, in), GuestMemoryError);
  EXPECT_THROW(m.read(2 * MiB, out), GuestMemoryError);
  EXPECT_THROW(m.read_obj<uint64_t>(2 * MiB - 4), GuestMemoryError);
  try {
    m.read(0x300000, out);
    FAIL() << "no throw";
  } catch (const GuestMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("0x300000"), std::string::npos) << e.what();
  }
}

TEST(GuestMemory, WrapAroundIsRejected) {
  GuestMemory m(cfg(2 * MiB));
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  EXPECT_FALSE(m.contains(max, 2));
  EXPECT_FALSE(m.contains(0x1000, max));
  EXPECT_FALSE(m.contains(max - 0xfff, 0x2000));
  EXPECT_FALSE(m.slice(8, max - 4).has_value());
  std::array<uint8_t, 16> buf{};
  EXPECT_THROW(m.read(max - 7, buf), GuestMemoryError);
}

TEST(GuestMemory, SliceIsAViewOfRam) {
  GuestMemory m(cfg(2 * MiB));
  auto s = m.slice(0x2000, 16);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->size(), 16u);
  (*s)[3] = 0x5a;
  EXPECT_EQ(m.read_obj<uint8_t>(0x2003), 0x5a);
  EXPECT_FALSE(m.slice(2 * MiB - 8, 16).has_value());
  EXPECT_TRUE(m.slice(2 * MiB, 0).has_value());
  EXPECT_FALSE(m.slice(2 * MiB + 1, 0).has_value());
}

TEST(GuestMemory, DiscardZeroesAndChecksAlignment) {
  GuestMemory m(cfg(2 * MiB));
  m.write_obj<uint64_t>(0x3000, 0x1122334455667788ull);
  m.write_obj<uint64_t>(0x5000, 42);
  m.discard(0x3000, 0x1000);
  EXPECT_EQ(m.read_obj<uint64_t>(0x3000), 0u);
  EXPECT_EQ(m.read_obj<uint64_t>(0x5000), 42u);  // neighbours untouched
  EXPECT_THROW(m.discard(0x3001, 0x1000), GuestMemoryError);
  EXPECT_THROW(m.discard(0x3000, 0x800), GuestMemoryError);
  EXPECT_THROW(m.discard(2 * MiB, 0x1000), GuestMemoryError);
}

TEST(GuestMemory, BadSizesAreErrors) {
  EXPECT_THROW(GuestMemory(cfg(0)), Error);
  EXPECT_THROW(GuestMemory(cfg(4097)), Error);
  MemoryConfig c = cfg(3 * MiB);
  c.hugepages = true;  // not a multiple of 2 MiB
  EXPECT_THROW(GuestMemory{c}, Error);
}

TEST(GuestMemory, PreallocTouchesPages) {
  MemoryConfig c = cfg(4 * MiB);
  c.prealloc = true;
  c.thp = false;
  GuestMemory m(c);
  struct stat st{};
  ASSERT_EQ(fstat(m.memfd(), &st), 0);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 4 * MiB);  // all of it is allocated now
}

TEST(GuestMemory, HugepagesWithoutReservedPagesFailClearly) {
  MemoryConfig c = cfg(2 * MiB);
  c.hugepages = true;
  try {
    GuestMemory m(c);
    GTEST_SKIP() << "this host has free 2 MiB hugepages reserved; the shortage path cannot be exercised";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("guest memory"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("huge"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vireo
