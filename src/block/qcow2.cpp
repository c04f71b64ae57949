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
  if (extended_l2())
    throw Error(fmt::format("write {}: writing images with extended L2 entries is not supported", filename),
                ENOTSUP);
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
  if (dcache_key == entry) {
    out = dcache;
    return;
  }
  if (off + len < off || off + len > file->length())
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
      if (deferred) {
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
    auto inplace = [&](uint64_t e) {
      return !(e & kCompressed) && (e & kCopied) && (e & kL2OffsetMask) && !(version >= 3 && (e & kZero));
    };
    uint64_t e0 = t->w[l2i];
    if (inplace(e0)) {
      uint64_t host0 = e0 & kL2OffsetMask;
      if (host0 % cs) corrupt(fmt::format("cluster allocation offset {} unaligned", hex(host0)));
      // Extend over following clusters that are contiguous on the host.
      uint64_t n = std::min<uint64_t>(cs - g % cs, buf.size() - pos);
      uint64_t k = l2i + 1;
      while (pos + n < buf.size() && k < l2_entries()) {
        uint64_t e = t->w[k];
        if (!inplace(e) || (e & kL2OffsetMask) != host0 + (k - l2i) * cs) break;
        n += std::min<uint64_t>(cs, buf.size() - pos - n);
        k++;
      }
      uint64_t h = host0 + g % cs;
      check_no_overlap(h, n, "data");
      file->pwrite_full(h, buf.subspan(pos, n));
      pos += n;
      data_written = true;
      continue;
    }
    // A run of clusters that need a new host cluster each (unallocated, zero, compressed or shared).
    uint64_t m = 1;
    uint64_t run_bytes = std::min<uint64_t>(cs - g % cs, buf.size() - pos);
    const uint64_t max_run = std::max<uint64_t>(1, (8ULL << 20) / cs);
    while (pos + run_bytes < buf.size() && l2i + m < l2_entries() && m < max_run && !inplace(t->w[l2i + m])) {
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
      uint64_t e = t->w[l2i + j];
      if (e == 0 && !backing) return;
      read_locked(cg, std::span<uint8_t>(data.data() + j * cs, len), nullptr);
      t = &get_l2(t_off);  // (the read may have touched the cache)
    };
    if (g % cs) fill_old(0);
    uint64_t end_g = g + run_bytes;
    if (end_g % cs && !(m == 1 && g % cs)) fill_old(m - 1);
    std::copy_n(buf.begin() + static_cast<ptrdiff_t>(pos), run_bytes, data.begin() + static_cast<ptrdiff_t>(g % cs));
    uint64_t base = alloc_clusters(m);
    check_no_overlap(base, m * cs, "data");
    file->pwrite_full(base, data);
    data_written = true;
    t = &get_l2(t_off);
    for (uint64_t j = 0; j < m; j++) {
      uint64_t old = t->w[l2i + j];
      free_entry(old);
      set_l2_word(*t, l2i + j, (base + j * cs) | kCopied);
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
    for (uint64_t k = l2i; k < l2i + (span_end - ci); k++) {
      uint64_t e = t->w[k];
      uint64_t want = need_zero_flag ? kZero : 0;
      if (e == want) continue;
      free_entry(e);
      set_l2_word(*t, k, want);
    }
    ci = span_end;
  }
}

@@REST@@

}  // namespace vireo::block
