// vireo-img convert: how one chunk of the target is split into data / zero / skipped runs (unit-tested).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace vireo::img {

enum class SegKind { Data, Zero, Backing };   // from block status; Backing = left to the target's backing (-B)
struct Segment {
  uint64_t offset, length;
  SegKind kind;
};
enum class RunKind { Data, Zero, Skip };
struct Run {
  uint64_t offset, length;
  RunKind kind;
};

bool buffer_is_zero(const uint8_t* p, size_t n);

// Splits [chunk_off, chunk_off+chunk_len) into runs at `gran`-aligned blocks (target space): a block
// entirely left to the backing file is Skip, a block whose bytes are all zero (and none from the backing
// file) is Zero, anything else Data. gran == 0 (-S 0): every non-backing segment is Data. Adjacent runs
// of one kind are merged. `buf` holds the chunk's content.
std::vector<Run> plan_runs(const std::vector<Segment>& segs, const uint8_t* buf, uint64_t chunk_off,
                           uint64_t chunk_len, uint64_t gran);

}  // namespace vireo::img
