// qcow2: header (de)serialisation, header extensions, open and the backing chain.
#include "block/qcow2_internal.h"

#include <sys/stat.h>

#include <cstring>
#include <map>

#include "block/format.h"

namespace vireo::block {

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

std::vector<uint8_t> qcow2::feature_table() {
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
// Open

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

std::unique_ptr<Qcow2Image> Qcow2Image::open(const std::string& path, const OpenOptions& opts) {
  OpenContext ctx;
  return Qcow2Opener::run(path, opts, ctx);
}

std::unique_ptr<Qcow2Image> Qcow2Opener::run(const std::string& path, const OpenOptions& opts, OpenContext& ctx) {
  if (opts.force_share && !opts.read_only) fail("force-share=on can only be used with read-only images");
  auto img = std::unique_ptr<Qcow2Image>(new Qcow2Image());
  Qcow2Image::State& s = *img->s_;
  s.filename = path;
  s.opts = opts;
  s.ro = opts.read_only;
  s.file = std::make_unique<HostFile>(path, opts.read_only, opts.direct);
  note_open(ctx, s.file->fd(), path);
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
    if (ctx.depth + 1 > kMaxBackingDepth) fail("Could not open '{}': backing chain too deep", path);
    std::string bpath = resolve_backing_path(path, s.backing_name);
    OpenOptions bo = opts;
    bo.read_only = true;
    bo.format = s.backing_fmt;
    bo.for_repair = false;
    try {
      s.backing = open_backing_file(bpath, bo, ctx);
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
int probe_qcow2(std::span<const uint8_t> head, const std::string&) {
  return head.size() >= 8 && be32(head.data()) == kMagic && be32(head.data() + 4) >= 2 ? 100 : 0;
}
std::unique_ptr<BlockImage> open_qcow2(const std::string& path, const OpenOptions& opts, OpenContext& ctx) {
  return Qcow2Opener::run(path, opts, ctx);
}
}  // namespace

const FormatDriver kQcow2Driver = {"qcow2", probe_qcow2, open_qcow2, create_qcow2};

}  // namespace vireo::block
