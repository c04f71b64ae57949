#include "virtio/virtqueue.h"

#include <gtest/gtest.h>

#include "unit/virtio/guest_ring.h"

using namespace vireo;
using namespace vireo::virtio;
using vireo::virtio::testing::GuestRing;

namespace {

constexpr uint64_t kAll = bit(kFIndirectDesc) | bit(kFEventIdx) | bit(kFVersion1);
constexpr uint64_t kRing = 0x10000, kData = 0x100000, kTable = 0x80000;

class VirtioQueue : public ::testing::Test {
 protected:
  VirtioQueue() : mem(MemoryConfig{.size = 4 << 20, .thp = false, .name = "vq-test"}), ring(mem, kRing, 8) {}
  GuestMemory mem;
  GuestRing ring;
};

TEST_F(VirtioQueue, EmptyQueuePopsNothing) {
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_FALSE(q.pop().has_value());
}

TEST_F(VirtioQueue, ChainReadableThenWritable) {
  ring.set_desc(0, kData, 16, kDescFNext, 3);
  ring.set_desc(3, kData + 0x1000, 512, kDescFNext | kDescFWrite, 5);
  ring.set_desc(5, kData + 0x2000, 1, kDescFWrite);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  auto c = q.pop();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->id, 0);
  EXPECT_EQ(c->desc_count, 3);
  ASSERT_EQ(c->readable.size(), 1u);
  EXPECT_EQ(c->readable[0].addr, kData);
  EXPECT_EQ(c->readable_bytes, 16u);
  ASSERT_EQ(c->writable.size(), 2u);
  EXPECT_EQ(c->writable_bytes, 513u);
  EXPECT_FALSE(q.pop());
  q.push(*c, 513);
  EXPECT_EQ(ring.used_idx(), 1);
  EXPECT_EQ(ring.used(0).id, 0u);
  EXPECT_EQ(ring.used(0).len, 513u);
}

TEST_F(VirtioQueue, IndirectTable) {
  ring.set_indirect(kTable, 0, kData, 16, kDescFNext, 2);
  ring.set_indirect(kTable, 2, kData + 0x100, 100, kDescFNext | kDescFWrite, 1);
  ring.set_indirect(kTable, 1, kData + 0x200, 1, kDescFWrite);
  ring.set_desc(4, kTable, 3 * 16, kDescFIndirect);
  ring.publish(4);
  SplitQueue q(mem, ring.config(), kAll);
  auto c = q.pop();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->id, 4);
  EXPECT_EQ(c->readable_bytes, 16u);
  EXPECT_EQ(c->writable_bytes, 101u);
  ASSERT_EQ(c->writable.size(), 2u);
  EXPECT_EQ(c->writable[1].addr, kData + 0x200);
}

TEST_F(VirtioQueue, WrapAroundManyBuffers) {
  SplitQueue q(mem, ring.config(), kAll);
  for (int round = 0; round < 70000; round += 1) {  // crosses the 16-bit index wrap
    uint16_t head = round % 8;
    ring.set_desc(head, kData + head * 64, 64, 0);
    ring.publish(head);
    auto c = q.pop();
    ASSERT_TRUE(c) << round;
    ASSERT_EQ(c->id, head);
    q.push(*c, 0);
  }
  EXPECT_EQ(ring.used_idx(), static_cast<uint16_t>(70000));
}

TEST_F(VirtioQueue, NotificationSuppressionWithoutEventIdx) {
  SplitQueue q(mem, ring.config(), bit(kFVersion1));
  ring.set_desc(0, kData, 8, 0);
  ring.publish(0);
  auto c = q.pop();
  q.push(*c, 0);
  EXPECT_TRUE(q.should_notify());
  ring.set_avail_flags(kAvailFNoInterrupt);
  q.push(*c, 0);
  EXPECT_FALSE(q.should_notify());
  q.disable_notifications();
  EXPECT_EQ(ring.used_flags(), kUsedFNoNotify);
  EXPECT_FALSE(q.enable_notifications());
  EXPECT_EQ(ring.used_flags(), 0);
}

TEST_F(VirtioQueue, EventIdx) {
  SplitQueue q(mem, ring.config(), kAll);
  for (uint16_t i = 0; i < 4; ++i) {
    ring.set_desc(i, kData, 8, 0);
    ring.publish(i);
  }
  ring.set_used_event(2);  // driver: interrupt me when used idx passes 2 (i.e. becomes 3)
  auto c0 = q.pop();
  q.push(*c0, 0);
  EXPECT_TRUE(q.should_notify());  // the first notification is always sent
  auto c1 = q.pop();
  q.push(*c1, 0);  // used idx 2
  EXPECT_FALSE(q.should_notify());
  auto c2 = q.pop();
  q.push(*c2, 0);  // used idx 3: crosses used_event
  EXPECT_TRUE(q.should_notify());
  auto c3 = q.pop();
  q.push(*c3, 0);
  EXPECT_FALSE(q.should_notify());
  // Device side: avail_event tells the driver where to notify next; buffers arriving meanwhile are seen.
  EXPECT_FALSE(q.enable_notifications());
  EXPECT_EQ(ring.avail_event(), 4);
  ring.publish(0);
  EXPECT_TRUE(q.enable_notifications());
}

TEST_F(VirtioQueue, CopyAcrossSegments) {
  std::vector<uint8_t> pattern(300);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i);
  std::vector<Segment> segs{{kData, 100}, {kData + 0x1000, 50}, {kData + 0x2000, 200}};
  EXPECT_EQ(copy_to_segments(mem, segs, 10, pattern), 300u);
  EXPECT_EQ(mem.read_obj<uint8_t>(kData + 10), 0);
  EXPECT_EQ(mem.read_obj<uint8_t>(kData + 0x1000), 90);
  EXPECT_EQ(mem.read_obj<uint8_t>(kData + 0x2000), 140);
  std::vector<uint8_t> back(400);
  EXPECT_EQ(copy_from_segments(mem, segs, 10, back), 340u);
  EXPECT_TRUE(std::equal(pattern.begin(), pattern.end(), back.begin()));
}

// ---- configuration validation

TEST_F(VirtioQueue, RejectsBadSizes) {
  for (uint16_t size : {0, 3, 100}) {
    QueueConfig c = ring.config();
    c.size = size;
    EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError) << size;
  }
  QueueConfig c = ring.config();
  c.size = 65535;
  EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError);
}

TEST_F(VirtioQueue, RejectsMisalignedOrOutsideRings) {
  QueueConfig c = ring.config();
  c.desc_addr += 8;
  EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError);
  c = ring.config();
  c.driver_addr += 1;
  EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError);
  c = ring.config();
  c.device_addr += 2;
  EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError);
  c = ring.config();
  c.device_addr = (4 << 20) - 16;  // straddles the end of RAM
  EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError);
  c = ring.config();
  c.desc_addr = 0xFFFF'FFFF'FFFF'FFF0ull;  // would wrap
  EXPECT_THROW(SplitQueue(mem, c, kAll), QueueError);
}

// ---- malformed chains

TEST_F(VirtioQueue, RejectsHeadOutOfRange) {
  ring.publish(8);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsNextOutOfRange) {
  ring.set_desc(0, kData, 8, kDescFNext, 9);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsLoop) {
  ring.set_desc(0, kData, 8, kDescFNext, 1);
  ring.set_desc(1, kData, 8, kDescFNext, 0);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsBufferOutsideRam) {
  ring.set_desc(0, (4 << 20) - 4, 8, 0);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsHugeLengthWrap) {
  ring.set_desc(0, 0xFFFF'FFFF'FFFF'F000ull, 0x2000, 0);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsReadableAfterWritable) {
  ring.set_desc(0, kData, 8, kDescFNext | kDescFWrite, 1);
  ring.set_desc(1, kData, 8, 0);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsAvailIndexJump) {
  ring.set_avail_idx(9);  // more than the queue size ahead
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsIndirectWithoutFeature) {
  ring.set_indirect(kTable, 0, kData, 8, 0);
  ring.set_desc(0, kTable, 16, kDescFIndirect);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), bit(kFVersion1));
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsIndirectInIndirect) {
  ring.set_indirect(kTable, 0, kTable + 0x100, 16, kDescFIndirect);
  ring.set_desc(0, kTable, 16, kDescFIndirect);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsIndirectWithNext) {
  ring.set_indirect(kTable, 0, kData, 8, 0);
  ring.set_desc(0, kTable, 16, kDescFIndirect | kDescFNext, 1);
  ring.set_desc(1, kData, 8, 0);
  ring.publish(0);
  SplitQueue q(mem, ring.config(), kAll);
  EXPECT_THROW(q.pop(), QueueError);
}

TEST_F(VirtioQueue, RejectsBadIndirectTables) {
  for (uint32_t len : {0u, 15u, 24u}) {
    GuestRing r(mem, kRing + 0x4000, 8);
    r.set_desc(0, kTable, len, kDescFIndirect);
    r.publish(0);
    SplitQueue q(mem, r.config(), kAll);
    EXPECT_THROW(q.pop(), QueueError) << len;
  }
  {
    GuestRing r(mem, kRing + 0x4000, 8);  // table outside RAM
    r.set_desc(0, (4 << 20) - 16, 32, kDescFIndirect);
    r.publish(0);
    SplitQueue q(mem, r.config(), kAll);
    EXPECT_THROW(q.pop(), QueueError);
  }
  {
    GuestRing r(mem, kRing + 0x4000, 8);  // next beyond the table
    r.set_indirect(kTable, 0, kData, 8, kDescFNext, 2);
    r.set_desc(0, kTable, 32, kDescFIndirect);
    r.publish(0);
    SplitQueue q(mem, r.config(), kAll);
    EXPECT_THROW(q.pop(), QueueError);
  }
  {
    GuestRing r(mem, kRing + 0x4000, 8);  // loop inside the table
    r.set_indirect(kTable, 0, kData, 8, kDescFNext, 1);
    r.set_indirect(kTable, 1, kData, 8, kDescFNext, 0);
    r.set_desc(0, kTable, 32, kDescFIndirect);
    r.publish(0);
    SplitQueue q(mem, r.config(), kAll);
    EXPECT_THROW(q.pop(), QueueError);
  }
}

}  // namespace
