// Runs every committed fuzz corpus file (tests/fuzz/formats/corpus/<fmt>/) through its fuzz entry point:
// the inputs libFuzzer found interesting (and any past crash) stay regression tests of the normal suite.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int fuzz_vmdk_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_vhdx_entry(const uint8_t* data, size_t size);
extern "C" int fuzz_luks_entry(const uint8_t* data, size_t size);

namespace {

size_t run_corpus(const char* name, int (*entry)(const uint8_t*, size_t)) {
  const std::filesystem::path dir = std::filesystem::path(VIREO_SOURCE_DIR) / "tests/fuzz/formats/corpus" / name;
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::vector<uint8_t> d((std::istreambuf_iterator<char>(f)), {});
    entry(d.data(), d.size());
    ++n;
  }
  return n;
}

TEST(FormatsFuzzRegress, VmdkCorpus) { EXPECT_GE(run_corpus("vmdk", fuzz_vmdk_entry), 5u); }
TEST(FormatsFuzzRegress, VhdxCorpus) { EXPECT_GE(run_corpus("vhdx", fuzz_vhdx_entry), 2u); }
TEST(FormatsFuzzRegress, LuksCorpus) { EXPECT_GE(run_corpus("luks", fuzz_luks_entry), 2u); }

}  // namespace
