// Shared helpers for the boot unit tests.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "boot/boot.h"
#include "common/error.h"
#include "memory/guest_memory.h"

namespace boot_test {

inline std::vector<uint8_t> read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vireo-boot-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::string p = path_ + "/" + name;
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::unique_ptr<vireo::GuestMemory> make_memory(uint64_t size) {
  vireo::MemoryConfig c;
  c.size = size;
  c.thp = false;
  return std::make_unique<vireo::GuestMemory>(c);
}

template <typename T>
T le(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

template <typename T>
T gread(const vireo::GuestMemory& m, uint64_t gpa) {
  return m.read_obj<T>(gpa);
}

inline std::vector<uint8_t> gbytes(const vireo::GuestMemory& m, uint64_t gpa, size_t n) {
  std::vector<uint8_t> v(n);
  m.read(gpa, v);
  return v;
}

// Runs f, expects a vireo::Error whose message contains `needle`; returns the message.
template <typename F>
std::string expect_error(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const vireo::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected to contain: " << needle;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
    return msg;
  }
  ADD_FAILURE() << "no vireo::Error thrown (expected one containing '" << needle << "')";
  return {};
}

// Walks the guest page tables for a virtual address; returns the physical address and whether every level
// had P, RW and U/S set.
struct Walk {
  bool ok = false;
  uint64_t phys = 0;
  std::string why;
};
inline Walk walk(const vireo::GuestMemory& m, uint64_t cr3, uint64_t va) {
  Walk w;
  uint64_t table = cr3 & ~0xfffull;
  const int shifts[] = {39, 30, 21};
  for (int level = 0; level < 3; level++) {
    uint64_t idx = (va >> shifts[level]) & 0x1ff;
    uint64_t e = m.read_obj<uint64_t>(table + idx * 8);
    if ((e & 0x7) != 0x7) {
      w.why = "level " + std::to_string(level) + " entry lacks P/RW/US: " + std::to_string(e);
      return w;
    }
    if (level == 2) {
      if (!(e & 0x80)) {
        w.why = "PD entry is not a 2 MiB page";
        return w;
      }
      w.phys = (e & 0x000fffffffe00000ull) | (va & 0x1fffff);
      w.ok = true;
      return w;
    }
    if (level == 1 && (e & 0x80)) {  // 1 GiB page
      w.phys = (e & 0x000fffffc0000000ull) | (va & 0x3fffffff);
      w.ok = true;
      return w;
    }
    table = e & 0x000ffffffffff000ull;
  }
  return w;
}

}  // namespace boot_test
