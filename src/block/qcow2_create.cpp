// qcow2: image creation, preallocation and amend.
#include "block/qcow2_internal.h"

#include <algorithm>

namespace vireo::block {

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

}  // namespace vireo::block
