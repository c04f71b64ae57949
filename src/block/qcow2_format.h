// vireo/block: qcow2 on-disk constants and big-endian helpers (internal to src/block).
#pragma once
#include <cstdint>
#include <cstring>

namespace vireo::block::qcow2 {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint64_t kCopied = 1ULL << 63;
constexpr uint64_t kCompressed = 1ULL << 62;
constexpr uint64_t kZero = 1ULL;
constexpr uint64_t kL1OffsetMask = 0x00fffffffffffe00ULL;
constexpr uint64_t kL2OffsetMask = 0x00fffffffffffe00ULL;
constexpr uint64_t kRefTableOffsetMask = 0xfffffffffffffe00ULL;

constexpr uint64_t kIncompatDirty = 1ULL << 0;
constexpr uint64_t kIncompatCorrupt = 1ULL << 1;
constexpr uint64_t kIncompatDataFile = 1ULL << 2;
constexpr uint64_t kIncompatCompression = 1ULL << 3;
constexpr uint64_t kIncompatExtendedL2 = 1ULL << 4;
constexpr uint64_t kCompatLazyRefcounts = 1ULL << 0;
constexpr uint64_t kAutoclearBitmaps = 1ULL << 0;

constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtFeatureTable = 0x6803f857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtDataFile = 0x44415441;

// Limits (the same as QEMU's, so images QEMU refuses we refuse too).
constexpr uint64_t kMaxL1Bytes = 32ULL << 20;        // active and snapshot L1 tables
constexpr uint64_t kMaxRefTableBytes = 8ULL << 20;
constexpr uint32_t kMaxSnapshots = 65536;
constexpr uint32_t kMaxSnapshotExtra = 1024;
constexpr size_t kMaxBackingName = 1023;
constexpr int kMaxBackingDepth = 64;
constexpr uint64_t kMaxRefcountClusters = 1ULL << 27;  // in-memory refcount array bound (1 GiB)

inline uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
inline uint64_t be64(const uint8_t* p) { return uint64_t(be32(p)) << 32 | be32(p + 4); }
inline void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}
inline void put64(uint8_t* p, uint64_t v) { put32(p, uint32_t(v >> 32)); put32(p + 4, uint32_t(v)); }

}  // namespace vireo::block::qcow2
