// vireo/block: the formats beyond raw and qcow2 (luks, vmdk, vhdx, vpc, vdi, qed): probing, open and create
// dispatch for block.cpp, and ImageDetails, the optional interface their images offer vireo-img (info, check).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>

#include "block/block.h"
#include "block/qcow2.h"   // CheckResult, RepairMode

namespace vireo::block {

// What `qemu-img info`/`check` need from a format driver. BlockImages of the formats below implement it
// (dynamic_cast<ImageDetails*>); qcow2 keeps its own richer interface (Qcow2Image).
class ImageDetails {
 public:
  virtual ~ImageDetails();
  // "cluster-size" (qemu's BlockDriverInfo.cluster_size; absent when the format has none).
  virtual std::optional<uint64_t> cluster_size() const { return std::nullopt; }
  virtual bool encrypted() const { return false; }
  // Whether a freshly created image reads as zeroes (qemu's has_zero_init): false for raw luks, whose
  // unwritten sectors decrypt to noise.
  virtual bool has_zero_init() const { return true; }
  // "format-specific": {"type": ..., "data": {...}} in qemu's member order, or null when qemu prints none.
  virtual nlohmann::ordered_json format_specific() const { return nullptr; }
  // Backing file name as stored (vmdk parentFileNameHint, qed), "" if none.
  virtual std::string backing_file_name() const { return ""; }
  virtual std::string backing_file_format() const { return ""; }
  // qemu-img check. can_check() false = "This image format does not support checks" (exit 63).
  virtual bool can_check() const { return false; }
  virtual CheckResult check(RepairMode mode);
};

// Names of the formats here: "luks", "vmdk", "vhdx", "vpc", "vdi", "qed" (their drivers are in
// block/format.h's table; vpc, vdi and qed are read-only).
bool is_foreign_format(const std::string& fmt);

struct OpenContext;
// Set while a driver of this module opens an image, so backing files it opens join the same chain (loop
// detection and depth limit of block/format.h).
struct ForeignOpenScope {
  explicit ForeignOpenScope(OpenContext& c) : prev(current) { current = &c; }
  ~ForeignOpenScope() { current = prev; }
  OpenContext* prev;
  static thread_local OpenContext* current;
};

}  // namespace vireo::block
