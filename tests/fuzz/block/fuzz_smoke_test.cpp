// Runs the fuzz entry point on valid images of several shapes and a few thousand random mutations of them.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "block/qcow2.h"
#include "common/error.h"

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

// Mutated images opened read-write: writes, snapshots, check -r all must fail cleanly or work.
TEST(BlockFuzzSmoke, MutatedImagesWrittenNeverCrash) {
  vireo::block::CreateOptions c;
  c.size = 1 << 20;
  c.cluster_size = 4096;
  auto seed = make_seed(c, true, true);
  char tmpl[] = "/dev/shm/vireo-fuzzrw-XXXXXX";  // tmpfs: the many fdatasyncs cost nothing
  int fd = mkstemp(tmpl);
  close(fd);
  std::mt19937_64 rng(4321);
  int opened = 0;
  for (int i = 0; i < 300; i++) {
    auto m = seed;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; k++) {
      size_t at = rng() % std::min<size_t>(m.size(), rng() % 2 ? 512 : m.size());
      m[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
    }
    {
      std::ofstream f(tmpl, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(m.data()), static_cast<std::streamsize>(m.size()));
    }
    try {
      vireo::block::OpenOptions o;
      o.take_locks = false;
      o.open_backing = false;
      o.for_repair = true;
      auto img = vireo::block::Qcow2Image::open(tmpl, o);
      opened++;
      std::vector<uint8_t> d(10000, 0x5a);
      uint64_t sz = img->size();
      for (int k = 0; k < 3 && sz > d.size(); k++) {
        try {
          img->write(rng() % (sz - d.size()), d);
        } catch (const vireo::Error&) {
        }
      }
      try {
        img->snapshot_create("x");
        img->snapshot_delete("s");
      } catch (const vireo::Error&) {
      }
      try {
        img->check(vireo::block::RepairMode::All);
      } catch (const vireo::Error&) {
      }
      img->flush();
    } catch (const vireo::Error&) {
    }
  }
  std::remove(tmpl);
  EXPECT_GT(opened, 0);
}

}  // namespace
