#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "block/block.h"

namespace blocktest {

// A fresh temporary directory per test, removed afterwards.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

struct CmdResult {
  int status = -1;  // exit code (or -1)
  std::string out;  // stdout+stderr
};
CmdResult run(const std::string& cmd);
bool have_qemu_img();

std::vector<uint8_t> read_file(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& data);
std::vector<uint8_t> read_all(vireo::block::BlockImage& img);
std::vector<uint8_t> pattern(size_t n, uint32_t seed);

vireo::block::OpenOptions rw();
vireo::block::OpenOptions ro();

}  // namespace blocktest
