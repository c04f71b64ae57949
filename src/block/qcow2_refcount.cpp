// qcow2: refcount array, refcount blocks and table (growth, coverage), cluster allocation,
// deferred frees and rebuilding the whole refcount structure.
#include "block/qcow2_internal.h"

#include <algorithm>

namespace vireo::block {

// -------------------------------------------------------------------------------------------------
// Refcounts

namespace qcow2 {
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
}  // namespace qcow2

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

}  // namespace vireo::block
