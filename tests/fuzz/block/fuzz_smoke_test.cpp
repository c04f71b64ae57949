// Runs the fuzz entry point on valid images of several shapes and a few thousand random mutations of them.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "block/qcow2.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> make_seed(const vireo::block::CreateOptions& c, bool snapshot, bool compressed) {
  char tmpl[] = "/tmp/vireo-fuzzseed-XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  vireo::block::create_image(tmpl, c);
  {
    auto img = vireo::block::Qcow2Image::open(tmpl, vireo::block::OpenOptions{});
    std::vector<uint8_t> d(c.cluster_size * 3);
    for (size_t i = 0; i < d.size(); i++) d[i] = static_cast<uint8_t>(i / 7);
    img->write(c.cluster_size / 2, d);
    if (snapshot) img->snapshot_create("s");
    if (compressed) img->write_compressed(c.cluster_size * 8, std::vector<uint8_t>(c.cluster_size, 0x41));
    img->write_zeroes(c.cluster_size * 6, c.cluster_size, false);
  }
  std::ifstream f(tmpl, std::ios::binary);
  std::vector<uint8_t> v(std::istreambuf_iterator<char>(f), {});
  std::remove(tmpl);
  return v;
}

TEST(BlockFuzzSmoke, SeedsAndMutationsNeverCrash) {
  std::vector<std::vector<uint8_t>> seeds;
  vireo::block::CreateOptions c;
  c.size = 1 << 20;
  c.cluster_size = 4096;
  seeds.push_back(make_seed(c, true, true));
  c.cluster_size = 512;
  c.refcount_bits = 1;
  seeds.push_back(make_seed(c, false, true));
  c.cluster_size = 65536;
  c.refcount_bits = 64;
  c.compression_type = "zstd";
  seeds.push_back(make_seed(c, true, true));
  c.compat = "0.10";
  c.refcount_bits = 16;
  c.compression_type = "zlib";
  seeds.push_back(make_seed(c, true, false));
  std::mt19937_64 rng(1234);
  int runs = 0;
  for (auto& s : seeds) {
    LLVMFuzzerTestOneInput(s.data(), s.size());
    for (int i = 0; i < 400; i++) {
      auto m = s;
      int flips = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < flips; k++) {
        // Mostly metadata: the first clusters hold the header, refcount and L1/L2 tables.
        size_t lim = std::min<size_t>(m.size(), rng() % 2 ? 1024 : m.size());
        size_t at = rng() % lim;
        switch (rng() % 4) {
          case 0: m[at] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
          case 1: m[at] = static_cast<uint8_t>(rng()); break;
          case 2: m[at] = 0xff; break;
          default: m[at] = 0; break;
        }
      }
      if (rng() % 10 == 0) m.resize(rng() % m.size());
      LLVMFuzzerTestOneInput(m.data(), m.size());
      runs++;
    }
  }
  EXPECT_EQ(runs, 1600);
}

}  // namespace
