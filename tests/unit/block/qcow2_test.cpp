#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>

#include "block/qcow2.h"
#include "common/error.h"
#include "helpers.h"

using namespace vireo::block;
using namespace blocktest;

namespace {

struct Params {
  uint32_t cluster_size;
  uint32_t refcount_bits;
  std::string compat;
  bool lazy = false;
  bool ext = false;
};

std::string name_of(const testing::TestParamInfo<Params>& i) {
  return "cs" + std::to_string(i.param.cluster_size) + "_rb" + std::to_string(i.param.refcount_bits) + "_v" +
         (i.param.compat == "0.10" ? "2" : "3") + (i.param.lazy ? "_lazy" : "") + (i.param.ext ? "_extl2" : "");
}

class Qcow2Random : public testing::TestWithParam<Params> {};

// Random writes / zeroes / discards against an in-memory model, with reopen in between, then
// qemu-img check and compare as oracles when available.
TEST_P(Qcow2Random, MatchesModel) {
  const Params p = GetParam();
  TempDir d;
  CreateOptions c;
  c.format = "qcow2";
  c.size = 8ULL << 20;
  c.cluster_size = p.cluster_size;
  c.refcount_bits = p.refcount_bits;
  c.compat = p.compat;
  c.lazy_refcounts = p.lazy;
  c.extended_l2 = p.ext;
  std::string path = d.path("t.qcow2");
  create_image(path, c);
  std::vector<uint8_t> model(c.size, 0);
  std::mt19937_64 rng(p.cluster_size * 131 + p.refcount_bits);
  for (int round = 0; round < 3; round++) {
    auto img = open_image(path, rw());
    ASSERT_EQ(img->size(), c.size);
    for (int i = 0; i < 60; i++) {
      uint64_t len = 1 + rng() % (3 * p.cluster_size + 1000);
      if (rng() % 4 == 0) len = 1 + rng() % 300000;
      uint64_t off = rng() % (c.size - len);
      int op = static_cast<int>(rng() % 10);
      if (op < 7) {
        auto data = pattern(len, static_cast<uint32_t>(rng()));
        img->write(off, data);
        std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(off));
      } else if (op < 9) {
        img->write_zeroes(off, len, op == 8);
        std::fill_n(model.begin() + static_cast<ptrdiff_t>(off), len, 0);
      } else {
        // discard: only whole clusters are guaranteed to change; model them as zero (no backing file)
        uint64_t a = (off + p.cluster_size - 1) / p.cluster_size * p.cluster_size;
        uint64_t b = (off + len) / p.cluster_size * p.cluster_size;
        if (a < b) {
          img->discard(a, b - a);
          std::fill(model.begin() + static_cast<ptrdiff_t>(a), model.begin() + static_cast<ptrdiff_t>(b), 0);
        }
      }
      if (i % 20 == 0) {
        std::vector<uint8_t> chk(len);
        img->read(off, chk);
        ASSERT_TRUE(std::equal(chk.begin(), chk.end(), model.begin() + static_cast<ptrdiff_t>(off)));
      }
    }
    if (round == 1) img->flush();
    ASSERT_EQ(read_all(*img), model) << "round " << round;
  }
  {
    auto img = open_image(path, ro());
    ASSERT_EQ(read_all(*img), model);
    auto* q = dynamic_cast<Qcow2Image*>(img.get());
    ASSERT_NE(q, nullptr);
    CheckResult r = q->check(RepairMode::None);
    EXPECT_EQ(r.corruptions, 0u);
    EXPECT_EQ(r.leaks, 0u);
    for (auto& m : r.messages) ADD_FAILURE() << m;
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
    write_file(d.path("model.raw"), model);
    r = run("qemu-img compare -f qcow2 -F raw " + path + " " + d.path("model.raw"));
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Qcow2Random,
                         testing::Values(Params{65536, 16, "1.1"}, Params{512, 16, "1.1"},
                                         Params{4096, 1, "1.1"}, Params{4096, 64, "1.1"},
                                         Params{2 << 20, 16, "1.1"}, Params{65536, 16, "0.10"},
                                         Params{1024, 8, "1.1", true}, Params{16384, 2, "1.1"},
                                         Params{512, 32, "1.1"}, Params{32768, 16, "1.1", false, true}),
                         name_of);

TEST(Qcow2, HeaderFieldsAndInfo) {
  TempDir d;
  CreateOptions c;
  c.size = 10ULL << 30;
  c.lazy_refcounts = true;
  c.compression_type = "zstd";
  create_image(d.path("a.qcow2"), c);
  EXPECT_EQ(probe_format(d.path("a.qcow2")), "qcow2");
  auto q = Qcow2Image::open(d.path("a.qcow2"), ro());
  auto i = q->info();
  EXPECT_EQ(i.version, 3u);
  EXPECT_EQ(i.compat, "1.1");
  EXPECT_EQ(i.compression_type, "zstd");
  EXPECT_TRUE(i.lazy_refcounts);
  EXPECT_EQ(i.refcount_bits, 16u);
  EXPECT_EQ(i.cluster_size, 65536u);
  EXPECT_EQ(q->size(), 10ULL << 30);
  Extent e = q->block_status(0, q->size());
  EXPECT_FALSE(e.data);
  EXPECT_TRUE(e.zero);
  EXPECT_EQ(e.length, q->size());
}

TEST(Qcow2, CreateRejectsBadOptions) {
  TempDir d;
  CreateOptions c;
  c.size = 1 << 20;
  c.cluster_size = 1000;
  EXPECT_THROW(create_image(d.path("a"), c), vireo::Error);
  c.cluster_size = 65536;
  c.refcount_bits = 3;
  EXPECT_THROW(create_image(d.path("a"), c), vireo::Error);
  c.refcount_bits = 8;
  c.compat = "0.10";
  EXPECT_THROW(create_image(d.path("a"), c), vireo::Error);
  c.refcount_bits = 16;
  c.compression_type = "zstd";
  EXPECT_THROW(create_image(d.path("a"), c), vireo::Error);
  c.compat = "1.1";
  c.compression_type = "zlib";
  c.extended_l2 = true;
  c.cluster_size = 4096;
  EXPECT_THROW(create_image(d.path("a"), c), vireo::Error);
}

TEST(Qcow2, BackingChainCopyOnWriteRelativePath) {
  TempDir d;
  CreateOptions b;
  b.size = 4 << 20;
  create_image(d.path("base.qcow2"), b);
  auto base_data = pattern(4 << 20, 7);
  {
    auto img = open_image(d.path("base.qcow2"), rw());
    img->write(0, base_data);
  }
  CreateOptions o;
  o.backing_file = "base.qcow2";  // relative: resolved against the overlay's directory
  o.backing_format = "qcow2";
  o.cluster_size = 4096;
  create_image(d.path("top.qcow2"), o);
  auto model = base_data;
  {
    auto img = open_image(d.path("top.qcow2"), rw());
    EXPECT_EQ(img->size(), 4u << 20);
    ASSERT_NE(img->backing(), nullptr);
    EXPECT_EQ(read_all(*img), model);
    auto p = pattern(100, 9);
    img->write(5000, p);  // partial cluster: the rest comes from the backing file
    std::copy(p.begin(), p.end(), model.begin() + 5000);
    img->write_zeroes(65536, 65536, false);
    std::fill_n(model.begin() + 65536, 65536, 0);
    img->write_zeroes(200000, 10, false);
    std::fill_n(model.begin() + 200000, 10, 0);
    EXPECT_EQ(read_all(*img), model);
    Extent e = img->block_status(1 << 20, 1 << 20);
    EXPECT_EQ(e.depth, 1);
    EXPECT_TRUE(e.data);
    e = img->block_status(4096, 4096);
    EXPECT_EQ(e.depth, 0);
    EXPECT_TRUE(e.data);
  }
  // Opening from another working directory still finds base.qcow2.
  auto img = open_image(d.path("top.qcow2"), ro());
  EXPECT_EQ(read_all(*img), model);
  // The base is untouched.
  auto base = open_image(d.path("base.qcow2"), ro());
  EXPECT_EQ(read_all(*base), base_data);
  if (have_qemu_img()) {
    write_file(d.path("model.raw"), model);
    auto r = run("qemu-img compare -F raw " + d.path("top.qcow2") + " " + d.path("model.raw"));
    EXPECT_EQ(r.status, 0) << r.out;
    r = run("qemu-img check " + d.path("top.qcow2"));
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(Qcow2, BackingV2WriteZeroesWritesRealZeroes) {
  TempDir d;
  CreateOptions b;
  b.format = "raw";
  b.size = 1 << 20;
  create_image(d.path("base.raw"), b);
  {
    auto img = open_image(d.path("base.raw"), rw());
    img->write(0, pattern(1 << 20, 1));
  }
  CreateOptions o;
  o.compat = "0.10";
  o.backing_file = d.path("base.raw");
  o.backing_format = "raw";
  create_image(d.path("top.qcow2"), o);
  auto img = open_image(d.path("top.qcow2"), rw());
  img->write_zeroes(0, 1 << 20, true);
  auto all = read_all(*img);
  EXPECT_EQ(all, std::vector<uint8_t>(1 << 20, 0));
}

TEST(Qcow2, SnapshotsCreateApplyDelete) {
  TempDir d;
  CreateOptions c;
  c.size = 2 << 20;
  c.cluster_size = 4096;
  std::string path = d.path("s.qcow2");
  create_image(path, c);
  auto v1 = pattern(2 << 20, 1), v2 = v1;
  {
    auto img = Qcow2Image::open(path, rw());
    img->write(0, v1);
    img->snapshot_create("one");
    EXPECT_THROW(img->snapshot_create("one"), vireo::Error);
    auto p = pattern(70000, 2);
    img->write(10000, p);
    std::copy(p.begin(), p.end(), v2.begin() + 10000);
    img->write_zeroes(1 << 20, 1 << 19, true);
    std::fill_n(v2.begin() + (1 << 20), 1 << 19, 0);
    img->snapshot_create("two");
    auto sn = img->snapshots();
    ASSERT_EQ(sn.size(), 2u);
    EXPECT_EQ(sn[0].name, "one");
    EXPECT_EQ(sn[0].id, "1");
    EXPECT_EQ(sn[1].id, "2");
    EXPECT_EQ(sn[1].disk_size, 2u << 20);
    img->write(0, pattern(4096, 3));
    img->snapshot_apply("one");
    EXPECT_EQ(read_all(*img), v1);
    img->snapshot_apply("2");
    EXPECT_EQ(read_all(*img), v2);
    EXPECT_THROW(img->snapshot_apply("nope"), vireo::Error);
    auto r = img->check(RepairMode::None);
    EXPECT_EQ(r.corruptions, 0u);
    EXPECT_EQ(r.leaks, 0u);
    for (auto& m : r.messages) ADD_FAILURE() << m;
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
    r = run("qemu-img snapshot -l " + path);
    EXPECT_NE(r.out.find("one"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("two"), std::string::npos) << r.out;
    write_file(d.path("v1.raw"), v1);
    r = run("qemu-img convert -l snapshot.name=one -O raw " + path + " " + d.path("conv.raw"));
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(read_file(d.path("conv.raw")), v1);
  }
  {
    auto img = Qcow2Image::open(path, rw());
    img->snapshot_delete("one");
    img->snapshot_delete("two");
    EXPECT_TRUE(img->snapshots().empty());
    EXPECT_EQ(read_all(*img), v2);
    img->write(0, pattern(8192, 4));
    auto r = img->check(RepairMode::None);
    EXPECT_EQ(r.corruptions + r.leaks, 0u);
    for (auto& m : r.messages) ADD_FAILURE() << m;
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

class Qcow2Compressed : public testing::TestWithParam<std::string> {};

TEST_P(Qcow2Compressed, WriteReadAndQemuAgrees) {
  TempDir d;
  CreateOptions c;
  c.size = 1 << 20;
  c.compression_type = GetParam();
  std::string path = d.path("c.qcow2");
  create_image(path, c);
  std::vector<uint8_t> model(c.size, 0);
  {
    auto img = Qcow2Image::open(path, rw());
    for (uint64_t off = 0; off < c.size; off += 65536) {
      std::vector<uint8_t> cl(65536);
      for (size_t i = 0; i < cl.size(); i++) cl[i] = static_cast<uint8_t>((i / 100 + off / 65536) & 0xff);
      if (off == 3 * 65536) cl = pattern(65536, 5);  // incompressible: stored normally
      img->write_compressed(off, cl);
      std::copy(cl.begin(), cl.end(), model.begin() + static_cast<ptrdiff_t>(off));
    }
    EXPECT_EQ(read_all(*img), model);
    Extent e = img->block_status(0, 65536);
    EXPECT_TRUE(e.compressed);
    // Overwrite part of a compressed cluster: copy-on-write out of the compressed data.
    auto p = pattern(1000, 6);
    img->write(65536 + 100, p);
    std::copy(p.begin(), p.end(), model.begin() + 65536 + 100);
    EXPECT_EQ(read_all(*img), model);
    auto r = img->check(RepairMode::None);
    EXPECT_EQ(r.corruptions + r.leaks, 0u);
    for (auto& m : r.messages) ADD_FAILURE() << m;
    EXPECT_GE(r.compressed_clusters, 14u);
  }
  auto img = open_image(path, ro());
  EXPECT_EQ(read_all(*img), model);
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
    write_file(d.path("model.raw"), model);
    r = run("qemu-img compare -F raw " + path + " " + d.path("model.raw"));
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(Qcow2, CompressedWithOneBitRefcounts) {
  TempDir d;
  CreateOptions c;
  c.size = 1 << 20;
  c.cluster_size = 4096;
  c.refcount_bits = 1;
  std::string path = d.path("c1.qcow2");
  create_image(path, c);
  std::vector<uint8_t> model(c.size, 0);
  {
    auto img = Qcow2Image::open(path, rw());
    for (uint64_t off = 0; off < 64 * 4096; off += 4096) {
      std::vector<uint8_t> cl(4096, static_cast<uint8_t>(off / 4096 + 1));
      img->write_compressed(off, cl);
      std::copy(cl.begin(), cl.end(), model.begin() + static_cast<ptrdiff_t>(off));
    }
    EXPECT_EQ(read_all(*img), model);
    auto r = img->check(RepairMode::None);
    EXPECT_EQ(r.corruptions + r.leaks, 0u);
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, Qcow2Compressed, testing::Values("zlib", "zstd"));

TEST(Qcow2, ResizeGrowAndShrink) {
  TempDir d;
  CreateOptions c;
  c.size = 1 << 20;
  c.cluster_size = 512;  // small clusters: growing needs a bigger L1 quickly
  std::string path = d.path("r.qcow2");
  create_image(path, c);
  auto p = pattern(1 << 20, 8);
  {
    auto img = open_image(path, rw());
    img->write(0, p);
    img->resize(64 << 20, false);
    EXPECT_EQ(img->size(), 64u << 20);
    auto q = pattern(4096, 9);
    img->write((64 << 20) - 4096, q);
    std::vector<uint8_t> back(4096);
    img->read((64 << 20) - 4096, back);
    EXPECT_EQ(back, q);
    EXPECT_THROW(img->resize(1 << 20, false), vireo::Error);
    img->resize(512 * 1000, true);
    EXPECT_THROW(img->resize(1000, true), vireo::Error);  // not a multiple of 512
  }
  {
    auto img = open_image(path, rw());
    EXPECT_EQ(img->size(), 512u * 1000);
    std::vector<uint8_t> back(512 * 1000);
    img->read(0, back);
    EXPECT_TRUE(std::equal(back.begin(), back.end(), p.begin()));
    img->resize(1 << 20, false);  // grown area reads as zeroes
    auto all = read_all(*img);
    for (size_t i = 512 * 1000; i < all.size(); i++) ASSERT_EQ(all[i], 0) << i;
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(Qcow2, PreallocationModes) {
  for (std::string mode : {"metadata", "falloc", "full"}) {
    TempDir d;
    CreateOptions c;
    c.size = 4 << 20;
    c.preallocation = mode;
    create_image(d.path("p.qcow2"), c);
    auto img = Qcow2Image::open(d.path("p.qcow2"), ro());
    Extent e = img->block_status(0, c.size);
    EXPECT_TRUE(e.data) << mode;
    EXPECT_EQ(e.length, c.size) << mode;
    EXPECT_EQ(read_all(*img), std::vector<uint8_t>(c.size, 0)) << mode;
    if (mode != "metadata") {
      EXPECT_GE(img->file_allocated_bytes(), c.size) << mode;
    }
    if (have_qemu_img()) {
      auto r = run("qemu-img check " + d.path("p.qcow2"));
      EXPECT_EQ(r.status, 0) << mode << r.out;
    }
  }
}

TEST(Qcow2, CheckFindsAndRepairsLeaksAndCorruption) {
  TempDir d;
  CreateOptions c;
  c.size = 4 << 20;
  std::string path = d.path("k.qcow2");
  create_image(path, c);
  auto p = pattern(1 << 20, 11);
  {
    auto img = open_image(path, rw());
    img->write(0, p);
  }
  // Refcount block is at cluster 2 (16-bit entries). Leak: grow the file by a cluster and mark it
  // used. Corruption: clear the refcount of the first data cluster.
  auto raw = read_file(path);
  uint64_t leak = raw.size() / 65536 + (raw.size() % 65536 != 0);
  raw.resize((leak + 1) * 65536, 0);
  uint64_t l1_off = 0;
  for (int i = 0; i < 8; i++) l1_off = l1_off << 8 | raw[40 + i];
  uint64_t l2_off = 0;
  for (int i = 0; i < 8; i++) l2_off = l2_off << 8 | raw[l1_off + i];
  l2_off &= 0x00fffffffffffe00ULL;
  uint64_t data_off = 0;
  for (int i = 0; i < 8; i++) data_off = data_off << 8 | raw[l2_off + i];
  data_off &= 0x00fffffffffffe00ULL;
  uint64_t data_cluster = data_off / 65536;
  raw[2 * 65536 + leak * 2 + 1] = 1;
  raw[2 * 65536 + data_cluster * 2 + 1] = 0;
  write_file(path, raw);
  {
    auto img = Qcow2Image::open(path, ro());
    auto r = img->check(RepairMode::None);
    EXPECT_EQ(r.leaks, 1u);
    EXPECT_GE(r.corruptions, 1u);
    bool saw_leak = false;
    for (auto& m : r.messages) saw_leak |= m == fmt::format("Leaked cluster {} refcount=1 reference=0", leak);
    EXPECT_TRUE(saw_leak);
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 2) << r.out;  // corruptions
    EXPECT_NE(r.out.find(fmt::format("Leaked cluster {} refcount=1 reference=0", leak)), std::string::npos) << r.out;
  }
  {
    auto img = Qcow2Image::open(path, rw());
    auto r = img->check(RepairMode::Leaks);
    EXPECT_EQ(r.leaks_fixed, 1u);
    EXPECT_EQ(r.leaks, 0u);
    EXPECT_GE(r.corruptions, 1u);
    r = img->check(RepairMode::All);
    EXPECT_GE(r.corruptions_fixed, 1u);
    EXPECT_EQ(r.corruptions, 0u);
    r = img->check(RepairMode::None);
    EXPECT_EQ(r.corruptions + r.leaks, 0u);
    for (auto& m : r.messages) ADD_FAILURE() << m;
    EXPECT_EQ(r.allocated_clusters, 16u);
    EXPECT_EQ(r.total_clusters, 64u);
    std::vector<uint8_t> back(1 << 20);
    img->read(0, back);
    EXPECT_EQ(back, p);
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(Qcow2, LazyRefcountsDirtyImageIsRepairedOnOpen) {
  TempDir d;
  CreateOptions c;
  c.size = 4 << 20;
  c.lazy_refcounts = true;
  std::string path = d.path("l.qcow2");
  create_image(path, c);
  auto p = pattern(1 << 20, 12);
  pid_t pid = fork();
  if (pid == 0) {
    try {
      OpenOptions o = rw();
      o.take_locks = false;
      auto img = open_image(path, o);
      img->write(0, p);
      img->flush();
      _exit(0);  // no destructor: the dirty bit stays set
    } catch (...) {
      _exit(1);
    }
  }
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  {
    auto img = Qcow2Image::open(path, ro());
    EXPECT_TRUE(img->is_dirty());
  }
  {
    auto img = Qcow2Image::open(path, rw());
    EXPECT_FALSE(img->is_dirty());
    std::vector<uint8_t> back(1 << 20);
    img->read(0, back);
    EXPECT_EQ(back, p);
  }
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(Qcow2, CrashDuringAllocatingWritesLeavesNoCorruption) {
  if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
  TempDir d;
  std::mt19937 rng(99);
  for (int iter = 0; iter < 12; iter++) {
    CreateOptions c;
    c.size = 64 << 20;
    c.cluster_size = iter % 2 ? 4096 : 65536;
    std::string path = d.path("crash.qcow2");
    create_image(path, c);
    pid_t pid = fork();
    if (pid == 0) {
      OpenOptions o = rw();
      o.take_locks = false;
      auto img = open_image(path, o);
      std::mt19937_64 r(static_cast<uint64_t>(iter));
      std::vector<uint8_t> buf(200000, 0x5a);
      for (;;) {
        uint64_t len = 1 + r() % buf.size();
        uint64_t off = r() % (c.size - len);
        img->write(off, std::span<const uint8_t>(buf.data(), len));
        if (r() % 8 == 0) img->flush();
        if (r() % 16 == 0) img->discard(off / 65536 * 65536, 65536);
      }
    }
    usleep(20000 + rng() % 150000);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    auto res = run("qemu-img check " + path);
    EXPECT_TRUE(res.status == 0 || res.status == 3) << "iteration " << iter << ": " << res.out;
  }
}

TEST(Qcow2, MakeEmptyAndSetBacking) {
  TempDir d;
  CreateOptions b;
  b.format = "raw";
  b.size = 1 << 20;
  create_image(d.path("b.raw"), b);
  auto bp = pattern(1 << 20, 21);
  {
    auto img = open_image(d.path("b.raw"), rw());
    img->write(0, bp);
  }
  CreateOptions c;
  c.size = 1 << 20;
  create_image(d.path("t.qcow2"), c);
  auto img = Qcow2Image::open(d.path("t.qcow2"), rw());
  img->write(0, pattern(1 << 20, 22));
  img->set_backing("b.raw", "raw");
  EXPECT_EQ(img->info().backing_file, "b.raw");
  EXPECT_EQ(img->info().backing_format, "raw");
  img->make_empty();
  EXPECT_EQ(read_all(*img), bp);
  auto r = img->check(RepairMode::None);
  EXPECT_EQ(r.corruptions + r.leaks, 0u);
  for (auto& m : r.messages) ADD_FAILURE() << m;
}

TEST(Qcow2, AmendRefcountBitsLazyAndCompat) {
  TempDir d;
  CreateOptions c;
  c.size = 2 << 20;
  std::string path = d.path("a.qcow2");
  create_image(path, c);
  auto p = pattern(2 << 20, 31);
  auto img = Qcow2Image::open(path, rw());
  img->write(0, p);
  AmendOptions a;
  a.refcount_bits = 64;
  a.lazy_refcounts = true;
  img->amend(a);
  EXPECT_EQ(img->info().refcount_bits, 64u);
  EXPECT_TRUE(img->info().lazy_refcounts);
  AmendOptions b;
  b.compat = "0.10";
  EXPECT_THROW(img->amend(b), vireo::Error);  // 64-bit refcounts need v3
  b.refcount_bits = 16;
  b.lazy_refcounts = false;
  img->amend(b);
  EXPECT_EQ(img->info().version, 2u);
  EXPECT_EQ(read_all(*img), p);
  img.reset();
  if (have_qemu_img()) {
    auto r = run("qemu-img check " + path);
    EXPECT_EQ(r.status, 0) << r.out;
    r = run("qemu-img info " + path);
    EXPECT_NE(r.out.find("compat: 0.10"), std::string::npos) << r.out;
  }
}

}  // namespace
