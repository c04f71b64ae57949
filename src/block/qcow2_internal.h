// vireo/block: the qcow2 driver's internal state shared by its files (src/block/qcow2_*.cpp).
// Not part of the block layer's interface. The design (caches, write ordering) is in docs/block.md.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "block/file.h"
#include "block/format.h"
#include "block/qcow2.h"
#include "block/qcow2_crypto.h"
#include "block/qcow2_format.h"
#include "common/error.h"

namespace vireo::block {

namespace qcow2 {

// An unknown or feature-table header extension, kept verbatim and re-emitted on every header rewrite.
struct Ext {
  uint32_t type;
  std::vector<uint8_t> data;
};

struct SnapshotRec {
  Qcow2Snapshot pub;
  std::vector<uint8_t> extra;  // raw extra data (preserved; first 24 bytes rewritten from pub)
};

inline uint64_t div_round_up(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

inline std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

// Refcount block entries of width 2^order bits (qcow2_refcount.cpp).
uint64_t rb_get(const uint8_t* blk, uint64_t idx, uint32_t order);
void rb_set(uint8_t* blk, uint64_t idx, uint32_t order, uint64_t v);

// The feature name table header extension written on create (qcow2_header.cpp).
std::vector<uint8_t> feature_table();

// The on-disk snapshot table (qcow2_snapshot.cpp).
std::vector<uint8_t> serialize_snapshots(const std::vector<SnapshotRec>& sn);

}  // namespace qcow2

using namespace qcow2;

struct Qcow2Image::State {
  std::string filename;
  std::unique_ptr<HostFile> file;
  OpenOptions opts;
  bool ro = true;
  std::mutex mu;

  // Header.
  uint32_t version = 3;
  uint32_t cluster_bits = 16;
  uint64_t cs = 65536;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  std::unique_ptr<qcow2::Crypto> crypt;   // encrypted images (block/qcow2_crypto.h)
  uint32_t l1_size = 0;
  uint64_t l1_offset = 0;
  uint64_t rt_offset = 0;
  uint32_t rt_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompat = 0, compat = 0, autoclear = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 104;
  uint8_t compression_type = 0;  // 0 zlib, 1 zstd
  std::string backing_name, backing_fmt;
  std::vector<Ext> exts;  // every extension except backing format and end, in file order (preserved)

  bool extended_l2() const { return incompat & kIncompatExtendedL2; }
  uint64_t l2_entries() const { return cs / (extended_l2() ? 16 : 8); }
  uint64_t l2_span() const { return l2_entries() * cs; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  uint64_t rb_entries() const { return cs * 8 / refcount_bits(); }
  uint64_t refcount_max() const { return refcount_order == 6 ? UINT64_MAX : (1ULL << refcount_bits()) - 1; }

  std::vector<uint64_t> l1;  // active L1, host order
  std::set<uint64_t> dirty_l1_sectors;

  // L2 cache: LRU list of offsets (front = most recent) + map to tables (raw 64-bit words, host order).
  struct L2Table {
    std::vector<uint64_t> w;
    bool dirty = false;
    std::list<uint64_t>::iterator lru;
  };
  std::unordered_map<uint64_t, L2Table> l2cache;
  std::list<uint64_t> l2lru;
  size_t l2_cache_max = 64;

  // Refcounts: the whole array in memory once loaded (8 bytes per host cluster), blocks written back.
  bool rc_loaded = false;
  std::vector<uint64_t> rc;
  std::vector<uint64_t> rt;  // refcount table entries (block offsets)
  std::set<uint64_t> dirty_rb;  // refcount block indices to write back
  std::vector<std::pair<uint64_t, uint64_t>> pending_free;  // (cluster index, count): after metadata flush
  uint64_t free_hint = 1;
  uint64_t compressed_tail = 0;  // byte offset where the next compressed cluster may start (0: none)
  bool data_written = false;     // unsynced data writes exist

  std::vector<SnapshotRec> snaps;
  std::unique_ptr<BlockImage> backing;

  bool write_prepared = false;
  bool set_dirty_bit = false;

  // Decompressed-cluster cache (one entry).
  uint64_t dcache_key = UINT64_MAX;
  std::vector<uint8_t> dcache;

  // ---- helpers ----
  [[noreturn]] void corrupt(const std::string& what);
  std::vector<uint8_t> header_cluster() const;
  void write_header();
  void read_l2(uint64_t off, std::vector<uint64_t>& w);
  L2Table& get_l2(uint64_t off);
  void write_l2(uint64_t off, L2Table& t);
  void evict_l2_if_needed();
  void load_refcounts();
  uint64_t get_rc(uint64_t c) const { return c < rc.size() ? rc[c] : 0; }
  void set_rc(uint64_t c, uint64_t v);
  void add_rc(uint64_t c, int64_t delta);
  void write_refcount_blocks();
  uint64_t alloc_clusters(uint64_t n);
  void ensure_coverage();
  void free_clusters_later(uint64_t host_off, uint64_t len);
  void flush_metadata();
  void write_l1_sectors();
  void prepare_write();
  void check_no_overlap(uint64_t host, uint64_t len, const char* what);
  uint64_t l2_word(const L2Table& t, uint64_t idx) const { return t.w[extended_l2() ? idx * 2 : idx]; }
  void set_l2_word(L2Table& t, uint64_t idx, uint64_t v) {
    t.w[extended_l2() ? idx * 2 : idx] = v;
    t.dirty = true;
  }
  void compressed_range(uint64_t entry, uint64_t& off, uint64_t& len) const {
    unsigned x = 62 - (cluster_bits - 8);
    off = entry & ((1ULL << x) - 1);
    uint64_t nsec = ((entry & ~kCompressed & ~kCopied) >> x) + 1;
    len = nsec * 512 - (off & 511);
  }
  void decompress(uint64_t entry, std::vector<uint8_t>& out);
  std::vector<uint8_t> compress(std::span<const uint8_t> in);
  void read_unit_chain(uint64_t off, std::span<uint8_t> buf);  // read through backing (zeros past its end)
  void read_locked(uint64_t offset, std::span<uint8_t> buf,
                   std::vector<std::pair<uint64_t, std::span<uint8_t>>>* deferred);
  void write_locked(uint64_t offset, std::span<const uint8_t> buf);
  L2Table& writable_l2(uint64_t l1i);
  void free_entry(uint64_t e);
  void zero_clusters(uint64_t offset, uint64_t length, bool discard_only);
  void update_snapshot_table(std::vector<SnapshotRec> nsn);
  // Visit every (cluster index, count) reference of an L1 tree: the L2 tables and their data clusters.
  template <typename F>
  void walk_tree(const std::vector<uint64_t>& l1tab, F&& on_ref, uint64_t* errors, CheckResult* res);
  std::vector<uint64_t> read_l1(uint64_t off, uint32_t n);
  void fix_copied_flags(CheckResult* res, bool fix);
  void compute_references(std::vector<uint64_t>& ref, CheckResult& res, bool count_refcount_structs);
  void rebuild_refcounts(const std::vector<uint64_t>& ref, uint32_t new_order);
  void grow_l1(uint64_t need);
};

struct Qcow2Opener {
  static std::unique_ptr<Qcow2Image> run(const std::string& path, const OpenOptions& opts, OpenContext& ctx);
};

// on_ref(host, kind, entry): kind 0 = L2 table cluster, 1 = data cluster (normal or preallocated zero),
// 2 = a cluster touched by compressed data, 3 = a compressed L2 entry (statistics only, no reference).
template <typename F>
void Qcow2Image::State::walk_tree(const std::vector<uint64_t>& l1tab, F&& on_ref, uint64_t* errors,
                                  CheckResult* res) {
  const bool ext = extended_l2();
  const uint64_t flen = file->length();
  std::vector<uint64_t> w;
  for (size_t i = 0; i < l1tab.size(); i++) {
    uint64_t l2off = l1tab[i] & kL1OffsetMask;
    if (!l2off) continue;
    if (l2off % cs) {
      if (errors) (*errors)++;
      if (res) res->messages.push_back(fmt::format(
          "ERROR l2_offset={:x}: Table is not cluster aligned; L1 entry corrupted", l2off));
      continue;
    }
    on_ref(l2off, 0, l1tab[i]);
    auto it = l2cache.find(l2off);
    if (it != l2cache.end()) w = it->second.w;
    else read_l2(l2off, w);
    for (uint64_t k = 0; k < l2_entries(); k++) {
      uint64_t e = w[ext ? k * 2 : k];
      if (e & kCompressed) {
        uint64_t off, len;
        compressed_range(e, off, len);
        if (off + len > flen + cs) {
          if (errors) (*errors)++;
          if (res) res->messages.push_back(fmt::format(
              "ERROR compressed cluster at {:#x} is beyond the end of the image", off));
          continue;
        }
        on_ref(off, 3, e);
        for (uint64_t c = off / cs; c <= (off + len - 1) / cs; c++) on_ref(c * cs, 2, e);
        continue;
      }
      uint64_t host = e & kL2OffsetMask;
      if (!host) continue;
      if (host % cs) {
        if (errors) (*errors)++;
        if (res) res->messages.push_back(fmt::format(
            "ERROR offset={:x}: Cluster is not properly aligned; L2 entry corrupted.", host));
        continue;
      }
      on_ref(host, 1, e);
    }
  }
}

// qemu-img create for qcow2 (qcow2_create.cpp); called by create_image().
void create_qcow2(const std::string& path, const CreateOptions& o);

}  // namespace vireo::block
