// The qcow2 driver. See docs/block.md for the design (caches, write ordering, locking).
#include "block/qcow2.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "block/file.h"
#include "block/qcow2_crypto.h"
#include "block/qcow2_format.h"
#include "block/raw.h"
#include "common/error.h"

namespace vireo::block {

using namespace qcow2;

namespace {

struct Ext {
  uint32_t type;
  std::vector<uint8_t> data;
};

struct SnapshotRec {
  Qcow2Snapshot pub;
  std::vector<uint8_t> extra;  // raw extra data (preserved; first 24 bytes rewritten from pub)
};

uint64_t div_round_up(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

}  // namespace

// -------------------------------------------------------------------------------------------------
// State

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

void Qcow2Image::State::corrupt(const std::string& what) {
  if (!ro && !(incompat & kIncompatCorrupt)) {
    incompat |= kIncompatCorrupt;
    try {
      write_header();
      file->sync();
    } catch (const Error&) {
    }
  }
  throw Error(fmt::format("qcow2 image {} is corrupt: {}", filename, what), EIO);
}

// -------------------------------------------------------------------------------------------------
// Header

std::vector<uint8_t> Qcow2Image::State::header_cluster() const {
  std::vector<uint8_t> b(cs, 0);
  uint32_t hlen = version >= 3 ? header_length : 72;
  put32(&b[0], kMagic);
  put32(&b[4], version);
  put32(&b[20], cluster_bits);
  put64(&b[24], size);
  put32(&b[32], crypt_method);
  put32(&b[36], l1_size);
  put64(&b[40], l1_offset);
  put64(&b[48], rt_offset);
  put32(&b[56], rt_clusters);
  put32(&b[60], nb_snapshots);
  put64(&b[64], snapshots_offset);
  if (version >= 3) {
    put64(&b[72], incompat);
    put64(&b[80], compat);
    put64(&b[88], autoclear);
    put32(&b[96], refcount_order);
    put32(&b[100], hlen);
    if (hlen > 104) b[104] = compression_type;
  }
  size_t pos = hlen;
  auto add_ext = [&](uint32_t type, const uint8_t* data, size_t len) {
    size_t padded = (len + 7) & ~size_t(7);
    if (pos + 8 + padded + 8 > cs) fail("qcow2 header of {} does not fit in one cluster", filename);
    put32(&b[pos], type);
    put32(&b[pos + 4], static_cast<uint32_t>(len));
    if (len) std::memcpy(&b[pos + 8], data, len);
    pos += 8 + padded;
  };
  if (!backing_fmt.empty())
    add_ext(kExtBackingFormat, reinterpret_cast<const uint8_t*>(backing_fmt.data()), backing_fmt.size());
  for (const auto& e : exts) add_ext(e.type, e.data.data(), e.data.size());
  put32(&b[pos], kExtEnd);
  put32(&b[pos + 4], 0);
  pos += 8;
  if (!backing_name.empty()) {
    if (pos + backing_name.size() > cs) fail("qcow2 header of {} does not fit in one cluster", filename);
    std::memcpy(&b[pos], backing_name.data(), backing_name.size());
    put64(&b[8], pos);
    put32(&b[16], static_cast<uint32_t>(backing_name.size()));
    pos += backing_name.size();
  }
  b.resize(std::max<size_t>((pos + 511) & ~size_t(511), 512));
  return b;
}

void Qcow2Image::State::write_header() { file->pwrite_full(0, header_cluster()); }

std::vector<uint8_t> feature_table() {
  struct F {
    uint8_t type, bit;
    const char* name;
  };
  static const F feats[] = {{0, 0, "dirty bit"},           {0, 1, "corrupt bit"},
                            {0, 2, "external data file"},  {0, 3, "compression type"},
                            {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
                            {2, 0, "bitmaps"},             {2, 1, "raw external data"}};
  std::vector<uint8_t> d(sizeof(feats) / sizeof(feats[0]) * 48, 0);
  size_t i = 0;
  for (const auto& f : feats) {
    d[i * 48] = f.type;
    d[i * 48 + 1] = f.bit;
    std::memcpy(&d[i * 48 + 2], f.name, std::strlen(f.name));
    i++;
  }
  return d;
}

// -------------------------------------------------------------------------------------------------
// L2 cache

void Qcow2Image::State::read_l2(uint64_t off, std::vector<uint64_t>& w) {
  std::vector<uint8_t> raw(cs);
  file->pread_full(off, raw);
  w.resize(cs / 8);
  for (size_t i = 0; i < w.size(); i++) w[i] = be64(&raw[i * 8]);
}

void Qcow2Image::State::write_l2(uint64_t off, L2Table& t) {
  check_no_overlap(off, cs, "L2 table");
  std::vector<uint8_t> raw(cs);
  for (size_t i = 0; i < t.w.size(); i++) put64(&raw[i * 8], t.w[i]);
  file->pwrite_full(off, raw);
  t.dirty = false;
}

void Qcow2Image::State::evict_l2_if_needed() {
  while (l2cache.size() >= l2_cache_max && !l2lru.empty()) {
    uint64_t victim = l2lru.back();
    auto it = l2cache.find(victim);
    if (it->second.dirty) {
      // A table may only reach the disk after the refcounts of the clusters it references.
      write_refcount_blocks();
      file->sync();
      write_l2(victim, it->second);
    }
    l2lru.pop_back();
    l2cache.erase(it);
  }
}

Qcow2Image::State::L2Table& Qcow2Image::State::get_l2(uint64_t off) {
  auto it = l2cache.find(off);
  if (it != l2cache.end()) {
    l2lru.splice(l2lru.begin(), l2lru, it->second.lru);
    return it->second;
  }
  if (off == 0 || off % cs != 0) corrupt(fmt::format("L2 table offset {} is not cluster aligned", hex(off)));
  evict_l2_if_needed();
  L2Table t;
  read_l2(off, t.w);
  l2lru.push_front(off);
  t.lru = l2lru.begin();
  return l2cache.emplace(off, std::move(t)).first->second;
}

// -------------------------------------------------------------------------------------------------
// Refcounts

namespace {
uint64_t rb_get(const uint8_t* blk, uint64_t idx, uint32_t order) {
  switch (order) {
    case 0: case 1: case 2: {
      uint32_t bits = 1u << order;
      uint64_t bit = idx * bits;
      return (blk[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    case 3: return blk[idx];
    case 4: return be16(blk + idx * 2);
    case 5: return be32(blk + idx * 4);
    default: return be64(blk + idx * 8);
  }
}
void rb_set(uint8_t* blk, uint64_t idx, uint32_t order, uint64_t v) {
  switch (order) {
    case 0: case 1: case 2: {
      uint32_t bits = 1u << order;
      uint64_t bit = idx * bits;
      uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << (bit % 8));
      blk[bit / 8] = static_cast<uint8_t>((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
      break;
    }
    case 3: blk[idx] = static_cast<uint8_t>(v); break;
    case 4: put16(blk + idx * 2, static_cast<uint16_t>(v)); break;
    case 5: put32(blk + idx * 4, static_cast<uint32_t>(v)); break;
    default: put64(blk + idx * 8, v); break;
  }
}
}  // namespace

void Qcow2Image::State::load_refcounts() {
  if (rc_loaded) return;
  uint64_t file_clusters = div_round_up(file->length(), cs);
  if (file_clusters > kMaxRefcountClusters)
    fail("qcow2 image {} is too large for this implementation ({} clusters)", filename, file_clusters);
  rt.assign(static_cast<size_t>(rt_clusters) * cs / 8, 0);
  {
    std::vector<uint8_t> raw(static_cast<size_t>(rt_clusters) * cs);
    file->pread_full(rt_offset, raw);
    for (size_t i = 0; i < rt.size(); i++) rt[i] = be64(&raw[i * 8]) & kRefTableOffsetMask;
  }
  rc.assign(file_clusters, 0);
  const uint64_t n = rb_entries();
  std::vector<uint8_t> blk(cs);
  for (size_t i = 0; i < rt.size(); i++) {
    if (rt[i] == 0) continue;
    uint64_t first = i * n;
    if (first >= file_clusters) continue;
    if (rt[i] % cs != 0) continue;  // check() reports it; such a block is ignored
    file->pread_full(rt[i], blk);
    uint64_t end = std::min<uint64_t>(first + n, file_clusters);
    for (uint64_t c = first; c < end; c++) rc[c] = rb_get(blk.data(), c - first, refcount_order);
  }
  rc_loaded = true;
  free_hint = 1;
}

void Qcow2Image::State::set_rc(uint64_t c, uint64_t v) {
  if (c >= rc.size()) {
    if (c >= kMaxRefcountClusters) fail("qcow2 image {}: image file too large", filename);
    rc.resize(c + 1, 0);
  }
  rc[c] = v;
  dirty_rb.insert(c / rb_entries());
}

void Qcow2Image::State::add_rc(uint64_t c, int64_t delta) {
  uint64_t cur = get_rc(c);
  if (delta < 0 && cur < static_cast<uint64_t>(-delta))
    corrupt(fmt::format("refcount of cluster {} would drop below zero", c));
  uint64_t nv = cur + static_cast<uint64_t>(delta);
  if (delta > 0 && (nv > refcount_max() || nv < cur))
    fail("qcow2 image {}: refcount overflow for cluster {}", filename, c);
  set_rc(c, nv);
  if (nv == 0 && c < free_hint) free_hint = std::max<uint64_t>(c, 1);
  if (nv == 0 && compressed_tail && compressed_tail / cs == c) compressed_tail = 0;
  if (nv == 0) {
    auto it = l2cache.find(c * cs);
    if (it != l2cache.end()) {
      l2lru.erase(it->second.lru);
      l2cache.erase(it);
    }
  }
}

void Qcow2Image::State::write_refcount_blocks() {
  if (dirty_rb.empty()) return;
  ensure_coverage();
  const uint64_t n = rb_entries();
  std::vector<uint8_t> blk(cs);
  for (uint64_t bi : dirty_rb) {
    if (bi >= rt.size() || rt[bi] == 0) continue;  // nothing counted there (all zero)
    if (rt[bi] % cs) corrupt(fmt::format("refcount block {} is not cluster aligned", bi));
    check_no_overlap(rt[bi], cs, "refcount block");
    std::fill(blk.begin(), blk.end(), 0);
    uint64_t first = bi * n;
    uint64_t end = std::min<uint64_t>(first + n, rc.size());
    for (uint64_t c = first; c < end; c++) rb_set(blk.data(), c - first, refcount_order, rc[c]);
    file->pwrite_full(rt[bi], blk);
  }
  dirty_rb.clear();
}

// Makes sure every refcount block range holding a non-zero refcount has a block and the refcount table
// has an entry for it; grows (moves) the table when needed. New blocks and tables are written before the
// structure that points to them, with a flush in between.
void Qcow2Image::State::ensure_coverage() {
  const uint64_t n = rb_entries();
  std::vector<uint64_t> new_blocks;
  uint64_t new_rt_off = 0, new_rt_clusters = 0;
  std::vector<uint64_t> nrt = rt;
  for (int round = 0;; round++) {
    if (round > 64) fail("qcow2 image {}: cannot lay out refcount structures", filename);
    bool changed = false;
    uint64_t nblocks = div_round_up(rc.size(), n);
    for (uint64_t bi = 0; bi < nblocks; bi++) {
      if (bi < nrt.size() && nrt[bi] != 0) continue;
      uint64_t first = bi * n, end = std::min<uint64_t>(first + n, rc.size());
      bool any = false;
      for (uint64_t c = first; c < end && !any; c++) any = rc[c] != 0;
      if (!any) continue;
      // New block: at the first free cluster (searching from the end of the file keeps it simple).
      uint64_t c = rc.size();
      for (uint64_t k = std::max<uint64_t>(free_hint, 1); k < rc.size(); k++)
        if (rc[k] == 0) { c = k; break; }
      set_rc(c, 1);
      if (bi >= nrt.size()) nrt.resize(bi + 1, 0);
      nrt[bi] = c * cs;
      new_blocks.push_back(bi);
      changed = true;
    }
    uint64_t cap = new_rt_clusters ? new_rt_clusters * cs / 8 : static_cast<uint64_t>(rt_clusters) * cs / 8;
    if (nrt.size() > cap) {
      // Grow the table: place it at the end, leave room to spare.
      uint64_t want_entries = nrt.size() + nrt.size() / 2 + 8;
      uint64_t clusters = div_round_up(want_entries * 8, cs);
      if (clusters * cs > kMaxRefTableBytes * 4) fail("qcow2 image {}: refcount table too large", filename);
      if (new_rt_clusters) {
        for (uint64_t k = 0; k < new_rt_clusters; k++) set_rc(new_rt_off / cs + k, 0);
      }
      uint64_t start = rc.size();
      for (uint64_t k = 0; k < clusters; k++) set_rc(start + k, 1);
      new_rt_off = start * cs;
      new_rt_clusters = clusters;
      changed = true;
    }
    if (!changed) break;
  }
  if (new_blocks.empty() && !new_rt_clusters) return;
  // 1. Write every dirty block (new ones included) with the current counts.
  std::vector<uint8_t> blk(cs);
  for (uint64_t bi : dirty_rb) {
    if (bi >= nrt.size() || nrt[bi] == 0) continue;
    if (nrt[bi] % cs) corrupt(fmt::format("refcount block {} is not cluster aligned", bi));
    check_no_overlap(nrt[bi], cs, "refcount block");
    std::fill(blk.begin(), blk.end(), 0);
    uint64_t first = bi * n, end = std::min<uint64_t>(first + n, rc.size());
    for (uint64_t c = first; c < end; c++) rb_set(blk.data(), c - first, refcount_order, rc[c]);
    file->pwrite_full(nrt[bi], blk);
  }
  dirty_rb.clear();
  file->sync();
  // 2. The table (new location or changed entries in place).
  if (new_rt_clusters) {
    std::vector<uint8_t> raw(new_rt_clusters * cs, 0);
    for (size_t i = 0; i < nrt.size(); i++) put64(&raw[i * 8], nrt[i]);
    file->pwrite_full(new_rt_off, raw);
    file->sync();
    uint64_t old_off = rt_offset, old_clusters = rt_clusters;
    rt_offset = new_rt_off;
    rt_clusters = static_cast<uint32_t>(new_rt_clusters);
    rt = nrt;
    rt.resize(new_rt_clusters * cs / 8, 0);
    write_header();
    file->sync();
    for (uint64_t k = 0; k < old_clusters; k++) add_rc(old_off / cs + k, -1);
  } else {
    std::set<uint64_t> sectors;
    for (uint64_t bi : new_blocks) sectors.insert(bi * 8 / 512);
    rt = nrt;
    rt.resize(static_cast<size_t>(rt_clusters) * cs / 8, 0);
    for (uint64_t s : sectors) {
      uint8_t raw[512];
      for (int i = 0; i < 64; i++) put64(raw + i * 8, s * 64 + i < rt.size() ? rt[s * 64 + i] : 0);
      file->pwrite_full(rt_offset + s * 512, raw);
    }
    file->sync();
  }
}

uint64_t Qcow2Image::State::alloc_clusters(uint64_t n) {
  load_refcounts();
  uint64_t start = std::max<uint64_t>(free_hint, 1), run = 0, c = start;
  for (; c < rc.size() && run < n; c++) {
    if (rc[c] == 0) {
      if (run == 0) start = c;
      run++;
    } else {
      run = 0;
    }
  }
  if (run < n) {
    if (run == 0) start = std::max<uint64_t>(rc.size(), 1);
  }
  for (uint64_t k = 0; k < n; k++) set_rc(start + k, 1);
  free_hint = start + n;
  ensure_coverage();
  return start * cs;
}

void Qcow2Image::State::free_clusters_later(uint64_t host_off, uint64_t len) {
  if (len == 0) return;
  uint64_t first = host_off / cs, last = (host_off + len - 1) / cs;
  for (uint64_t c = first; c <= last; c++) pending_free.emplace_back(c, 1);
}

void Qcow2Image::State::write_l1_sectors() {
  for (uint64_t s : dirty_l1_sectors) {
    uint8_t raw[512] = {};
    for (uint64_t i = 0; i < 64; i++) {
      uint64_t idx = s * 64 + i;
      if (idx < l1.size()) put64(raw + i * 8, l1[idx]);
    }
    uint64_t bytes = std::min<uint64_t>(512, l1.size() * 8 - s * 512);
    file->pwrite_full(l1_offset + s * 512, std::span<const uint8_t>(raw, bytes));
  }
  dirty_l1_sectors.clear();
}

// Ordering: refcount blocks -> flush -> L2 tables -> flush -> L1 -> flush -> deferred refcount decrements.
void Qcow2Image::State::flush_metadata() {
  bool any_l2 = false;
  for (auto& [off, t] : l2cache) any_l2 |= t.dirty;
  if (dirty_rb.empty() && !any_l2 && dirty_l1_sectors.empty() && pending_free.empty()) return;
  write_refcount_blocks();
  file->sync();
  if (any_l2) {
    for (auto& [off, t] : l2cache)
      if (t.dirty) write_l2(off, t);
    if (!dirty_l1_sectors.empty()) file->sync();
  }
  if (!dirty_l1_sectors.empty()) write_l1_sectors();
  if (!pending_free.empty()) {
    file->sync();
    auto frees = std::move(pending_free);
    pending_free.clear();
    for (auto [c, k] : frees) add_rc(c, -static_cast<int64_t>(k));
    write_refcount_blocks();
  }
  data_written = true;  // make the caller sync
}

void Qcow2Image::State::prepare_write() {
  if (ro) throw Error(fmt::format("write {}: image is read-only", filename), EROFS);
  if (incompat & kIncompatCorrupt)
    throw Error(fmt::format("qcow2 image {} is marked corrupt; repair it with check -r all first", filename), EIO);
  load_refcounts();
  if (write_prepared) return;
  bool hdr = false;
  if (autoclear) {  // bitmaps (and anything else autoclear) are not maintained: invalidate them
    autoclear = 0;
    hdr = true;
  }
  if ((compat & kCompatLazyRefcounts) && !(incompat & kIncompatDirty)) {
    incompat |= kIncompatDirty;
    set_dirty_bit = true;
    hdr = true;
  }
  if (hdr) {
    write_header();
    file->sync();
  }
  write_prepared = true;
}

void Qcow2Image::State::check_no_overlap(uint64_t host, uint64_t len, const char* what) {
  auto hit = [&](uint64_t a, uint64_t alen) { return alen && host < a + alen && a < host + len; };
  const char* with = nullptr;
  if (hit(0, cs)) with = "qcow2_header";
  else if (hit(l1_offset, uint64_t(l1_size) * 8)) with = "active L1 table";
  else if (hit(rt_offset, uint64_t(rt_clusters) * cs)) with = "refcount table";
  else if (nb_snapshots && hit(snapshots_offset, cs)) with = "snapshot table";
  if (with) corrupt(fmt::format("preventing invalid {} write at {} (overlaps with {})", what, hex(host), with));
}

// -------------------------------------------------------------------------------------------------
// Compression

void Qcow2Image::State::decompress(uint64_t entry, std::vector<uint8_t>& out) {
  uint64_t off, len;
  compressed_range(entry, off, len);
  if (dcache_key == entry && dcache.size() == cs) {
    out = dcache;
    return;
  }
  if (off >= file->length())
    corrupt(fmt::format("compressed cluster at {} lies beyond the end of the file", hex(off)));
  std::vector<uint8_t> in(len);
  file->pread_full(off, in);
  out.assign(cs, 0);
  if (compression_type == 0) {
    z_stream z{};
    if (inflateInit2(&z, -12) != Z_OK) fail("zlib init failed");
    z.next_in = in.data();
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    int r = inflate(&z, Z_FINISH);
    bool ok = (r == Z_STREAM_END || r == Z_BUF_ERROR) && z.avail_out == 0;
    if (r == Z_STREAM_END && z.avail_out != 0) ok = false;
    inflateEnd(&z);
    if (!ok) throw Error(fmt::format("read {}: bad compressed cluster at {}", filename, hex(off)), EIO);
  } else {
    ZSTD_DCtx* d = ZSTD_createDCtx();
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    bool ok = true;
    while (ob.pos < ob.size) {
      size_t r = ZSTD_decompressStream(d, &ob, &ib);
      if (ZSTD_isError(r)) { ok = false; break; }
      if (r == 0 || (ib.pos == ib.size && ob.pos < ob.size)) {
        if (ob.pos < ob.size) ok = false;
        break;
      }
    }
    ZSTD_freeDCtx(d);
    if (!ok) throw Error(fmt::format("read {}: bad zstd compressed cluster at {}", filename, hex(off)), EIO);
  }
  dcache_key = entry;
  dcache = out;
}

std::vector<uint8_t> Qcow2Image::State::compress(std::span<const uint8_t> in) {
  std::vector<uint8_t> out(cs - 1);
  if (compression_type == 0) {
    z_stream z{};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
      fail("zlib init failed");
    z.next_in = const_cast<uint8_t*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    int r = deflate(&z, Z_FINISH);
    size_t n = out.size() - z.avail_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END) return {};
    out.resize(n);
    return out;
  }
  size_t r = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
  if (ZSTD_isError(r)) return {};
  out.resize(r);
  return out;
}

// -------------------------------------------------------------------------------------------------
// Read

void Qcow2Image::State::read_unit_chain(uint64_t off, std::span<uint8_t> buf) {
  if (!backing) {
    std::fill(buf.begin(), buf.end(), 0);
    return;
  }
  uint64_t bsz = backing->size();
  uint64_t n = off >= bsz ? 0 : std::min<uint64_t>(buf.size(), bsz - off);
  if (n) backing->read(off, buf.subspan(0, n));
  std::fill(buf.begin() + static_cast<ptrdiff_t>(n), buf.end(), 0);
}

void Qcow2Image::State::read_locked(uint64_t offset, std::span<uint8_t> buf,
                                    std::vector<std::pair<uint64_t, std::span<uint8_t>>>* deferred) {
  const bool ext = extended_l2();
  const uint64_t unit = ext ? cs / 32 : cs;
  uint64_t pos = 0;
  std::vector<uint8_t> tmp;
  while (pos < buf.size()) {
    uint64_t g = offset + pos;
    uint64_t ci = g / cs, l1i = ci / l2_entries(), l2i = ci % l2_entries();
    uint64_t in_unit = g % unit;
    uint64_t n = std::min<uint64_t>(unit - in_unit, buf.size() - pos);
    auto dst = buf.subspan(pos, n);
    uint64_t l1e = l1i < l1.size() ? l1[l1i] & kL1OffsetMask : 0;
    if (l1e == 0) {
      // Whole L2 span unallocated: read as much of it as requested at once.
      uint64_t span_end = (l1i + 1) * l2_span();
      n = std::min<uint64_t>(span_end - g, buf.size() - pos);
      read_unit_chain(g, buf.subspan(pos, n));
      pos += n;
      continue;
    }
    L2Table& t = get_l2(l1e);
    uint64_t e = t.w[ext ? l2i * 2 : l2i];
    if (e & kCompressed) {
      n = std::min<uint64_t>(cs - g % cs, buf.size() - pos);
      decompress(e, tmp);
      std::copy_n(tmp.begin() + static_cast<ptrdiff_t>(g % cs), n, buf.begin() + static_cast<ptrdiff_t>(pos));
      pos += n;
      continue;
    }
    uint64_t host = e & kL2OffsetMask;
    if (host % cs) corrupt(fmt::format("cluster allocation offset {} unaligned (L2 offset: {}, L2 index: {:#x})",
                                       hex(host), hex(l1e), l2i));
    int kind;  // 0 unallocated, 1 zero, 2 data
    if (ext) {
      uint64_t bm = t.w[l2i * 2 + 1];
      unsigned sc = static_cast<unsigned>((g % cs) / unit);
      if ((bm >> sc) & 1 && (bm >> (32 + sc)) & 1)
        corrupt(fmt::format("subcluster {} of L2 entry {} is both allocated and zero", sc, l2i));
      kind = (bm >> (32 + sc)) & 1 ? 1 : ((bm >> sc) & 1 ? 2 : 0);
      if (kind == 2 && host == 0) corrupt("allocated subcluster without a host cluster");
      if (kind == 2) host += sc * unit;
    } else {
      kind = (version >= 3 && (e & kZero)) ? 1 : (host ? 2 : 0);
    }
    if (kind == 0) {
      read_unit_chain(g, dst);
    } else if (kind == 1) {
      std::fill(dst.begin(), dst.end(), 0);
    } else {
      uint64_t h = host + in_unit;
      if (crypt) {
        // Whole sectors are decrypted; host and guest offsets share their position within a sector.
        const uint64_t lead = g % 512, span = (lead + n + 511) / 512 * 512;
        std::vector<uint8_t> sec(span);
        file->pread_full(h - lead, sec);
        crypt->decrypt(h - lead, g - lead, sec);
        std::copy_n(sec.begin() + static_cast<ptrdiff_t>(lead), n, dst.begin());
      } else if (deferred) {
        // Merge with the previous piece when contiguous on both sides.
        if (!deferred->empty()) {
          auto& last = deferred->back();
          if (last.first + last.second.size() == h &&
              last.second.data() + last.second.size() == dst.data()) {
            last.second = std::span<uint8_t>(last.second.data(), last.second.size() + n);
            pos += n;
            continue;
          }
        }
        deferred->emplace_back(h, dst);
      } else {
        file->pread_full(h, dst);
      }
    }
    pos += n;
  }
}

// -------------------------------------------------------------------------------------------------
// Write

Qcow2Image::State::L2Table& Qcow2Image::State::writable_l2(uint64_t l1i) {
  if (l1i >= l1.size()) fail("write {}: offset beyond the L1 table", filename);
  uint64_t e = l1[l1i];
  uint64_t off = e & kL1OffsetMask;
  if (off && (e & kCopied)) return get_l2(off);
  std::vector<uint64_t> w(cs / 8, 0);
  if (off) w = get_l2(off).w;  // shared with a snapshot: copy it
  uint64_t noff = alloc_clusters(1);
  check_no_overlap(noff, cs, "L2 table");
  evict_l2_if_needed();
  l2lru.push_front(noff);
  L2Table t;
  t.w = std::move(w);
  t.dirty = true;
  t.lru = l2lru.begin();
  L2Table& ref = l2cache.emplace(noff, std::move(t)).first->second;
  if (off) free_clusters_later(off, cs);
  l1[l1i] = noff | kCopied;
  dirty_l1_sectors.insert(l1i * 8 / 512);
  return ref;
}

void Qcow2Image::State::free_entry(uint64_t e) {
  if (e & kCompressed) {
    uint64_t off, len;
    compressed_range(e, off, len);
    free_clusters_later(off, len);
    return;
  }
  uint64_t host = e & kL2OffsetMask;
  if (host) free_clusters_later(host, cs);
}

void Qcow2Image::State::write_locked(uint64_t offset, std::span<const uint8_t> buf) {
  prepare_write();
  uint64_t pos = 0;
  while (pos < buf.size()) {
    uint64_t g = offset + pos;
    uint64_t ci = g / cs, l1i = ci / l2_entries(), l2i = ci % l2_entries();
    L2Table* t = &writable_l2(l1i);
    uint64_t t_off = l1[l1i] & kL1OffsetMask;
    const bool ext = extended_l2();
    // Extended L2: in place only when every subcluster is allocated (and none reads as zero); anything
    // else gets a whole new cluster with the merged content and a fully allocated bitmap.
    auto inplace_at = [&](uint64_t k) {
      uint64_t e = t->w[ext ? k * 2 : k];
      if ((e & kCompressed) || !(e & kCopied) || !(e & kL2OffsetMask)) return false;
      if (ext) return t->w[k * 2 + 1] == 0xffffffffULL;
      return !(version >= 3 && (e & kZero));
    };
    auto word = [&](uint64_t k) { return t->w[ext ? k * 2 : k]; };
    uint64_t e0 = word(l2i);
    if (inplace_at(l2i)) {
      uint64_t host0 = e0 & kL2OffsetMask;
      if (host0 % cs) corrupt(fmt::format("cluster allocation offset {} unaligned", hex(host0)));
      // Extend over following clusters that are contiguous on the host.
      uint64_t n = std::min<uint64_t>(cs - g % cs, buf.size() - pos);
      uint64_t k = l2i + 1;
      while (pos + n < buf.size() && k < l2_entries()) {
        uint64_t e = word(k);
        if (!inplace_at(k) || (e & kL2OffsetMask) != host0 + (k - l2i) * cs) break;
        n += std::min<uint64_t>(cs, buf.size() - pos - n);
        k++;
      }
      uint64_t h = host0 + g % cs;
      check_no_overlap(h, n, "data");
      if (crypt) {
        // Read-modify-write of the covering sectors, re-encrypted.
        const uint64_t lead = g % 512, span = (lead + n + 511) / 512 * 512;
        std::vector<uint8_t> sec(span);
        if (lead || n % 512) {
          file->pread_full(h - lead, sec);
          crypt->decrypt(h - lead, g - lead, sec);
        }
        std::copy_n(buf.begin() + static_cast<ptrdiff_t>(pos), n, sec.begin() + static_cast<ptrdiff_t>(lead));
        crypt->encrypt(h - lead, g - lead, sec);
        file->pwrite_full(h - lead, sec);
      } else {
        file->pwrite_full(h, buf.subspan(pos, n));
      }
      pos += n;
      data_written = true;
      continue;
    }
    // A run of clusters that need a new host cluster each (unallocated, zero, compressed or shared).
    uint64_t m = 1;
    uint64_t run_bytes = std::min<uint64_t>(cs - g % cs, buf.size() - pos);
    const uint64_t max_run = std::max<uint64_t>(1, (8ULL << 20) / cs);
    while (pos + run_bytes < buf.size() && l2i + m < l2_entries() && m < max_run && !inplace_at(l2i + m)) {
      run_bytes += std::min<uint64_t>(cs, buf.size() - pos - run_bytes);
      m++;
    }
    uint64_t first_g = ci * cs;
    std::vector<uint8_t> data(m * cs, 0);
    // Copy-on-write: the parts of the first and last cluster the write does not cover.
    auto fill_old = [&](uint64_t j) {
      uint64_t cg = first_g + j * cs;
      if (cg >= size) return;
      uint64_t len = std::min<uint64_t>(cs, size - cg);
      uint64_t e = word(l2i + j);
      if (e == 0 && !backing && !ext) return;
      read_locked(cg, std::span<uint8_t>(data.data() + j * cs, len), nullptr);
      t = &get_l2(t_off);  // (the read may have touched the cache)
    };
    if (g % cs) fill_old(0);
    uint64_t end_g = g + run_bytes;
    if (end_g % cs && !(m == 1 && g % cs)) fill_old(m - 1);
    std::copy_n(buf.begin() + static_cast<ptrdiff_t>(pos), run_bytes, data.begin() + static_cast<ptrdiff_t>(g % cs));
    uint64_t base = alloc_clusters(m);
    check_no_overlap(base, m * cs, "data");
    if (crypt) crypt->encrypt(base, first_g, data);
    file->pwrite_full(base, data);
    data_written = true;
    t = &get_l2(t_off);
    for (uint64_t j = 0; j < m; j++) {
      uint64_t old = word(l2i + j);
      free_entry(old);
      set_l2_word(*t, l2i + j, (base + j * cs) | kCopied);
      if (ext) t->w[(l2i + j) * 2 + 1] = 0xffffffffULL;  // all subclusters allocated
    }
    pos += run_bytes;
  }
}

void Qcow2Image::State::zero_clusters(uint64_t offset, uint64_t length, bool discard_only) {
  prepare_write();
  uint64_t end = offset + length;
  uint64_t a = div_round_up(offset, cs) * cs;
  uint64_t b = end == size ? div_round_up(end, cs) * cs : end / cs * cs;
  if (a >= b) {  // no whole cluster inside
    if (!discard_only) {
      std::vector<uint8_t> z(length, 0);
      write_locked(offset, z);
    }
    return;
  }
  if (!discard_only && offset < a) {
    std::vector<uint8_t> z(a - offset, 0);
    write_locked(offset, z);
  }
  if (!discard_only && b < end) {
    std::vector<uint8_t> z(end - b, 0);
    write_locked(b, z);
  }
  for (uint64_t ci = a / cs; ci < b / cs;) {
    uint64_t l1i = ci / l2_entries(), l2i = ci % l2_entries();
    uint64_t span_end = std::min<uint64_t>((l1i + 1) * l2_entries(), b / cs);
    bool need_zero_flag = backing && version >= 3;
    bool absent = (l1[l1i] & kL1OffsetMask) == 0;
    if (absent && (!backing || (version < 3 && discard_only))) {
      ci = span_end;
      continue;
    }
    if (backing && version < 3 && !discard_only) {
      // v2 cannot say "zero" over a backing file: write real zeroes.
      std::vector<uint8_t> z((span_end - ci) * cs, 0);
      uint64_t lim = std::min<uint64_t>(span_end * cs, size) - ci * cs;
      write_locked(ci * cs, std::span<const uint8_t>(z.data(), lim));
      ci = span_end;
      continue;
    }
    L2Table* t = &writable_l2(l1i);
    const bool ext = extended_l2();
    for (uint64_t k = l2i; k < l2i + (span_end - ci); k++) {
      uint64_t e = l2_word(*t, k);
      uint64_t want = need_zero_flag && !ext ? kZero : 0;
      uint64_t want_bm = need_zero_flag ? 0xffffffff00000000ULL : 0;  // extended L2: all subclusters zero
      if (e == want && (!ext || t->w[k * 2 + 1] == want_bm)) continue;
      free_entry(e);
      set_l2_word(*t, k, want);
      if (ext) t->w[k * 2 + 1] = want_bm;
    }
    ci = span_end;
  }
}

// -------------------------------------------------------------------------------------------------
// Trees, snapshots

std::vector<uint64_t> Qcow2Image::State::read_l1(uint64_t off, uint32_t n) {
  if (uint64_t(n) * 8 > kMaxL1Bytes) corrupt(fmt::format("L1 table with {} entries is too large", n));
  if (n && off % cs) corrupt(fmt::format("L1 table offset {} is not cluster aligned", hex(off)));
  if (n && off + uint64_t(n) * 8 > file->length())
    corrupt(fmt::format("L1 table at {} lies beyond the end of the file", hex(off)));
  std::vector<uint8_t> raw(uint64_t(n) * 8);
  file->pread_full(off, raw);
  std::vector<uint64_t> v(n);
  for (uint32_t i = 0; i < n; i++) v[i] = be64(&raw[i * 8]);
  return v;
}

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

void Qcow2Image::State::fix_copied_flags(CheckResult* res, bool fix) {
  for (size_t i = 0; i < l1.size(); i++) {
    uint64_t off = l1[i] & kL1OffsetMask;
    if (!off || off % cs) continue;
    uint64_t r = get_rc(off / cs);
    bool copied = l1[i] & kCopied;
    if ((r == 1) != copied) {
      if (res && !fix) {
        res->corruptions++;
        res->messages.push_back(fmt::format("ERROR OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}",
                                            i, l1[i], r));
      }
      if (fix) {
        if (res) res->corruptions_fixed++;
        l1[i] = r == 1 ? (l1[i] | kCopied) : (l1[i] & ~kCopied);
        dirty_l1_sectors.insert(i * 8 / 512);
      }
    }
    // Shared tables are fixed in place too: COPIED is meaningless in snapshot views, and every data
    // cluster of a shared table has refcount >= 2 so its flags can only be cleared.
    L2Table& t = get_l2(off);
    for (uint64_t k = 0; k < l2_entries(); k++) {
      uint64_t e = l2_word(t, k);
      if (e & kCompressed) continue;
      uint64_t host = e & kL2OffsetMask;
      if (!host || host % cs) continue;
      uint64_t dr = get_rc(host / cs);
      bool dc = e & kCopied;
      if ((dr == 1) != dc) {
        if (res && !fix) {
          res->corruptions++;
          res->messages.push_back(fmt::format("ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", e, dr));
        }
        if (fix) {
          if (res) res->corruptions_fixed++;
          set_l2_word(t, k, dr == 1 ? (e | kCopied) : (e & ~kCopied));
        }
      }
    }
  }
}

namespace {
std::vector<uint8_t> serialize_snapshots(const std::vector<SnapshotRec>& sn) {
  std::vector<uint8_t> out;
  for (const auto& r : sn) {
    std::vector<uint8_t> extra = r.extra;
    if (extra.size() < 24) extra.resize(24, 0);
    put64(&extra[0], r.pub.vm_state_size);
    put64(&extra[8], r.pub.disk_size);
    put64(&extra[16], r.pub.icount ? *r.pub.icount : UINT64_MAX);
    size_t start = out.size();
    out.resize(start + 40, 0);
    uint8_t* h = &out[start];
    put64(h, r.pub.l1_table_offset);
    put32(h + 8, r.pub.l1_size);
    put16(h + 12, static_cast<uint16_t>(r.pub.id.size()));
    put16(h + 14, static_cast<uint16_t>(r.pub.name.size()));
    put32(h + 16, r.pub.date_sec);
    put32(h + 20, r.pub.date_nsec);
    put64(h + 24, r.pub.vm_clock_nsec);
    put32(h + 32, r.pub.vm_state_size > UINT32_MAX ? 0 : static_cast<uint32_t>(r.pub.vm_state_size));
    put32(h + 36, static_cast<uint32_t>(extra.size()));
    out.insert(out.end(), extra.begin(), extra.end());
    out.insert(out.end(), r.pub.id.begin(), r.pub.id.end());
    out.insert(out.end(), r.pub.name.begin(), r.pub.name.end());
    out.resize((out.size() + 7) & ~size_t(7), 0);
  }
  return out;
}
}  // namespace

void Qcow2Image::State::update_snapshot_table(std::vector<SnapshotRec> nsn) {
  std::vector<uint8_t> raw = serialize_snapshots(nsn);
  uint64_t new_off = 0, new_clusters = 0;
  if (!nsn.empty()) {
    new_clusters = div_round_up(raw.size(), cs);
    new_off = alloc_clusters(new_clusters);
    raw.resize(new_clusters * cs, 0);
    file->pwrite_full(new_off, raw);
    write_refcount_blocks();
    file->sync();
  }
  uint64_t old_off = snapshots_offset;
  uint64_t old_clusters = snaps.empty() ? 0 : div_round_up(serialize_snapshots(snaps).size(), cs);
  snapshots_offset = new_off;
  nb_snapshots = static_cast<uint32_t>(nsn.size());
  snaps = std::move(nsn);
  write_header();
  file->sync();
  for (uint64_t k = 0; k < old_clusters; k++) add_rc(old_off / cs + k, -1);
  write_refcount_blocks();
}

// -------------------------------------------------------------------------------------------------
// Check / rebuild

void Qcow2Image::State::compute_references(std::vector<uint64_t>& ref, CheckResult& res,
                                           bool count_refcount_structs) {
  uint64_t flen = file->length();
  uint64_t nclusters = div_round_up(flen, cs);
  if (nclusters > kMaxRefcountClusters) fail("qcow2 image {} is too large to check", filename);
  ref.assign(nclusters, 0);
  auto inc = [&](uint64_t off, uint64_t len) {
    if (len == 0) return;
    for (uint64_t c = off / cs; c <= (off + len - 1) / cs; c++) {
      if (c >= ref.size()) {
        res.corruptions++;
        res.messages.push_back(fmt::format(
            "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
            "offset {:#x} size {:#x}", off, len));
        return;
      }
      ref[c]++;
    }
  };
  inc(0, cs);
  inc(l1_offset, uint64_t(l1_size) * 8);
  if (crypt) inc(crypt->header_offset(), crypt->header_length());
  uint64_t errs = 0;
  walk_tree(l1, [&](uint64_t host, int kind, uint64_t) {
    if (kind == 3) return;
    inc(host, cs);
  }, &errs, &res);
  if (!snaps.empty()) inc(snapshots_offset, serialize_snapshots(snaps).size());
  for (const auto& sn : snaps) {
    inc(sn.pub.l1_table_offset, uint64_t(sn.pub.l1_size) * 8);
    std::vector<uint64_t> sl1;
    try {
      sl1 = read_l1(sn.pub.l1_table_offset, sn.pub.l1_size);
    } catch (const Error& e) {
      errs++;
      res.messages.push_back(fmt::format("ERROR snapshot {} ({}): {}", sn.pub.id, sn.pub.name, e.what()));
      continue;
    }
    walk_tree(sl1, [&](uint64_t host, int kind, uint64_t) {
      if (kind == 3) return;
      inc(host, cs);
    }, &errs, &res);
  }
  if (count_refcount_structs) {
    inc(rt_offset, uint64_t(rt_clusters) * cs);
    for (size_t i = 0; i < rt.size(); i++) {
      if (!rt[i]) continue;
      if (rt[i] % cs) {
        errs++;
        res.messages.push_back(fmt::format(
            "ERROR refcount block {} is not cluster aligned; refcount table entry corrupted", i));
        continue;
      }
      if (rt[i] / cs >= ref.size()) {
        errs++;
        res.messages.push_back(fmt::format("ERROR refcount block {} is outside image", i));
        continue;
      }
      inc(rt[i], cs);
    }
  }
  res.corruptions += errs;
}

void Qcow2Image::State::rebuild_refcounts(const std::vector<uint64_t>& ref, uint32_t new_order) {
  uint64_t n = cs * 8 / (1u << new_order);
  uint64_t maxv = new_order == 6 ? UINT64_MAX : (1ULL << (1u << new_order)) - 1;
  for (uint64_t v : ref)
    if (v > maxv) fail("Cannot use {}-bit refcounts: a cluster has {} references", 1u << new_order, v);
  uint64_t start = ref.size();
  while (start > 1 && ref[start - 1] == 0) start--;
  start = std::max<uint64_t>(start, 1);
  uint64_t T = 1, R = 1;
  for (int i = 0; i < 100; i++) {
    uint64_t total = start + T + R;
    uint64_t nr = div_round_up(total, n);
    uint64_t nt = div_round_up(nr * 8, cs);
    if (nr == R && nt == T) break;
    R = nr;
    T = nt;
  }
  std::vector<uint64_t> nrc(start + T + R, 0);
  std::copy_n(ref.begin(), std::min<uint64_t>(ref.size(), start), nrc.begin());
  for (uint64_t k = start; k < start + T + R; k++) nrc[k] = 1;
  std::vector<uint64_t> nrt(T * cs / 8, 0);
  std::vector<uint8_t> blk(cs);
  for (uint64_t bi = 0; bi < R; bi++) {
    std::fill(blk.begin(), blk.end(), 0);
    uint64_t first = bi * n, end = std::min<uint64_t>(first + n, nrc.size());
    for (uint64_t c = first; c < end; c++) rb_set(blk.data(), c - first, new_order, nrc[c]);
    nrt[bi] = (start + T + bi) * cs;
    file->pwrite_full(nrt[bi], blk);
  }
  std::vector<uint8_t> raw(T * cs, 0);
  for (size_t i = 0; i < nrt.size(); i++) put64(&raw[i * 8], nrt[i]);
  file->pwrite_full(start * cs, raw);
  file->sync();
  rt_offset = start * cs;
  rt_clusters = static_cast<uint32_t>(T);
  refcount_order = new_order;
  write_header();
  file->sync();
  // Anything past the new structures is unreferenced: trim it.
  if (file->length() > (start + T + R) * cs) file->truncate((start + T + R) * cs);
  rt = std::move(nrt);
  rc = std::move(nrc);
  dirty_rb.clear();
  rc_loaded = true;
  free_hint = 1;
  compressed_tail = 0;
}

// -------------------------------------------------------------------------------------------------
// L1 growth

void Qcow2Image::State::grow_l1(uint64_t need) {
  if (need <= l1.size()) return;
  if (need * 8 > kMaxL1Bytes) fail("Image size too big: the L1 table would exceed {} bytes", kMaxL1Bytes);
  flush_metadata();
  std::vector<uint64_t> nl1 = l1;
  nl1.resize(need, 0);
  uint64_t clusters = div_round_up(need * 8, cs);
  uint64_t base = alloc_clusters(clusters);
  std::vector<uint8_t> raw(clusters * cs, 0);
  for (size_t i = 0; i < nl1.size(); i++) put64(&raw[i * 8], nl1[i]);
  write_refcount_blocks();
  file->sync();
  file->pwrite_full(base, raw);
  file->sync();
  uint64_t old_off = l1_offset, old_clusters = div_round_up(uint64_t(l1_size) * 8, cs);
  l1_offset = base;
  l1_size = static_cast<uint32_t>(need);
  l1 = std::move(nl1);
  write_header();
  file->sync();
  if (old_off)
    for (uint64_t k = 0; k < old_clusters; k++) add_rc(old_off / cs + k, -1);
  write_refcount_blocks();
}

// -------------------------------------------------------------------------------------------------
// Open

namespace {

std::unique_ptr<BlockImage> open_chain(const std::string& path, const OpenOptions& opts, int depth,
                                       std::set<std::pair<dev_t, ino_t>>& seen);

}  // namespace

Qcow2Image::Qcow2Image() : s_(std::make_unique<State>()) {}

Qcow2Image::~Qcow2Image() {
  if (!s_ || s_->ro || !s_->file) return;
  try {
    std::lock_guard g(s_->mu);
    s_->flush_metadata();
    s_->file->sync();
    if (s_->set_dirty_bit && !(s_->incompat & kIncompatCorrupt)) {
      s_->incompat &= ~kIncompatDirty;
      s_->write_header();
      s_->file->sync();
    }
  } catch (const std::exception&) {
  }
}

static std::unique_ptr<Qcow2Image> open_qcow2(const std::string& path, const OpenOptions& opts, int depth,
                                              std::set<std::pair<dev_t, ino_t>>& seen);

std::unique_ptr<Qcow2Image> Qcow2Image::open(const std::string& path, const OpenOptions& opts) {
  std::set<std::pair<dev_t, ino_t>> seen;
  return open_qcow2(path, opts, 0, seen);
}

struct Qcow2Opener {
  static std::unique_ptr<Qcow2Image> run(const std::string& path, const OpenOptions& opts, int depth,
                                         std::set<std::pair<dev_t, ino_t>>& seen);
};

static std::unique_ptr<Qcow2Image> open_qcow2(const std::string& path, const OpenOptions& opts, int depth,
                                              std::set<std::pair<dev_t, ino_t>>& seen) {
  return Qcow2Opener::run(path, opts, depth, seen);
}

std::unique_ptr<Qcow2Image> Qcow2Opener::run(const std::string& path, const OpenOptions& opts, int depth,
                                             std::set<std::pair<dev_t, ino_t>>& seen) {
  if (opts.force_share && !opts.read_only) fail("force-share=on can only be used with read-only images");
  auto img = std::unique_ptr<Qcow2Image>(new Qcow2Image());
  Qcow2Image::State& s = *img->s_;
  s.filename = path;
  s.opts = opts;
  s.ro = opts.read_only;
  s.file = std::make_unique<HostFile>(path, opts.read_only, opts.direct);
  {
    struct stat st {};
    if (::fstat(s.file->fd(), &st) == 0 && !seen.insert({st.st_dev, st.st_ino}).second)
      fail("Could not open '{}': backing chain contains a loop", path);
  }
  if (!opts.force_share && opts.take_locks) s.file->lock_for(!opts.read_only);
  const uint64_t flen = s.file->length();
  uint8_t h[112] = {};
  s.file->pread_full(0, h);
  if (be32(h) != kMagic) fail("Image is not in qcow2 format");
  s.version = be32(h + 4);
  if (s.version < 2 || s.version > 3) fail("Unsupported qcow2 version {}", s.version);
  s.cluster_bits = be32(h + 20);
  if (s.cluster_bits < 9 || s.cluster_bits > 21)
    fail("Unsupported cluster size: 2^{}", s.cluster_bits);
  s.cs = 1ULL << s.cluster_bits;
  uint64_t backing_off = be64(h + 8);
  uint32_t backing_len = be32(h + 16);
  s.size = be64(h + 24);
  s.crypt_method = be32(h + 32);
  s.l1_size = be32(h + 36);
  s.l1_offset = be64(h + 40);
  s.rt_offset = be64(h + 48);
  s.rt_clusters = be32(h + 56);
  s.nb_snapshots = be32(h + 60);
  s.snapshots_offset = be64(h + 64);
  if (s.version == 2) {
    s.incompat = s.compat = s.autoclear = 0;
    s.refcount_order = 4;
    s.header_length = 72;
  } else {
    s.incompat = be64(h + 72);
    s.compat = be64(h + 80);
    s.autoclear = be64(h + 88);
    s.refcount_order = be32(h + 96);
    s.header_length = be32(h + 100);
    if (s.header_length < 104) fail("qcow2 header too short");
    if (s.header_length > s.cs) fail("qcow2 header exceeds cluster size");
    if (s.header_length > 104) s.compression_type = h[104];
  }
  if (s.refcount_order > 6) fail("Reference count entry width too large; may not exceed 64 bits");
  std::vector<uint8_t> hc(s.cs);
  s.file->pread_full(0, hc);
  // Header extensions.
  std::map<uint8_t, std::string> incompat_names;
  {
    uint64_t pos = s.version == 2 ? 72 : s.header_length;
    uint64_t ext_end = (backing_off && backing_off < s.cs && backing_off > pos) ? backing_off : s.cs;
    while (pos + 8 <= ext_end) {
      uint32_t type = be32(&hc[pos]), len = be32(&hc[pos + 4]);
      pos += 8;
      if (type == kExtEnd) break;
      if (len > ext_end - pos) fail("Invalid qcow2 header extension: length {} exceeds the header cluster", len);
      std::vector<uint8_t> data(hc.begin() + static_cast<ptrdiff_t>(pos),
                                hc.begin() + static_cast<ptrdiff_t>(pos + len));
      pos += (uint64_t(len) + 7) & ~uint64_t(7);
      if (type == kExtBackingFormat) {
        s.backing_fmt.assign(data.begin(), data.end());
        auto nul = s.backing_fmt.find('\0');
        if (nul != std::string::npos) s.backing_fmt.resize(nul);
        continue;
      }
      if (type == kExtFeatureTable) {
        for (size_t i = 0; i + 48 <= data.size(); i += 48) {
          if (data[i] != 0) continue;
          std::string name(reinterpret_cast<const char*>(&data[i + 2]), 46);
          name.resize(strnlen(name.c_str(), 46));
          incompat_names[data[i + 1]] = name;
        }
      }
      s.exts.push_back({type, std::move(data)});
    }
  }
  if (s.crypt_method) {
    const std::vector<uint8_t>* cext = nullptr;
    for (const auto& e : s.exts)
      if (e.type == qcow2::kExtCryptoHeader) cext = &e.data;
    HostFile* hf = s.file.get();
    s.crypt = qcow2::Crypto::open(s.crypt_method, cext, hf->length(),
                                  [hf](uint64_t off, std::span<uint8_t> b) { hf->pread_full(off, b); }, opts);
  }
  const uint64_t known_incompat =
      kIncompatDirty | kIncompatCorrupt | kIncompatCompression | kIncompatExtendedL2;
  if (s.incompat & kIncompatDataFile) fail("Could not open '{}': external data files are not supported", path);
  if (uint64_t unknown = s.incompat & ~known_incompat) {
    std::string names;
    for (int b = 0; b < 64; b++) {
      if (!((unknown >> b) & 1)) continue;
      if (!names.empty()) names += ", ";
      auto it = incompat_names.find(static_cast<uint8_t>(b));
      names += it != incompat_names.end() ? it->second : fmt::format("Unknown incompatible feature: {:x}", 1ULL << b);
    }
    fail("Could not open '{}': Unsupported qcow2 feature(s): {}", path, names);
  }
  if (s.incompat & kIncompatCompression) {
    if (s.header_length <= 104) fail("Could not open '{}': compression type feature set but no type field", path);
    if (s.compression_type > 1) fail("Could not open '{}': unknown compression type {}", path, s.compression_type);
  } else if (s.compression_type != 0) {
    fail("Could not open '{}': compression type {} set without the compression type feature bit", path,
         s.compression_type);
  }
  if (s.extended_l2() && s.cluster_bits < 14)
    fail("Could not open '{}': extended L2 entries need clusters of at least 16 KiB", path);
  // Backing file name.
  if (backing_off) {
    if (backing_len > kMaxBackingName || backing_off > s.cs || backing_len > s.cs - backing_off)
      fail("Could not open '{}': backing file name too long or out of the header cluster", path);
    s.backing_name.assign(reinterpret_cast<const char*>(&hc[backing_off]), backing_len);
  }
  // Size and tables.
  if (s.size > (1ULL << 62)) fail("Could not open '{}': image size too large", path);
  uint64_t need_l1 = div_round_up(s.size, s.l2_span());
  if (uint64_t(s.l1_size) * 8 > kMaxL1Bytes) fail("Could not open '{}': Active L1 table too large", path);
  if (s.l1_size < need_l1) fail("Could not open '{}': L1 table is too small", path);
  if (s.l1_size && (s.l1_offset % s.cs || s.l1_offset == 0))
    fail("Could not open '{}': Invalid L1 table offset", path);
  if (s.l1_size && s.l1_offset + uint64_t(s.l1_size) * 8 > flen)
    fail("Could not open '{}': L1 table lies beyond the end of the file", path);
  if (uint64_t(s.rt_clusters) * s.cs > kMaxRefTableBytes)
    fail("Could not open '{}': Reference count table too large", path);
  if (s.rt_offset % s.cs || s.rt_offset == 0 || s.rt_clusters == 0)
    fail("Could not open '{}': Invalid reference count table offset", path);
  if (s.rt_offset + uint64_t(s.rt_clusters) * s.cs > flen + s.cs * uint64_t(s.rt_clusters))
    fail("Could not open '{}': Reference count table lies beyond the end of the file", path);
  if (s.nb_snapshots > kMaxSnapshots) fail("Could not open '{}': Too many snapshots", path);
  if (s.nb_snapshots && (s.snapshots_offset % s.cs || s.snapshots_offset == 0))
    fail("Could not open '{}': Invalid snapshot table offset", path);
  s.l1 = s.read_l1(s.l1_offset, s.l1_size);
  s.l2_cache_max = std::max<size_t>(16, (32ULL << 20) / s.cs);
  // Snapshot table.
  if (s.nb_snapshots) {
    uint64_t pos = s.snapshots_offset;
    for (uint32_t i = 0; i < s.nb_snapshots; i++) {
      if (pos - s.snapshots_offset > (64ULL << 20) || pos + 40 > flen)
        fail("Could not open '{}': snapshot table out of range", path);
      uint8_t sh[40];
      s.file->pread_full(pos, sh);
      SnapshotRec r;
      r.pub.l1_table_offset = be64(sh);
      r.pub.l1_size = be32(sh + 8);
      uint16_t id_len = be16(sh + 12), name_len = be16(sh + 14);
      r.pub.date_sec = be32(sh + 16);
      r.pub.date_nsec = be32(sh + 20);
      r.pub.vm_clock_nsec = be64(sh + 24);
      r.pub.vm_state_size = be32(sh + 32);
      uint32_t extra = be32(sh + 36);
      if (extra > kMaxSnapshotExtra) fail("Could not open '{}': snapshot extra data too large", path);
      if (uint64_t(r.pub.l1_size) * 8 > kMaxL1Bytes) fail("Could not open '{}': Snapshot L1 table too large", path);
      if (r.pub.l1_size && r.pub.l1_table_offset % s.cs)
        fail("Could not open '{}': Snapshot L1 table offset invalid", path);
      pos += 40;
      uint64_t rest = uint64_t(extra) + id_len + name_len;
      if (pos + rest > flen) fail("Could not open '{}': snapshot table out of range", path);
      std::vector<uint8_t> buf(rest);
      s.file->pread_full(pos, buf);
      r.extra.assign(buf.begin(), buf.begin() + extra);
      r.pub.id.assign(buf.begin() + extra, buf.begin() + extra + id_len);
      r.pub.name.assign(buf.begin() + extra + id_len, buf.end());
      r.pub.disk_size = s.size;
      if (extra >= 8) r.pub.vm_state_size = be64(&r.extra[0]);
      if (extra >= 16) r.pub.disk_size = be64(&r.extra[8]);
      if (extra >= 24 && be64(&r.extra[16]) != UINT64_MAX) r.pub.icount = be64(&r.extra[16]);
      pos += rest;
      pos = (pos + 7) & ~uint64_t(7);
      s.snaps.push_back(std::move(r));
    }
  }
  if (!s.ro && (s.incompat & kIncompatCorrupt) && !opts.for_repair)
    fail("Could not open '{}': qcow2: Image is corrupt; cannot be opened read/write", path);
  // Backing chain.
  if (!s.backing_name.empty() && opts.open_backing) {
    if (depth + 1 > kMaxBackingDepth) fail("Could not open '{}': backing chain too deep", path);
    std::string bpath = resolve_backing_path(path, s.backing_name);
    OpenOptions bo = opts;
    bo.read_only = true;
    bo.format = s.backing_fmt;
    bo.for_repair = false;
    try {
      s.backing = open_chain(bpath, bo, depth + 1, seen);
    } catch (const Error& e) {
      throw Error(fmt::format("Could not open backing file: {}", e.what()), e.sys_errno());
    }
  }
  // A dirty image (lazy refcounts) gets its refcounts rebuilt on read-write open.
  if (!s.ro && (s.incompat & kIncompatDirty) && opts.repair_dirty) {
    img->check(RepairMode::All);
    s.incompat &= ~kIncompatDirty;
    s.write_header();
    s.file->sync();
  }
  return img;
}

namespace {
std::unique_ptr<BlockImage> open_chain(const std::string& path, const OpenOptions& opts, int depth,
                                       std::set<std::pair<dev_t, ino_t>>& seen) {
  std::string f = opts.format.empty() ? probe_format(path) : opts.format;
  if (f == "qcow2") return Qcow2Opener::run(path, opts, depth, seen);
  if (f == "raw") return RawImage::open(path, opts);
  fail("Unknown driver '{}'", f);
}
}  // namespace

// -------------------------------------------------------------------------------------------------
// Public API

std::string Qcow2Image::format() const { return "qcow2"; }
const std::string& Qcow2Image::filename() const { return s_->filename; }
uint64_t Qcow2Image::size() const { return s_->size; }
bool Qcow2Image::read_only() const { return s_->ro; }
uint32_t Qcow2Image::cluster_size() const { return static_cast<uint32_t>(s_->cs); }
bool Qcow2Image::is_dirty() const { return s_->incompat & kIncompatDirty; }
bool Qcow2Image::is_corrupt() const { return s_->incompat & kIncompatCorrupt; }
BlockImage* Qcow2Image::backing() { return s_->backing.get(); }
uint64_t Qcow2Image::file_allocated_bytes() { return s_->file->allocated_bytes(); }

namespace {
void check_range(const std::string& name, const char* what, uint64_t off, uint64_t len, uint64_t size) {
  if (off > size || len > size - off)
    throw Error(fmt::format("{} {}: offset {} length {} is beyond the end of the image ({} bytes)", what, name,
                            off, len, size), EINVAL);
}
}  // namespace

void Qcow2Image::read(uint64_t offset, std::span<uint8_t> buf) {
  std::vector<std::pair<uint64_t, std::span<uint8_t>>> io;
  {
    std::lock_guard g(s_->mu);
    check_range(s_->filename, "read", offset, buf.size(), s_->size);
    s_->read_locked(offset, buf, &io);
  }
  for (auto& [host, dst] : io) s_->file->pread_full(host, dst);
}

void Qcow2Image::write(uint64_t offset, std::span<const uint8_t> buf) {
  std::lock_guard g(s_->mu);
  check_range(s_->filename, "write", offset, buf.size(), s_->size);
  if (buf.empty()) return;
  s_->write_locked(offset, buf);
}

void Qcow2Image::write_zeroes(uint64_t offset, uint64_t length, bool) {
  std::lock_guard g(s_->mu);
  check_range(s_->filename, "write zeroes", offset, length, s_->size);
  if (length == 0) return;
  s_->zero_clusters(offset, length, false);
}

void Qcow2Image::discard(uint64_t offset, uint64_t length) {
  std::lock_guard g(s_->mu);
  check_range(s_->filename, "discard", offset, length, s_->size);
  if (length == 0) return;
  s_->zero_clusters(offset, length, true);
}

void Qcow2Image::flush() {
  std::lock_guard g(s_->mu);
  if (s_->ro) return;
  s_->flush_metadata();
  if (s_->data_written) {
    s_->file->sync();
    s_->data_written = false;
  }
}

Extent Qcow2Image::block_status(uint64_t offset, uint64_t max_length) {
  std::unique_lock g(s_->mu);
  State& s = *s_;
  if (offset >= s.size) throw Error(fmt::format("block status {}: offset {} is beyond the end", s.filename, offset), EINVAL);
  uint64_t limit = std::min(max_length, s.size - offset);
  const bool ext = s.extended_l2();
  const uint64_t unit = ext ? s.cs / 32 : s.cs;
  // kind: 0 unallocated, 1 zero, 2 data, 3 compressed
  auto classify = [&](uint64_t g, uint64_t& host, uint64_t& run) -> int {
    uint64_t ci = g / s.cs, l1i = ci / s.l2_entries(), l2i = ci % s.l2_entries();
    uint64_t l1e = l1i < s.l1.size() ? s.l1[l1i] & kL1OffsetMask : 0;
    host = 0;
    if (!l1e) {
      run = (l1i + 1) * s.l2_span() - g;
      return 0;
    }
    auto& t = s.get_l2(l1e);
    uint64_t e = t.w[ext ? l2i * 2 : l2i];
    run = unit - g % unit;
    if (e & kCompressed) {
      run = s.cs - g % s.cs;
      return 3;
    }
    uint64_t h = e & kL2OffsetMask;
    if (ext) {
      uint64_t bm = t.w[l2i * 2 + 1];
      unsigned sc = static_cast<unsigned>((g % s.cs) / unit);
      if ((bm >> (32 + sc)) & 1) return 1;
      if ((bm >> sc) & 1) {
        host = h + sc * unit + g % unit;
        return 2;
      }
      return 0;
    }
    if (s.version >= 3 && (e & kZero)) {
      host = h ? h + g % s.cs : 0;
      return 1;
    }
    if (h) {
      host = h + g % s.cs;
      return 2;
    }
    return 0;
  };
  uint64_t host0, run;
  int kind = classify(offset, host0, run);
  uint64_t len = std::min(run, limit);
  while (len < limit) {
    uint64_t h, r;
    int k = classify(offset + len, h, r);
    if (k != kind) break;
    if (kind == 2 && h != host0 + len) break;
    if (kind == 1 && (host0 != 0) != (h != 0)) break;
    if (kind == 1 && host0 && h != host0 + len) break;
    len = std::min(len + r, limit);
  }
  Extent e;
  e.offset = offset;
  e.length = len;
  e.allocated = kind != 0;
  if (kind == 0) {
    if (s.backing) {
      BlockImage* b = s.backing.get();
      uint64_t bsz = b->size();
      g.unlock();
      if (offset >= bsz) {
        e.depth = 1;
        e.zero = true;
        return e;
      }
      Extent be = b->block_status(offset, std::min(len, bsz - offset));
      be.depth += 1;
      return be;
    }
    e.zero = true;
    return e;
  }
  if (kind == 1) {
    e.zero = true;
    if (host0) e.host_offset = host0;
    return e;
  }
  e.data = true;
  if (kind == 2) e.host_offset = host0;
  else e.compressed = true;
  return e;
}

void Qcow2Image::resize(uint64_t new_size, bool allow_shrink) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  if (s.ro) throw Error(fmt::format("resize {}: image is read-only", s.filename), EROFS);
  if (new_size % 512) fail("The new size must be a multiple of 512");
  if (new_size == s.size) return;
  s.prepare_write();
  if (new_size < s.size) {
    if (!allow_shrink) fail("Use the --shrink option to perform a shrink operation.");
    if (!s.snaps.empty()) fail("Can't shrink an image with internal snapshots");
    // Zero the tail of the last remaining cluster, then drop every cluster past the end.
    uint64_t cend = div_round_up(new_size, s.cs) * s.cs;
    if (cend > new_size && new_size < s.size) {
      std::vector<uint8_t> z(std::min(cend, s.size) - new_size, 0);
      s.write_locked(new_size, z);
    }
    for (uint64_t ci = cend / s.cs; ci < div_round_up(s.size, s.cs);) {
      uint64_t l1i = ci / s.l2_entries(), l2i = ci % s.l2_entries();
      uint64_t span_end = (l1i + 1) * s.l2_entries();
      if (s.l1[l1i] & kL1OffsetMask) {
        auto* t = &s.writable_l2(l1i);
        for (uint64_t k = l2i; k < s.l2_entries(); k++) {
          uint64_t e = s.l2_word(*t, k);
          s.free_entry(e);
          if (e) s.set_l2_word(*t, k, 0);
          if (s.extended_l2() && t->w[k * 2 + 1]) {
            t->w[k * 2 + 1] = 0;
            t->dirty = true;
          }
        }
        if (l2i == 0) {
          s.free_clusters_later(s.l1[l1i] & kL1OffsetMask, s.cs);
          s.l1[l1i] = 0;
          s.dirty_l1_sectors.insert(l1i * 8 / 512);
        }
      }
      ci = span_end;
    }
    s.flush_metadata();
  } else {
    s.grow_l1(div_round_up(new_size, s.l2_span()));
  }
  s.size = new_size;
  s.write_header();
  s.file->sync();
}

Qcow2Info Qcow2Image::info() const {
  std::lock_guard g(s_->mu);
  const State& s = *s_;
  Qcow2Info i;
  i.version = s.version;
  i.compat = s.version >= 3 ? "1.1" : "0.10";
  i.compression_type = s.compression_type ? "zstd" : "zlib";
  i.lazy_refcounts = s.compat & kCompatLazyRefcounts;
  i.refcount_bits = s.refcount_bits();
  i.corrupt = s.incompat & kIncompatCorrupt;
  i.dirty = s.incompat & kIncompatDirty;
  i.extended_l2 = s.extended_l2();
  for (const auto& e : s.exts)
    if (e.type == kExtBitmaps) i.has_bitmaps_extension = true;
  i.cluster_size = static_cast<uint32_t>(s.cs);
  i.backing_file = s.backing_name;
  i.backing_format = s.backing_fmt;
  i.l1_size = s.l1_size;
  i.l1_table_offset = s.l1_offset;
  i.refcount_table_offset = s.rt_offset;
  i.refcount_table_clusters = s.rt_clusters;
  i.incompatible_features = s.incompat;
  i.compatible_features = s.compat;
  i.autoclear_features = s.autoclear;
  i.encrypt = s.crypt_method != 0;
  if (s.crypt) i.encrypt_info = s.crypt->info();
  return i;
}

std::vector<Qcow2Snapshot> Qcow2Image::snapshots() const {
  std::lock_guard g(s_->mu);
  std::vector<Qcow2Snapshot> v;
  for (const auto& r : s_->snaps) v.push_back(r.pub);
  return v;
}

namespace {
int find_snapshot(const std::vector<SnapshotRec>& sn, const std::string& key) {
  for (size_t i = 0; i < sn.size(); i++)
    if (sn[i].pub.name == key) return static_cast<int>(i);
  for (size_t i = 0; i < sn.size(); i++)
    if (sn[i].pub.id == key) return static_cast<int>(i);
  return -1;
}
}  // namespace

void Qcow2Image::snapshot_create(const std::string& name, uint64_t vm_state_size) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  if (name.size() > 65535) fail("Snapshot name too long");
  for (const auto& r : s.snaps)
    if (r.pub.name == name) fail("Snapshot with name '{}' already exists", name);
  if (s.snaps.size() >= kMaxSnapshots) fail("Too many snapshots");
  s.flush_metadata();
  s.file->sync();
  // 1. One more reference to every cluster of the active tree.
  s.walk_tree(s.l1, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, +1);
  }, nullptr, nullptr);
  s.write_refcount_blocks();
  s.file->sync();
  // 2. Nothing in the active tree is exclusively owned any more.
  s.fix_copied_flags(nullptr, true);
  s.flush_metadata();
  s.file->sync();
  // 3. The snapshot's copy of the L1 table.
  uint64_t l1c = div_round_up(uint64_t(s.l1_size) * 8, s.cs);
  uint64_t l1off = 0;
  if (l1c) {
    l1off = s.alloc_clusters(l1c);
    std::vector<uint8_t> raw(l1c * s.cs, 0);
    for (size_t i = 0; i < s.l1.size(); i++) put64(&raw[i * 8], s.l1[i] & ~kCopied);
    s.file->pwrite_full(l1off, raw);
    s.write_refcount_blocks();
    s.file->sync();
  }
  // 4. The new snapshot table, then the header.
  SnapshotRec r;
  uint64_t maxid = 0;
  for (const auto& x : s.snaps) maxid = std::max<uint64_t>(maxid, std::strtoull(x.pub.id.c_str(), nullptr, 10));
  r.pub.id = std::to_string(maxid + 1);
  r.pub.name = name;
  auto now = std::chrono::system_clock::now().time_since_epoch();
  r.pub.date_sec = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(now).count());
  r.pub.date_nsec = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() % 1000000000);
  r.pub.vm_state_size = vm_state_size;
  r.pub.icount = 0;  // what qemu-img snapshot -c records
  r.pub.disk_size = s.size;
  r.pub.l1_table_offset = l1off;
  r.pub.l1_size = s.l1_size;
  if (s.version >= 3) r.extra.resize(24, 0);
  auto nsn = s.snaps;
  nsn.push_back(r);
  s.update_snapshot_table(std::move(nsn));
  s.file->sync();
}

void Qcow2Image::snapshot_apply(const std::string& key) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  int idx = find_snapshot(s.snaps, key);
  if (idx < 0) fail("Could not find snapshot '{}'", key);
  const Qcow2Snapshot sn = s.snaps[idx].pub;
  s.flush_metadata();
  s.file->sync();
  std::vector<uint64_t> nl1 = s.read_l1(sn.l1_table_offset, sn.l1_size);
  uint64_t new_size = sn.disk_size;
  nl1.resize(std::max<uint64_t>(nl1.size(), div_round_up(new_size, s.l2_span())), 0);
  if (nl1.size() * 8 > kMaxL1Bytes) fail("snapshot L1 table too large");
  // 1. References for the snapshot's tree.
  s.walk_tree(nl1, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, +1);
  }, nullptr, nullptr);
  // 2. The new active L1 in fresh clusters.
  uint64_t l1c = div_round_up(nl1.size() * 8, s.cs);
  uint64_t l1off = l1c ? s.alloc_clusters(l1c) : 0;
  for (auto& e : nl1) e &= ~kCopied;
  std::vector<uint8_t> raw(l1c * s.cs, 0);
  for (size_t i = 0; i < nl1.size(); i++) put64(&raw[i * 8], nl1[i]);
  if (l1c) s.file->pwrite_full(l1off, raw);
  s.write_refcount_blocks();
  s.file->sync();
  std::vector<uint64_t> old = std::move(s.l1);
  uint64_t old_off = s.l1_offset, old_c = div_round_up(uint64_t(s.l1_size) * 8, s.cs);
  s.l1 = std::move(nl1);
  s.l1_offset = l1off;
  s.l1_size = static_cast<uint32_t>(s.l1.size());
  s.size = new_size;
  s.write_header();
  s.file->sync();
  // 3. Drop the old active tree.
  s.walk_tree(old, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, -1);
  }, nullptr, nullptr);
  for (uint64_t k = 0; k < old_c; k++) s.add_rc(old_off / s.cs + k, -1);
  s.write_refcount_blocks();
  s.file->sync();
  s.fix_copied_flags(nullptr, true);
  s.flush_metadata();
  s.file->sync();
}

void Qcow2Image::snapshot_delete(const std::string& key) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  int idx = find_snapshot(s.snaps, key);
  if (idx < 0) fail("Could not find snapshot '{}'", key);
  const Qcow2Snapshot sn = s.snaps[idx].pub;
  s.flush_metadata();
  s.file->sync();
  std::vector<uint64_t> sl1 = s.read_l1(sn.l1_table_offset, sn.l1_size);
  auto nsn = s.snaps;
  nsn.erase(nsn.begin() + idx);
  s.update_snapshot_table(std::move(nsn));
  s.file->sync();
  s.walk_tree(sl1, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, -1);
  }, nullptr, nullptr);
  uint64_t c = div_round_up(uint64_t(sn.l1_size) * 8, s.cs);
  for (uint64_t k = 0; k < c; k++) s.add_rc(sn.l1_table_offset / s.cs + k, -1);
  s.write_refcount_blocks();
  s.file->sync();
  s.fix_copied_flags(nullptr, true);
  s.flush_metadata();
  s.file->sync();
}

void Qcow2Image::write_compressed(uint64_t offset, std::span<const uint8_t> data) {
  State& s = *s_;
  // Compression runs before taking the image lock, so several threads compress in parallel.
  // Up to one cluster of data; shorter data is zero-padded, bytes past the end of the image are ignored.
  if (s.crypt) throw Error(fmt::format("write_compressed {}: compression is not supported on encrypted images", s.filename), ENOTSUP);
  if (offset % s.cs) fail("write_compressed {}: offset {} is not cluster aligned", s.filename, offset);
  if (offset >= s.size || data.empty() || data.size() > s.cs)
    fail("write_compressed {}: need 1..{} bytes inside the image at {}", s.filename, s.cs, offset);
  data = data.first(std::min<uint64_t>(data.size(), s.size - offset));
  std::vector<uint8_t> full(s.cs, 0);
  std::copy(data.begin(), data.end(), full.begin());
  std::vector<uint8_t> comp = s.compress(full);
  std::lock_guard g(s_->mu);
  uint64_t len = std::min<uint64_t>(s.cs, s.size - offset);
  s.prepare_write();
  if (comp.empty()) {  // incompressible: a normal cluster
    s.write_locked(offset, std::span<const uint8_t>(full.data(), len));
    return;
  }
  uint64_t ci = offset / s.cs, l1i = ci / s.l2_entries(), l2i = ci % s.l2_entries();
  auto* t = &s.writable_l2(l1i);
  uint64_t t_off = s.l1[l1i] & kL1OffsetMask;
  // Byte allocation: continue in the current compressed cluster when the data fits or the next
  // clusters can be allocated contiguously.
  uint64_t start;
  uint64_t tail = s.compressed_tail;
  // A host cluster whose refcount cannot grow (narrow refcount widths) cannot take more compressed data.
  if (tail && tail % s.cs && s.get_rc(tail / s.cs) >= s.refcount_max()) tail = 0;
  uint64_t room = tail ? s.cs - tail % s.cs : 0;
  if (tail && tail % s.cs == 0) room = 0;
  if (tail && room >= comp.size()) {
    start = tail;
    s.add_rc(tail / s.cs, +1);
  } else {
    uint64_t need = div_round_up(comp.size() - (tail ? room : 0), s.cs);
    uint64_t base = s.alloc_clusters(need);
    if (tail && room && base == (tail / s.cs + 1) * s.cs) {
      start = tail;
      s.add_rc(tail / s.cs, +1);
    } else {
      // Not contiguous: start at the new clusters (allocating one more if the data needs it).
      if (need * s.cs < comp.size()) {
        for (uint64_t k = 0; k < need; k++) s.add_rc(base / s.cs + k, -1);
        base = s.alloc_clusters(div_round_up(comp.size(), s.cs));
      }
      start = base;
    }
  }
  s.check_no_overlap(start, comp.size(), "compressed data");
  s.file->pwrite_full(start, comp);
  s.data_written = true;
  s.compressed_tail = start + comp.size();
  uint64_t nsec = (start + comp.size() - 1) / 512 - start / 512;
  unsigned x = 62 - (s.cluster_bits - 8);
  uint64_t entry = kCompressed | (nsec << x) | start;
  t = &s.get_l2(t_off);
  s.free_entry(s.l2_word(*t, l2i));
  s.set_l2_word(*t, l2i, entry);
  if (s.extended_l2()) t->w[l2i * 2 + 1] = 0;  // compressed clusters carry no subcluster bitmap
}

CheckResult Qcow2Image::check(RepairMode repair) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  if (repair != RepairMode::None && s.ro) fail("Cannot repair a read-only image");
  CheckResult res;
  if (!s.ro) {
    s.flush_metadata();
    s.file->sync();
  }
  // Fresh view of the on-disk refcounts.
  s.rc_loaded = false;
  s.load_refcounts();
  std::vector<uint64_t> ref;
  s.compute_references(ref, res, true);
  uint64_t n = std::max<uint64_t>(ref.size(), s.rc.size());
  std::vector<uint64_t> leaked, corrupted;
  for (uint64_t c = 0; c < n; c++) {
    uint64_t r = s.get_rc(c), f = c < ref.size() ? ref[c] : 0;
    if (r == f) continue;
    if (r < f) {
      corrupted.push_back(c);
      res.corruptions++;
    } else {
      leaked.push_back(c);
      res.leaks++;
    }
  }
  bool rebuild = repair == RepairMode::All && res.corruptions > 0;
  for (uint64_t c : corrupted)
    res.messages.push_back(fmt::format("{} cluster {} refcount={} reference={}", rebuild ? "Repairing" : "ERROR", c,
                                       s.get_rc(c), ref[c]));
  for (uint64_t c : leaked)
    res.messages.push_back(fmt::format("{} cluster {} refcount={} reference={}",
                                       repair != RepairMode::None ? "Repairing" : "Leaked", c, s.get_rc(c),
                                       c < ref.size() ? ref[c] : 0));
  if (rebuild) {
    std::vector<uint64_t> ref2;
    CheckResult scratch;
    s.compute_references(ref2, scratch, false);
    s.rebuild_refcounts(ref2, s.refcount_order);
    res.corruptions_fixed = res.corruptions;
    res.corruptions = 0;
    res.leaks_fixed = res.leaks;
    res.leaks = 0;
  } else if (repair != RepairMode::None && res.leaks) {
    for (uint64_t c : leaked) s.set_rc(c, c < ref.size() ? ref[c] : 0);
    s.write_refcount_blocks();
    s.file->sync();
    res.leaks_fixed = res.leaks;
    res.leaks = 0;
    s.free_hint = 1;
  }
  // COPIED flags of the active tree.
  {
    CheckResult cres;
    s.fix_copied_flags(&cres, false);
    if (cres.corruptions) {
      if (repair == RepairMode::All) {
        CheckResult fres;
        s.fix_copied_flags(&fres, true);
        s.flush_metadata();
        s.file->sync();
        res.corruptions_fixed += fres.corruptions_fixed;
        for (auto& m : cres.messages) res.messages.push_back("Repairing" + m.substr(5));
      } else {
        res.corruptions += cres.corruptions;
        for (auto& m : cres.messages) res.messages.push_back(m);
      }
    }
  }
  if (repair == RepairMode::All && res.corruptions == 0 && (s.incompat & kIncompatCorrupt)) {
    s.incompat &= ~kIncompatCorrupt;
    s.write_header();
    s.file->sync();
  }
  // Statistics of the active tree.
  res.total_clusters = div_round_up(s.size, s.cs);
  uint64_t next_contig = 0;
  s.walk_tree(s.l1, [&](uint64_t host, int kind, uint64_t) {
    if (kind == 0) {
      next_contig = 0;  // qemu counts contiguity within one L2 table
    } else if (kind == 1) {
      res.allocated_clusters++;
      if (next_contig && host != next_contig) res.fragmented_clusters++;
      next_contig = host + s.cs;
    } else if (kind == 3) {
      res.allocated_clusters++;
      res.compressed_clusters++;
      res.fragmented_clusters++;
    }
  }, nullptr, nullptr);
  // qemu: the highest cluster with a non-zero refcount on disk or a reference (leaks count).
  uint64_t hi = 0;
  for (uint64_t c = 0; c < s.rc.size(); c++)
    if (s.rc[c]) hi = c + 1;
  if (!rebuild)
    for (uint64_t c = hi; c < ref.size(); c++)
      if (ref[c]) hi = c + 1;
  res.image_end_offset = hi * s.cs;
  return res;
}

void Qcow2Image::set_backing(const std::string& backing_file, const std::string& backing_format) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  if (s.ro) throw Error(fmt::format("change backing file of {}: image is read-only", s.filename), EROFS);
  if (backing_file.size() > kMaxBackingName) fail("Backing file name too long");
  s.flush_metadata();
  s.backing_name = backing_file;
  s.backing_fmt = backing_file.empty() ? "" : backing_format;
  s.write_header();
  s.file->sync();
  s.backing.reset();
  if (!backing_file.empty() && s.opts.open_backing) {
    OpenOptions bo = s.opts;
    bo.read_only = true;
    bo.format = s.backing_fmt;
    bo.for_repair = false;
    std::set<std::pair<dev_t, ino_t>> seen;
    struct stat st {};
    if (::fstat(s.file->fd(), &st) == 0) seen.insert({st.st_dev, st.st_ino});
    s.backing = open_chain(resolve_backing_path(s.filename, backing_file), bo, 1, seen);
  }
}

void Qcow2Image::make_empty() {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  s.flush_metadata();
  s.file->sync();
  std::vector<uint64_t> old = s.l1;
  for (size_t i = 0; i < s.l1.size(); i++) {
    if (s.l1[i]) {
      s.l1[i] = 0;
      s.dirty_l1_sectors.insert(i * 8 / 512);
    }
  }
  s.write_l1_sectors();
  s.file->sync();
  s.walk_tree(old, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, -1);
  }, nullptr, nullptr);
  s.write_refcount_blocks();
  s.file->sync();
}

void Qcow2Image::amend(const AmendOptions& o) {
  {
    std::lock_guard g(s_->mu);
    State& s = *s_;
    s.prepare_write();
    s.flush_metadata();
    s.file->sync();
    uint32_t want_version = s.version;
    if (o.compat) {
      if (*o.compat == "0.10" || *o.compat == "v2") want_version = 2;
      else if (*o.compat == "1.1" || *o.compat == "v3") want_version = 3;
      else fail("Invalid compatibility level: '{}'", *o.compat);
    }
    uint32_t want_bits = o.refcount_bits.value_or(s.refcount_bits());
    if (want_bits == 0 || want_bits > 64 || (want_bits & (want_bits - 1)))
      fail("Refcount width must be a power of two and may not exceed 64 bits");
    bool want_lazy = o.lazy_refcounts.value_or(s.compat & kCompatLazyRefcounts);
    if (want_version == 2) {
      if (want_bits != 16)
        fail("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
      if (want_lazy) fail("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
      if (s.extended_l2()) fail("Cannot downgrade an image with extended L2 entries");
      if (s.compression_type) fail("Cannot downgrade an image with a non-zlib compression type");
    }
    if (want_bits != s.refcount_bits()) {
      uint32_t order = 0;
      while ((1u << order) < want_bits) order++;
      std::vector<uint64_t> ref;
      CheckResult scratch;
      s.compute_references(ref, scratch, false);
      if (scratch.corruptions) fail("Cannot change the refcount width of a corrupted image; run check -r all");
      s.rebuild_refcounts(ref, order);
    }
    if (want_version == 2 && s.version == 3) {
      // Zero clusters cannot be expressed in v2.
      for (const auto& sn : s.snaps) {
        bool zero = false;
        s.walk_tree(s.read_l1(sn.pub.l1_table_offset, sn.pub.l1_size),
                    [&](uint64_t, int kind, uint64_t e) { zero |= kind == 1 && (e & kZero); }, nullptr, nullptr);
        if (zero) fail("Cannot downgrade: snapshot '{}' contains zero clusters", sn.pub.name);
      }
      for (size_t i = 0; i < s.l1.size(); i++) {
        uint64_t off = s.l1[i] & kL1OffsetMask;
        if (!off) continue;
        for (uint64_t k = 0; k < s.l2_entries(); k++) {
          uint64_t e = s.get_l2(off).w[k];
          if (!(e & kZero) || (e & kCompressed)) continue;
          uint64_t g = (i * s.l2_entries() + k) * s.cs;
          if (g >= s.size) continue;
          auto* t = &s.writable_l2(i);
          s.free_entry(e);
          s.set_l2_word(*t, k, 0);
          if (s.backing) {
            std::vector<uint8_t> z(std::min<uint64_t>(s.cs, s.size - g), 0);
            s.version = 2;  // write real zeroes
            s.write_locked(g, z);
            s.version = 3;
          }
        }
      }
      s.flush_metadata();
      s.file->sync();
      s.version = 2;
      s.header_length = 72;
      s.incompat = s.compat = s.autoclear = 0;
      s.exts.erase(std::remove_if(s.exts.begin(), s.exts.end(),
                                  [](const Ext& e) { return e.type == kExtFeatureTable; }),
                   s.exts.end());
    } else if (want_version == 3 && s.version == 2) {
      s.version = 3;
      s.header_length = 112;
      s.exts.insert(s.exts.begin(), Ext{kExtFeatureTable, feature_table()});
    }
    if (want_lazy) {
      s.compat |= kCompatLazyRefcounts;
    } else {
      s.compat &= ~kCompatLazyRefcounts;
      s.incompat &= ~kIncompatDirty;
      s.set_dirty_bit = false;
    }
    s.write_header();
    s.file->sync();
  }
  if (o.backing_file) set_backing(*o.backing_file, o.backing_format.value_or(""));
  else if (o.backing_format) set_backing(s_->backing_name, *o.backing_format);
  if (o.size) resize(*o.size, true);
}

// -------------------------------------------------------------------------------------------------
// Create

void create_qcow2(const std::string& path, const CreateOptions& o) {
  uint32_t version;
  if (o.compat == "0.10" || o.compat == "v2") version = 2;
  else if (o.compat == "1.1" || o.compat == "v3" || o.compat.empty()) version = 3;
  else fail("Invalid compatibility level: '{}'", o.compat);
  uint64_t cs = o.cluster_size;
  if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
    fail("Cluster size must be a power of two between 512 and 2048k");
  uint32_t rb = o.refcount_bits;
  if (rb == 0 || rb > 64 || (rb & (rb - 1))) fail("Refcount width must be a power of two and may not exceed 64 bits");
  if (version == 2 && rb != 16)
    fail("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
  if (version == 2 && o.lazy_refcounts)
    fail("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
  uint8_t ctype;
  if (o.compression_type == "zlib" || o.compression_type.empty()) ctype = 0;
  else if (o.compression_type == "zstd") ctype = 1;
  else fail("Parameter 'compression_type' does not accept value '{}'", o.compression_type);
  if (version == 2 && ctype)
    fail("Non-zlib compression type is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
  if (o.extended_l2 && version == 2)
    fail("Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
  if (o.extended_l2 && cs < 16384) fail("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  const std::string& pa = o.preallocation;
  if (pa != "off" && pa != "metadata" && pa != "falloc" && pa != "full")
    fail("Parameter 'preallocation' does not accept value '{}'", pa);
  if (!o.backing_file.empty() && pa != "off" && !o.extended_l2)
    fail("Backing file and preallocation can only be used at the same time if extended_l2 is on");
  if (o.backing_file.size() > kMaxBackingName) fail("Backing file name too long");
  uint64_t size = o.size;
  if (size == 0 && !o.backing_file.empty()) {
    OpenOptions bo;
    bo.read_only = true;
    bo.force_share = true;
    bo.format = o.backing_format;
    auto b = open_image(resolve_backing_path(path, o.backing_file), bo);
    size = b->size();
  }
  size = div_round_up(size, 512) * 512;
  uint32_t cluster_bits = 0;
  while ((1ULL << cluster_bits) < cs) cluster_bits++;
  uint32_t order = 0;
  while ((1u << order) < rb) order++;
  uint64_t l2_entries = cs / (o.extended_l2 ? 16 : 8);
  uint64_t l1_entries = div_round_up(size, l2_entries * cs);
  if (l1_entries * 8 > kMaxL1Bytes) fail("Image size too big: the L1 table would exceed {} bytes", kMaxL1Bytes);
  uint64_t l1c = div_round_up(l1_entries * 8, cs);
  uint64_t n = cs * 8 / rb;
  // Encryption: a LUKS header area after the L1 table (where qemu puts it).
  const auto cc = qcow2::create_crypto_request(o);
  if (cc && pa != "off") fail("Preallocation is not supported with encryption");
  const uint64_t crypt_clusters =
      cc && cc->method == qcow2::kCryptLuks ? div_round_up(qcow2::luks_area_bytes(cc->luks), cs) : 0;
  // Layout: header, refcount table, refcount blocks, L1.
  uint64_t T = 1, R = 1;
  for (int i = 0; i < 100; i++) {
    uint64_t total = 1 + T + R + l1c + crypt_clusters;
    uint64_t nr = div_round_up(total, n), nt = div_round_up(nr * 8, cs);
    if (nr == R && nt == T) break;
    R = nr;
    T = nt;
  }
  uint64_t total = 1 + T + R + l1c + crypt_clusters;
  HostFile f(path, false, false, true);
  // Header through a State so the serialisation is shared.
  Qcow2Image::State hs;
  hs.filename = path;
  hs.version = version;
  hs.cluster_bits = cluster_bits;
  hs.cs = cs;
  hs.size = size;
  hs.l1_size = static_cast<uint32_t>(l1_entries);
  hs.l1_offset = (1 + T + R) * cs;
  hs.rt_offset = cs;
  hs.rt_clusters = static_cast<uint32_t>(T);
  hs.refcount_order = order;
  hs.header_length = version >= 3 ? 112 : 72;
  hs.compression_type = ctype;
  if (version >= 3) {
    if (ctype) hs.incompat |= kIncompatCompression;
    if (o.extended_l2) hs.incompat |= kIncompatExtendedL2;
    if (o.lazy_refcounts) hs.compat |= kCompatLazyRefcounts;
    hs.exts.push_back({kExtFeatureTable, feature_table()});
  }
  hs.backing_name = o.backing_file;
  hs.backing_fmt = o.backing_file.empty() ? "" : o.backing_format;
  std::vector<uint8_t> out((total - crypt_clusters) * cs, 0);
  if (cc) {
    hs.crypt_method = cc->method;
    if (cc->method == qcow2::kCryptLuks) {
      const uint64_t at = (1 + T + R + l1c) * cs;
      auto ext = qcow2::create_luks_header(*cc, at, [&](uint64_t off, std::span<const uint8_t> b) { f.pwrite_full(off, b); });
      hs.exts.insert(hs.exts.begin(), {qcow2::kExtCryptoHeader, ext});
      f.truncate(total * cs);
    }
  }
  auto hdr = hs.header_cluster();
  std::copy(hdr.begin(), hdr.end(), out.begin());
  for (uint64_t bi = 0; bi < R; bi++) put64(&out[cs + bi * 8], (1 + T + bi) * cs);
  for (uint64_t c = 0; c < total; c++) rb_set(&out[(1 + T + c / n) * cs], c % n, order, 1);
  f.pwrite_full(0, out);
  f.sync();
  if (pa == "off") return;
  OpenOptions oo;
  oo.take_locks = false;
  auto img = Qcow2Image::open(path, oo);
  img->preallocate(pa);
}

void Qcow2Image::preallocate(const std::string& mode) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  uint64_t nclusters = div_round_up(s.size, s.cs);
  for (uint64_t ci = 0; ci < nclusters;) {
    uint64_t l1i = ci / s.l2_entries(), l2i = ci % s.l2_entries();
    uint64_t m = std::min<uint64_t>(s.l2_entries() - l2i, nclusters - ci);
    auto* t = &s.writable_l2(l1i);
    uint64_t t_off = s.l1[l1i] & kL1OffsetMask;
    uint64_t base = s.alloc_clusters(m);
    t = &s.get_l2(t_off);
    for (uint64_t j = 0; j < m; j++) {
      if (s.l2_word(*t, l2i + j)) continue;
      s.set_l2_word(*t, l2i + j, (base + j * s.cs) | kCopied);
    }
    ci += m;
  }
  s.flush_metadata();
  uint64_t end = s.rc.size() * s.cs;
  if (mode == "falloc" || mode == "full") {
    bool done = mode == "falloc" && s.file->allocate(0, end);
    if (!done) {
      // Write zeroes over every data cluster (the metadata is already there).
      std::vector<uint8_t> z(1 << 20, 0);
      s.walk_tree(s.l1, [&](uint64_t host, int kind, uint64_t) {
        if (kind == 1) s.file->pwrite_full(host, std::span<const uint8_t>(z.data(), s.cs));
      }, nullptr, nullptr);
    }
  } else if (s.file->length() < end) {
    s.file->truncate(end);
  }
  s.file->sync();
}


}  // namespace vireo::block
