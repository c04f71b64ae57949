#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "block/backend.h"
#include "helpers.h"

using namespace vireo::block;
using namespace blocktest;

namespace {

class BackendTest : public testing::TestWithParam<std::string> {};

TEST_P(BackendTest, ConcurrentRequestsCompleteWithCorrectData) {
  TempDir d;
  CreateOptions c;
  c.format = GetParam();
  c.size = 8 << 20;
  c.cluster_size = 4096;
  create_image(d.path("img"), c);
  std::shared_ptr<BlockImage> img = open_image(d.path("img"), rw());
  ThreadPoolBackend be(img, 4);
  EXPECT_EQ(be.size(), 8u << 20);
  // 64 concurrent 64 KiB writes of distinct patterns, each into its own region.
  std::vector<std::vector<uint8_t>> bufs;
  for (int i = 0; i < 64; i++) bufs.push_back(pattern(65536, static_cast<uint32_t>(i + 1)));
  std::atomic<int> ok{0}, done{0};
  for (int i = 0; i < 64; i++) {
    IoRequest r;
    r.kind = IoKind::Write;
    r.offset = static_cast<uint64_t>(i) * 131072;
    // two iovecs per request
    r.iov = {iovec{bufs[i].data(), 1000}, iovec{bufs[i].data() + 1000, 65536 - 1000}};
    r.done = [&](int res) {
      if (res == 0) ok++;
      done++;
    };
    be.submit(std::move(r));
  }
  be.drain();
  EXPECT_EQ(done.load(), 64);
  EXPECT_EQ(ok.load(), 64);
  std::promise<int> flushed;
  IoRequest f;
  f.kind = IoKind::Flush;
  f.done = [&](int res) { flushed.set_value(res); };
  be.submit(std::move(f));
  EXPECT_EQ(flushed.get_future().get(), 0);
  for (int i = 0; i < 64; i++) {
    std::vector<uint8_t> back(65536);
    std::promise<int> p;
    IoRequest r;
    r.kind = IoKind::Read;
    r.offset = static_cast<uint64_t>(i) * 131072;
    r.iov = {iovec{back.data(), back.size()}};
    r.done = [&](int res) { p.set_value(res); };
    be.submit(std::move(r));
    ASSERT_EQ(p.get_future().get(), 0);
    ASSERT_EQ(back, bufs[i]) << i;
  }
  // Out of range and write-zeroes / discard.
  std::promise<int> bad;
  IoRequest r;
  r.kind = IoKind::Read;
  r.offset = (8 << 20) - 10;
  std::vector<uint8_t> tmp(100);
  r.iov = {iovec{tmp.data(), tmp.size()}};
  r.done = [&](int res) { bad.set_value(res); };
  be.submit(std::move(r));
  EXPECT_EQ(bad.get_future().get(), -EINVAL);
  std::promise<int> z;
  IoRequest wz;
  wz.kind = IoKind::WriteZeroes;
  wz.offset = 0;
  wz.length = 65536;
  wz.done = [&](int res) { z.set_value(res); };
  be.submit(std::move(wz));
  EXPECT_EQ(z.get_future().get(), 0);
  std::vector<uint8_t> back(65536);
  img->read(0, back);
  EXPECT_EQ(back, std::vector<uint8_t>(65536, 0));
}

INSTANTIATE_TEST_SUITE_P(Formats, BackendTest, testing::Values("raw", "qcow2"));

TEST(BackendTest, ReadOnlyImageRefusesWrites) {
  TempDir d;
  CreateOptions c;
  c.format = "qcow2";
  c.size = 1 << 20;
  create_image(d.path("img"), c);
  std::shared_ptr<BlockImage> img = open_image(d.path("img"), ro());
  ThreadPoolBackend be(img, 1);
  EXPECT_TRUE(be.read_only());
  std::promise<int> p;
  std::vector<uint8_t> buf(512, 1);
  IoRequest r;
  r.kind = IoKind::Write;
  r.iov = {iovec{buf.data(), buf.size()}};
  r.done = [&](int res) { p.set_value(res); };
  be.submit(std::move(r));
  EXPECT_EQ(p.get_future().get(), -EROFS);
}

}  // namespace
