// qcow2: compressed clusters (zlib raw deflate, zstd): decompression and write_compressed.
#include "block/qcow2_internal.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>

namespace vireo::block {

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

}  // namespace vireo::block
