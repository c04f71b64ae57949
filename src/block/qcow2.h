// vireo/block: the qcow2 driver (QEMU's docs/interop/qcow2.txt, versions 2 and 3).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "block/block.h"

namespace vireo::block {

// Format-specific data for `qemu-img info`.
struct Qcow2Info {
  uint32_t version = 3;               // 2 or 3
  std::string compat;                 // "0.10" | "1.1"
  std::string compression_type;       // "zlib" | "zstd"
  bool lazy_refcounts = false;
  uint32_t refcount_bits = 16;
  bool corrupt = false;
  bool dirty = false;
  bool extended_l2 = false;
  std::optional<std::string> data_file;   // never set: external data files are refused at open
  bool has_bitmaps_extension = false;     // bitmaps are not implemented (autoclear bit cleared on write)
  uint32_t cluster_size = 65536;
  std::string backing_file;           // as stored in the image ("" = none)
  std::string backing_format;         // from the backing format extension ("" = none)
  uint64_t l1_size = 0;               // entries
  uint64_t l1_table_offset = 0, refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint64_t incompatible_features = 0, compatible_features = 0, autoclear_features = 0;
  bool encrypt = false;                    // crypt_method != 0 (qemu info "encrypted": true)
  nlohmann::ordered_json encrypt_info;     // format-specific "encrypt" member ({"format": "aes"} or LUKS), or null
};

struct Qcow2Snapshot {
  std::string id, name;
  uint64_t vm_state_size = 0;         // bytes (vm_state_size_large when present)
  uint32_t date_sec = 0, date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  std::optional<uint64_t> icount;     // absent when not recorded (all-ones on disk)
  uint64_t disk_size = 0;             // virtual size at snapshot time
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
};

// Counters as `qemu-img check` reports them (its JSON names in comments).
struct CheckResult {
  uint64_t corruptions = 0;           // "corruptions" (remaining after repair)
  uint64_t leaks = 0;                 // "leaks" (remaining after repair)
  uint64_t check_errors = 0;          // "check-errors"
  uint64_t corruptions_fixed = 0;     // "corruptions-fixed"
  uint64_t leaks_fixed = 0;           // "leaks-fixed"
  uint64_t image_end_offset = 0;      // "image-end-offset"
  uint64_t total_clusters = 0;        // "total-clusters"
  uint64_t allocated_clusters = 0;    // "allocated-clusters"
  uint64_t fragmented_clusters = 0;   // "fragmented-clusters"
  uint64_t compressed_clusters = 0;   // "compressed-clusters"
  std::vector<std::string> messages;  // the lines qemu-img prints ("Leaked cluster 5 refcount=1 reference=0", ...)
};

enum class RepairMode { None, Leaks, All };

// Changes `qemu-img amend` can make. Unset fields are left alone.
struct AmendOptions {
  std::optional<std::string> compat;          // "0.10" | "1.1"
  std::optional<bool> lazy_refcounts;
  std::optional<uint32_t> refcount_bits;
  std::optional<std::string> backing_file, backing_format;
  std::optional<uint64_t> size;
};

class Qcow2Image : public BlockImage {
 public:
  // Use open_image(); this is for callers that need the qcow2 type (vireo-img), or dynamic_cast.
  static std::unique_ptr<Qcow2Image> open(const std::string& path, const OpenOptions& opts);
  ~Qcow2Image() override;

  std::string format() const override;
  const std::string& filename() const override;
  uint64_t size() const override;
  bool read_only() const override;
  void read(uint64_t offset, std::span<uint8_t> buf) override;
  void write(uint64_t offset, std::span<const uint8_t> buf) override;
  void write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  void discard(uint64_t offset, uint64_t length) override;
  void flush() override;
  Extent block_status(uint64_t offset, uint64_t max_length) override;
  BlockImage* backing() override;
  uint64_t file_allocated_bytes() override;
  void resize(uint64_t new_size, bool allow_shrink) override;

  Qcow2Info info() const;
  uint32_t cluster_size() const;
  bool is_dirty() const;
  bool is_corrupt() const;

  // Internal snapshots.
  std::vector<Qcow2Snapshot> snapshots() const;
  // Creates a snapshot of the current state; id = next free numeric id. Throws if the name exists.
  void snapshot_create(const std::string& name, uint64_t vm_state_size = 0);
  // Reverts the active image to the snapshot named/id'd `name_or_id` (name matched first, then id).
  void snapshot_apply(const std::string& name_or_id);
  void snapshot_delete(const std::string& name_or_id);

  // Writes one whole cluster compressed (zlib raw deflate or zstd per the header) at a cluster-aligned
  // guest offset; `data` is 1..cluster_size() bytes: shorter data is zero-padded to the cluster, bytes past
  // the end of the image are ignored. Stored uncompressed when compression does not save space. Compression
  // happens outside the image lock (call from several threads to use several cores).
  void write_compressed(uint64_t offset, std::span<const uint8_t> data);

  // qemu-img check [-r leaks|all]. Repair requires a read-write image.
  CheckResult check(RepairMode repair);

  // Header-only backing change (rebase -u / commit); "" removes the backing file. Reopens the chain.
  void set_backing(const std::string& backing_file, const std::string& backing_format);
  // Drops every cluster of the active L1 (commit's make-empty): the image then reads from its backing.
  void make_empty();
  void amend(const AmendOptions& opts);
  // Allocates every cluster (create -o preallocation=metadata|falloc|full).
  void preallocate(const std::string& mode);

  struct State;  // internal

 private:
  friend struct Qcow2Opener;
  Qcow2Image();
  std::unique_ptr<State> s_;
};

}  // namespace vireo::block
