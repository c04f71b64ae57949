// libFuzzer target: LUKS1 headers (every field), cipher specs, keyslot unlock. Unlocking runs PBKDF2 for
// the header's iteration counts, so it is tried only when they are small (the parser itself always runs).
#include "block/luks.h"
#include "block/secret.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vireo::block;
  try {
    auto h = luks::parse_header(std::span<const uint8_t>(data, size));
    luks::parse_params(h);
    bool cheap = h.mk_iterations <= 5000;
    for (const auto& k : h.slots) cheap = cheap && (k.active != luks::kSlotEnabled || k.iterations <= 5000);
    if (cheap) {
      const auto read = [&](uint64_t off, std::span<uint8_t> b) {
        for (size_t i = 0; i < b.size(); ++i) b[i] = off + i < size ? data[off + i] : 0;
      };
      try {
        luks::Volume::open(read, std::string("fuzz"));
      } catch (const vireo::Error&) {
      }
    }
  } catch (const vireo::Error&) {
  }
  fuzz::MemFile f(data, size);
  fuzz::open_and_exercise(f.path, "luks");
  return 0;
}
