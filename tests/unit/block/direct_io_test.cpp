// cache=none (O_DIRECT) for every format: the qcow2 driver reads a 104-byte header, 512-byte clusters and
// 8-byte L2 entries, none of them 4 KiB aligned; HostFile must bounce those so the image works at all.
#include <gtest/gtest.h>

#include <random>

#include "block/block.h"
#include "common/error.h"
#include "helpers.h"

namespace blocktest {
namespace {

using vireo::block::CreateOptions;
using vireo::block::OpenOptions;

class DirectIo : public testing::TestWithParam<uint32_t> {};

TEST_P(DirectIo, Qcow2RandomWritesMatchModelAndPassQemuCheck) {
  TempDir d;
  const std::string path = d.path("direct.qcow2");
  const uint64_t size = 8 << 20;
  CreateOptions c;
  c.format = "qcow2";
  c.size = size;
  c.cluster_size = GetParam();
  vireo::block::create_image(path, c);

  OpenOptions o = rw();
  o.direct = true;
  std::unique_ptr<vireo::block::BlockImage> img;
  try {
    img = vireo::block::open_image(path, o);
  } catch (const vireo::Error& e) {
    if (std::string(e.what()).find("nvalid argument") != std::string::npos && e.sys_errno() == EINVAL)
      GTEST_SKIP() << "file system without O_DIRECT: " << e.what();
    throw;
  }
  std::vector<uint8_t> model(size, 0);
  std::mt19937 rng(GetParam());
  for (int i = 0; i < 200; ++i) {
    const uint64_t len = 1 + rng() % 9000;             // unaligned lengths...
    const uint64_t off = rng() % (size - len);         // ...at unaligned offsets
    auto data = pattern(len, rng());
    img->write(off, data);
    std::copy(data.begin(), data.end(), model.begin() + static_cast<long>(off));
  }
  img->flush();
  EXPECT_EQ(read_all(*img), model);
  img.reset();

  // Reopened without O_DIRECT, the bytes are the same, and qemu-img finds the metadata consistent.
  auto again = vireo::block::open_image(path, ro());
  EXPECT_EQ(read_all(*again), model);
  again.reset();
  if (have_qemu_img()) {
    CmdResult r = run("qemu-img check '" + path + "'");
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

INSTANTIATE_TEST_SUITE_P(ClusterSizes, DirectIo, testing::Values(512u, 65536u));

}  // namespace
}  // namespace blocktest
