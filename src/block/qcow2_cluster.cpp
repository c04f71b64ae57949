// qcow2: guest->host cluster mapping: L1/L2 tables, the L2 cache, reads, allocating writes,
// zero clusters, L1 growth, metadata flush ordering and block status.
#include "block/qcow2_internal.h"

#include <algorithm>

namespace vireo::block {

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
  // As qemu: the host offset of an encrypted image's cluster holds ciphertext, so none is reported (qemu-img
  // map then refuses human output: "File contains external, encrypted or compressed clusters.").
  const bool plain = s.crypt_method == 0;
  if (kind == 1) {
    e.zero = true;
    if (host0 && plain) e.host_offset = host0;
    return e;
  }
  e.data = true;
  if (kind == 2) {
    if (plain) e.host_offset = host0;
  } else {
    e.compressed = true;
  }
  return e;
}

}  // namespace vireo::block
