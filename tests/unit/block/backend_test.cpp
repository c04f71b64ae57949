#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include <cstring>

#include "block/backend.h"
#include "common/error.h"
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

namespace {

class UringTest : public testing::TestWithParam<bool> {};

TEST_P(UringTest, ReadWriteFlushDiscardZeroes) {
  const bool direct = GetParam();
  TempDir d;
  CreateOptions c;
  c.format = "raw";
  c.size = 4 << 20;
  create_image(d.path("r.raw"), c);
  UringBackend::Options o;
  o.direct = direct;
  std::unique_ptr<UringBackend> be;
  try {
    be = std::make_unique<UringBackend>(d.path("r.raw"), o);
  } catch (const vireo::Error& e) {
    std::string what = e.what();
    if (what.find("io_uring") != std::string::npos) GTEST_SKIP() << "io_uring unavailable: " << what;
    if (direct && what.find("nvalid argument") != std::string::npos) GTEST_SKIP() << "no O_DIRECT here: " << what;
    throw;
  }
  EXPECT_EQ(be->size(), 4u << 20);
  auto submit_wait = [&](IoRequest r) {
    std::promise<int> p;
    r.done = [&](int res) { p.set_value(res); };
    be->submit(std::move(r));
    return p.get_future().get();
  };
  // Aligned (4 KiB) and unaligned buffers/offsets; with O_DIRECT the latter take the bounce path.
  std::vector<uint8_t>* keep[2];
  alignas(4096) static uint8_t aligned_buf[65536];
  auto p = pattern(65536, 77);
  std::copy(p.begin(), p.end(), aligned_buf);
  IoRequest w;
  w.kind = IoKind::Write;
  w.offset = 1 << 20;
  w.iov = {iovec{aligned_buf, 65536}};
  EXPECT_EQ(submit_wait(std::move(w)), 0);
  auto q = pattern(1001, 78);
  keep[0] = &q;
  IoRequest w2;
  w2.kind = IoKind::Write;
  w2.offset = 3;
  w2.iov = {iovec{q.data(), q.size()}};
  EXPECT_EQ(submit_wait(std::move(w2)), 0);
  IoRequest f;
  f.kind = IoKind::Flush;
  EXPECT_EQ(submit_wait(std::move(f)), 0);
  std::vector<uint8_t> back(1001);
  keep[1] = &back;
  IoRequest r;
  r.kind = IoKind::Read;
  r.offset = 3;
  r.iov = {iovec{back.data(), back.size()}};
  EXPECT_EQ(submit_wait(std::move(r)), 0);
  EXPECT_EQ(back, q);
  alignas(4096) static uint8_t rb[65536];
  IoRequest r2;
  r2.kind = IoKind::Read;
  r2.offset = 1 << 20;
  r2.iov = {iovec{rb, 32768}, iovec{rb + 32768, 32768}};
  EXPECT_EQ(submit_wait(std::move(r2)), 0);
  EXPECT_TRUE(std::equal(rb, rb + 65536, p.begin()));
  IoRequest z;
  z.kind = IoKind::WriteZeroes;
  z.offset = 1 << 20;
  z.length = 8192;
  EXPECT_EQ(submit_wait(std::move(z)), 0);
  IoRequest dsc;
  dsc.kind = IoKind::Discard;
  dsc.offset = (1 << 20) + 8192;
  dsc.length = 8192;
  EXPECT_EQ(submit_wait(std::move(dsc)), 0);
  IoRequest r3;
  r3.kind = IoKind::Read;
  r3.offset = 1 << 20;
  r3.iov = {iovec{rb, 65536}};
  EXPECT_EQ(submit_wait(std::move(r3)), 0);
  for (int i = 0; i < 16384; i++) ASSERT_EQ(rb[i], 0) << i;
  EXPECT_TRUE(std::equal(rb + 16384, rb + 65536, p.begin() + 16384));
  IoRequest bad;
  bad.kind = IoKind::Read;
  bad.offset = (4 << 20) - 512;
  bad.iov = {iovec{rb, 4096}};
  EXPECT_EQ(submit_wait(std::move(bad)), -EINVAL);
  // Many in flight at once (more than the queue depth).
  std::atomic<int> ok{0};
  static uint8_t many[256][4096];
  for (int i = 0; i < 256; i++) {
    std::memset(many[i], i, 4096);
    IoRequest m;
    m.kind = IoKind::Write;
    m.offset = static_cast<uint64_t>(i) * 4096 + (2 << 20);
    m.iov = {iovec{many[i], 4096}};
    m.done = [&](int res) { ok += res == 0; };
    be->submit(std::move(m));
  }
  be->drain();
  EXPECT_EQ(ok.load(), 256);
  be.reset();
  auto img = open_image(d.path("r.raw"), ro());
  std::vector<uint8_t> chk(4096);
  img->read((2 << 20) + 200 * 4096, chk);
  EXPECT_EQ(chk, std::vector<uint8_t>(4096, 200));
  (void)keep;
}

INSTANTIATE_TEST_SUITE_P(Modes, UringTest, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& i) { return i.param ? "direct" : "buffered"; });

TEST(UringTest, ReadOnlyRefusesWrites) {
  TempDir d;
  CreateOptions c;
  c.format = "raw";
  c.size = 1 << 20;
  create_image(d.path("r.raw"), c);
  UringBackend::Options o;
  o.read_only = true;
  UringBackend be(d.path("r.raw"), o);
  std::promise<int> p;
  std::vector<uint8_t> buf(512);
  IoRequest w;
  w.kind = IoKind::Write;
  w.iov = {iovec{buf.data(), buf.size()}};
  w.done = [&](int res) { p.set_value(res); };
  be.submit(std::move(w));
  EXPECT_EQ(p.get_future().get(), -EROFS);
}

}  // namespace
