// Randomised corruption of real boot files: every outcome must be success or a one-line vireo::Error, never a
// crash, hang or huge allocation (deterministic seeds, so a failure reproduces).
#include <elf.h>
#include <glob.h>

#include <random>

#include "boot/internal.h"
#include "boot_helpers.h"

using namespace boot_test;
using namespace vireo;
using namespace vireo::boot;

namespace {

std::string shm_dir() { return ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"; }

void write_file(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Returns "ok" or "error"; any other exception type fails the test.
template <typename F>
std::string outcome(F&& f) {
  try {
    f();
    return "ok";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_FALSE(m.empty());
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return "error";
  }
}

TEST(BootRobustness, CorruptedBzImageHeaders) {
  glob_t g{};
  std::string kernel;
  if (::glob("/boot/vmlinuz-*", 0, nullptr, &g) == 0 && g.gl_pathc > 0) kernel = g.gl_pathv[0];
  globfree(&g);
  if (kernel.empty() || ::access(kernel.c_str(), R_OK) != 0) GTEST_SKIP() << "no readable /boot/vmlinuz-*";
  auto full = read_file(kernel);
  // A small but valid bzImage: the real setup code plus 1 MiB of "kernel", with syssize/init_size adjusted.
  uint64_t setup = (uint64_t{full[0x1f1] ? full[0x1f1] : 4u} + 1) * 512;
  std::vector<uint8_t> base(full.begin(), full.begin() + static_cast<long>(setup + (1 << 20)));
  uint32_t syssize = (1 << 20) / 16, init_size = 4 << 20;
  std::memcpy(&base[0x1f4], &syssize, 4);
  std::memcpy(&base[0x260], &init_size, 4);
  std::string path = shm_dir() + "/vireo-boot-fuzz-" + std::to_string(::getpid()) + ".bz";
  write_file(path, base);
  auto mem = make_memory(64 << 20);
  ASSERT_EQ(outcome([&] { load(*mem, BootConfig{path, "", "console=ttyS0", 2}); }), "ok");

  std::mt19937 rng(12345);
  int ok = 0, err = 0;
  for (int it = 0; it < 400; it++) {
    auto b = base;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; k++) {
      size_t off = 0x1f1 + rng() % (0x290 - 0x1f1);  // the setup header
      b[off] = static_cast<uint8_t>(rng());
    }
    if (rng() % 4 == 0) b.resize(rng() % b.size());  // sometimes truncated as well
    write_file(path, b);
    std::string r = outcome([&] {
      probe_kernel(path);
      load(*mem, BootConfig{path, "", "console=ttyS0", 2});
    });
    (r == "ok" ? ok : err)++;
  }
  ::unlink(path.c_str());
  EXPECT_GT(err, 0);
  EXPECT_GT(ok, 0) << "some corruptions hit fields that do not matter";
}

TEST(BootRobustness, CorruptedTestGuestElf) {
  std::string guest = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello.elf";
  if (::access(guest.c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built";
  auto base = read_file(guest);
  std::string path = shm_dir() + "/vireo-boot-fuzz-" + std::to_string(::getpid()) + ".elf";
  auto mem = make_memory(16 << 20);
  std::mt19937 rng(777);
  int ok = 0, err = 0;
  // Offsets of the header, the program headers and the notes: where the parser looks.
  auto eh = le<Elf64_Ehdr>(base, 0);
  size_t hot_end = eh.e_phoff + eh.e_phnum * sizeof(Elf64_Phdr);
  for (int it = 0; it < 1500; it++) {
    auto b = base;
    int flips = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < flips; k++) {
      size_t off = (rng() % 3 == 0) ? rng() % b.size() : rng() % hot_end;
      if (rng() % 2) b[off] = static_cast<uint8_t>(rng());
      else b[off] ^= static_cast<uint8_t>(1u << (rng() % 8));
    }
    if (rng() % 5 == 0) b.resize(rng() % b.size());
    write_file(path, b);
    std::string r = outcome([&] {
      probe_kernel(path);
      load(*mem, BootConfig{path, "", "", 2});
    });
    (r == "ok" ? ok : err)++;
  }
  ::unlink(path.c_str());
  EXPECT_GT(err, 0);
  EXPECT_GT(ok, 0);
}

}  // namespace
