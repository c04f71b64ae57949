// Images written by qemu-img/qemu-io, read (and written) by us; qemu-img as the oracle.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "block/qcow2.h"
#include "common/error.h"
#include "helpers.h"

using namespace vireo::block;
using namespace blocktest;

namespace {

struct Case {
  std::string name, opts;
  bool snapshots = true;      // refcount_bits=1 cannot hold the extra references
  std::string clen = "64k";   // a compressed write covers one whole cluster
};

class QemuWritten : public testing::TestWithParam<Case> {};

TEST_P(QemuWritten, ReadsIdenticalAndChecksAgree) {
  if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
  const Case c = GetParam();
  TempDir d;
  std::string img = d.path("q.qcow2");
  auto r = run("qemu-img create -f qcow2 -o " + c.opts + " " + img + " 6M");
  ASSERT_EQ(r.status, 0) << r.out;
  std::string io = "qemu-io -f qcow2 " + img;
  ASSERT_EQ(run(io + " -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1500k 300k' -c 'write -z 256k 128k'").status, 0);
  if (c.snapshots) {
    ASSERT_EQ(run("qemu-img snapshot -c snap1 " + img).status, 0);
  }
  ASSERT_EQ(run(io + " -c 'write -P 0x33 64k 200k' -c 'write -P 0x44 5M 700k' -c 'discard 1600k 64k'").status, 0);
  r = run(io + " -c 'write -c -P 0x55 2M " + c.clen + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_EQ(run("qemu-img convert -O raw " + img + " " + d.path("ref.raw")).status, 0);
  if (c.snapshots) {
    ASSERT_EQ(run("qemu-img convert -l snapshot.name=snap1 -O raw " + img + " " + d.path("snap.raw")).status, 0);
  }
  auto ref = read_file(d.path("ref.raw"));
  {
    auto q = Qcow2Image::open(img, ro());
    EXPECT_EQ(read_all(*q), ref);
    auto res = q->check(RepairMode::None);
    EXPECT_EQ(res.corruptions, 0u);
    EXPECT_EQ(res.leaks, 0u);
    for (auto& m : res.messages) ADD_FAILURE() << m;
    auto js = run("qemu-img check --output=json " + img);
    auto j = nlohmann::json::parse(js.out.substr(js.out.find('{')));
    EXPECT_EQ(res.allocated_clusters, j["allocated-clusters"].get<uint64_t>());
    EXPECT_EQ(res.total_clusters, j["total-clusters"].get<uint64_t>());
    EXPECT_EQ(res.image_end_offset, j["image-end-offset"].get<uint64_t>());
    if (j.contains("compressed-clusters")) {
      EXPECT_EQ(res.compressed_clusters, j["compressed-clusters"].get<uint64_t>());
    }
    if (j.contains("fragmented-clusters")) {
      EXPECT_EQ(res.fragmented_clusters, j["fragmented-clusters"].get<uint64_t>());
    }
    ASSERT_EQ(q->snapshots().size(), c.snapshots ? 1u : 0u);
    if (c.snapshots) {
      EXPECT_EQ(q->snapshots()[0].name, "snap1");
    }
  }
  // Now write into it ourselves, apply the snapshot, and let qemu-img judge.
  {
    auto q = Qcow2Image::open(img, rw());
    auto p = pattern(300000, 3);
    q->write(900000, p);
    std::copy(p.begin(), p.end(), ref.begin() + 900000);
    EXPECT_EQ(read_all(*q), ref);
  }
  write_file(d.path("ref2.raw"), ref);
  r = run("qemu-img compare -F raw " + img + " " + d.path("ref2.raw"));
  EXPECT_EQ(r.status, 0) << r.out;
  r = run("qemu-img check " + img);
  EXPECT_EQ(r.status, 0) << r.out;
  if (!c.snapshots) return;
  {
    auto q = Qcow2Image::open(img, rw());
    q->snapshot_apply("snap1");
    EXPECT_EQ(read_all(*q), read_file(d.path("snap.raw")));
    q->snapshot_delete("snap1");
  }
  r = run("qemu-img check " + img);
  EXPECT_EQ(r.status, 0) << r.out;
  r = run("qemu-img compare -F raw " + img + " " + d.path("snap.raw"));
  EXPECT_EQ(r.status, 0) << r.out;
}

INSTANTIATE_TEST_SUITE_P(
    Options, QemuWritten,
    testing::Values(Case{"default", "cluster_size=65536"}, Case{"v2", "compat=0.10"},
                    Case{"c512", "cluster_size=512", true, "512"}, Case{"c2M", "cluster_size=2M", true, "2M"},
                    Case{"rb1", "refcount_bits=1", false}, Case{"rb64", "refcount_bits=64"},
                    Case{"zstd", "compression_type=zstd"}, Case{"lazy", "lazy_refcounts=on"},
                    Case{"rb8c4k", "refcount_bits=8,cluster_size=4096", true, "4k"}),
    [](const testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(QemuInterop, ExtendedL2IsReadable) {
  if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
  TempDir d;
  std::string img = d.path("x.qcow2");
  ASSERT_EQ(run("qemu-img create -f qcow2 -o extended_l2=on,cluster_size=64k " + img + " 4M").status, 0);
  ASSERT_EQ(run("qemu-io -f qcow2 " + img +
                " -c 'write -P 0x61 4k 8k' -c 'write -P 0x62 100k 3k' -c 'write -z 1M 64k' -c 'write -c -P 7 2M 64k'")
                .status, 0);
  ASSERT_EQ(run("qemu-img convert -O raw " + img + " " + d.path("ref.raw")).status, 0);
  auto q = Qcow2Image::open(img, ro());
  EXPECT_TRUE(q->info().extended_l2);
  EXPECT_EQ(read_all(*q), read_file(d.path("ref.raw")));
  q.reset();
  // Writes: partial clusters over partially allocated / zero subclusters, zeroes, compressed.
  auto ref = read_file(d.path("ref.raw"));
  {
    auto w = Qcow2Image::open(img, rw());
    auto p = pattern(5000, 9);
    w->write(10000, p);  // inside the cluster whose subclusters 2-5 are allocated
    std::copy(p.begin(), p.end(), ref.begin() + 10000);
    auto q = pattern(70000, 10);
    w->write(1000000, q);  // over the zero subclusters at 1M and beyond
    std::copy(q.begin(), q.end(), ref.begin() + 1000000);
    w->write_zeroes(3 << 20, 1 << 19, false);
    std::fill_n(ref.begin() + (3 << 20), 1 << 19, 0);
    std::vector<uint8_t> cl(65536, 0x33);
    w->write_compressed(0x300000 + (1 << 19), cl);
    std::copy(cl.begin(), cl.end(), ref.begin() + 0x300000 + (1 << 19));
    EXPECT_EQ(read_all(*w), ref);
    auto r = w->check(RepairMode::None);
    EXPECT_EQ(r.corruptions + r.leaks, 0u);
    for (auto& m : r.messages) ADD_FAILURE() << m;
  }
  write_file(d.path("ref2.raw"), ref);
  auto r = run("qemu-img compare -F raw " + img + " " + d.path("ref2.raw"));
  EXPECT_EQ(r.status, 0) << r.out;
  r = run("qemu-img check " + img);
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST(Qcow2, ExtendedL2CreateWriteOverBacking) {
  TempDir d;
  CreateOptions b;
  b.format = "raw";
  b.size = 2 << 20;
  create_image(d.path("b.raw"), b);
  auto bp = pattern(2 << 20, 51);
  {
    auto img = open_image(d.path("b.raw"), rw());
    img->write(0, bp);
  }
  CreateOptions c;
  c.extended_l2 = true;
  c.cluster_size = 32768;
  c.backing_file = "b.raw";
  c.backing_format = "raw";
  create_image(d.path("x.qcow2"), c);
  auto model = bp;
  {
    auto img = open_image(d.path("x.qcow2"), rw());
    auto p = pattern(3000, 52);
    img->write(40000, p);
    std::copy(p.begin(), p.end(), model.begin() + 40000);
    img->write_zeroes(1 << 20, 65536, false);
    std::fill_n(model.begin() + (1 << 20), 65536, 0);
    EXPECT_EQ(read_all(*img), model);
  }
  auto img = open_image(d.path("x.qcow2"), ro());
  EXPECT_EQ(read_all(*img), model);
  if (have_qemu_img()) {
    write_file(d.path("m.raw"), model);
    auto r = run("qemu-img compare -F raw " + d.path("x.qcow2") + " " + d.path("m.raw"));
    EXPECT_EQ(r.status, 0) << r.out;
    r = run("qemu-img check " + d.path("x.qcow2"));
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(QemuInterop, BackingChainWithBackingFormatAndQemuOverlay) {
  if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
  TempDir d;
  CreateOptions b;
  b.size = 3 << 20;
  b.cluster_size = 4096;
  create_image(d.path("base.qcow2"), b);
  auto bp = pattern(3 << 20, 41);
  {
    auto img = open_image(d.path("base.qcow2"), rw());
    img->write(0, bp);
  }
  ASSERT_EQ(run("cd " + d.dir() + " && qemu-img create -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2").status, 0);
  ASSERT_EQ(run("qemu-io -f qcow2 " + d.path("mid.qcow2") + " -c 'write -P 0x70 100k 50k'").status, 0);
  CreateOptions t;
  t.backing_file = "mid.qcow2";
  t.backing_format = "qcow2";
  create_image(d.path("top.qcow2"), t);
  {
    auto img = open_image(d.path("top.qcow2"), rw());
    img->write(120 << 10, pattern(1000, 42));
    Extent e = img->block_status(130 << 10, 10 << 10);
    EXPECT_EQ(e.depth, 1);
    e = img->block_status(2 << 20, 4096);
    EXPECT_EQ(e.depth, 2);
  }
  ASSERT_EQ(run("qemu-img convert -O raw " + d.path("top.qcow2") + " " + d.path("ref.raw")).status, 0);
  auto img = open_image(d.path("top.qcow2"), ro());
  EXPECT_EQ(read_all(*img), read_file(d.path("ref.raw")));
  auto r = run("qemu-img info --backing-chain " + d.path("top.qcow2"));
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("backing file format: qcow2"), std::string::npos) << r.out;
}

TEST(QemuInterop, UnknownHeaderExtensionPreservedAndBitmapsAutoclearCleared) {
  if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
  TempDir d;
  std::string img = d.path("b.qcow2");
  ASSERT_EQ(run("qemu-img create -f qcow2 " + img + " 1M").status, 0);
  auto r = run("qemu-img bitmap --add " + img + " bm0");
  bool have_bitmap = r.status == 0;
  // Plant an unknown extension right after the header (before the end marker).
  auto raw = read_file(img);
  uint32_t hlen = raw[100] << 24 | raw[101] << 16 | raw[102] << 8 | raw[103];
  size_t pos = hlen;
  for (;;) {  // find the end-of-extensions marker
    uint32_t type = raw[pos] << 24 | raw[pos + 1] << 16 | raw[pos + 2] << 8 | raw[pos + 3];
    uint32_t len = raw[pos + 4] << 24 | raw[pos + 5] << 16 | raw[pos + 6] << 8 | raw[pos + 7];
    if (type == 0) break;
    pos += 8 + ((len + 7) & ~7u);
  }
  const uint8_t ext[16] = {0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0};
  std::copy(ext, ext + 16, raw.begin() + static_cast<ptrdiff_t>(pos));
  std::fill_n(raw.begin() + static_cast<ptrdiff_t>(pos) + 16, 8, 0);
  write_file(img, raw);
  {
    auto q = Qcow2Image::open(img, rw());
    if (have_bitmap) {
      EXPECT_TRUE(q->info().has_bitmaps_extension);
    }
    q->write(0, pattern(4096, 1));
    q->snapshot_create("s");  // forces a header rewrite
    EXPECT_EQ(q->info().autoclear_features, 0u);
  }
  auto after = read_file(img);
  std::string hay(after.begin(), after.begin() + 65536);
  EXPECT_NE(hay.find(std::string("\x12\x34\x56\x78\0\0\0\x05hello", 13)), std::string::npos);
  r = run("qemu-img check " + img);
  // Bitmap clusters become leaks once the autoclear bit is gone (qemu itself says so); nothing worse.
  if (have_bitmap) {
    EXPECT_TRUE(r.status == 0 || r.status == 3) << r.out;
  } else {
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

}  // namespace
