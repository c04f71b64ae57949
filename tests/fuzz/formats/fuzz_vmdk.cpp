// libFuzzer target: vmdk sparse headers (KDMV), grain directories/tables, compressed grains, descriptors.
// Inputs that would open extent files named by a descriptor are only parsed (the fuzzer must not open
// host files); binary sparse images are opened and read.
#include <cstring>

#include "block/vmdk.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vireo::block;
  const bool binary = size >= 4 && (std::memcmp(data, "KDMV", 4) == 0 || std::memcmp(data, "COWD", 4) == 0);
  try {
    vmdk::parse_descriptor(std::string(reinterpret_cast<const char*>(data), std::min<size_t>(size, 1 << 20)));
  } catch (const vireo::Error&) {
  }
  if (!binary) return 0;
  if (std::memcmp(data, "KDMV", 4) == 0) {
    try {
      auto h = vmdk::parse_sparse_header(std::span<const uint8_t>(data, std::min<size_t>(size, 512)), size, false);
      if (h.capacity == 0 && h.desc_offset) return 0;   // a descriptor naming extent files
    } catch (const vireo::Error&) {
      return 0;
    }
  }
  fuzz::MemFile f(data, size);
  fuzz::open_and_exercise(f.path, "vmdk");
  return 0;
}
