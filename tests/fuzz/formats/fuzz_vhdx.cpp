// libFuzzer target: vhdx headers, region tables, metadata, BAT; open, read, map, check.
#include "block/vhdx.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vireo::block;
  if (size >= 4096) vhdx::parse_header(std::span<const uint8_t>(data, 4096));
  try {
    if (size >= 65536) vhdx::parse_region_table(std::span<const uint8_t>(data, 65536), size);
  } catch (const vireo::Error&) {
  }
  try {
    if (size >= 65536) vhdx::parse_metadata(std::span<const uint8_t>(data, size));
  } catch (const vireo::Error&) {
  }
  fuzz::MemFile f(data, size);
  fuzz::open_and_exercise(f.path, "vhdx");
  return 0;
}
