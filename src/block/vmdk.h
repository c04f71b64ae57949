// vireo/block: VMware VMDK (VMware's "Virtual Disk Format 1.1" spec): monolithicSparse, streamOptimized,
// monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs/vmfsSparse descriptors; hosted sparse (KDMV) and VMFS
// sparse (COWD) extents. Read everything; write sparse, flat and (append-only, whole grains) streamOptimized.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "block/block.h"

namespace vireo::block::vmdk {

// The parsed, validated 512-byte header of a hosted sparse extent (KDMV). Throws Error with qemu's texts.
struct SparseHeader {
  uint32_t version = 1, flags = 0;
  uint64_t capacity = 0, granularity = 0, desc_offset = 0, desc_size = 0;
  uint32_t num_gtes_per_gt = 0;
  uint64_t rgd_offset = 0, gd_offset = 0, grain_offset = 0;
  uint16_t compress_algorithm = 0;
  uint64_t l1_size = 0;   // grain directory entries
};
constexpr uint64_t kGdAtEnd = 0xffffffffffffffffULL;
// `header` is the 512 bytes after... i.e. the whole first sector (magic included). `file_len` bounds the
// grain offset check. Does not check the footer (see the driver).
SparseHeader parse_sparse_header(std::span<const uint8_t> sector, uint64_t file_len, bool writable);

// One extent line of a descriptor.
struct ExtentLine {
  std::string access, type, filename;
  int64_t sectors = 0;
  int64_t flat_offset = 0;
};
struct Descriptor {
  std::string create_type;        // "" if missing
  std::optional<uint32_t> cid, parent_cid;
  std::string parent_hint;        // parentFileNameHint, "" if none
  std::vector<ExtentLine> extents;   // RW lines of a supported type only, as qemu uses them
};
// Parses descriptor text as qemu does (throws "Invalid extent line: ..." for malformed RW lines).
Descriptor parse_descriptor(const std::string& text);

std::unique_ptr<BlockImage> open(const std::string& path, const OpenOptions& opts);
void create(const std::string& path, const CreateOptions& c);
// qemu's probe score > 0 (KDMV/COWD magic, or a text descriptor whose first non-comment line is version=N).
bool probe(std::span<const uint8_t> head);

}  // namespace vireo::block::vmdk
