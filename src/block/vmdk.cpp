#include "block/vmdk.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <list>
#include <map>
#include <random>
#include <set>

#include "block/foreign.h"
#include "common/error.h"

namespace vireo::block::vmdk {

namespace {

constexpr uint32_t kMagicKdmv = 0x4b444d56;   // "KDMV" read big endian
constexpr uint32_t kMagicCowd = 0x434f5744;   // "COWD"
constexpr uint32_t kFlagNlDetect = 1u << 0, kFlagRgd = 1u << 1, kFlagZeroGrain = 1u << 2,
                   kFlagCompress = 1u << 16, kFlagMarker = 1u << 17;
constexpr uint16_t kCompressDeflate = 1;
constexpr uint32_t kGteZeroed = 1;
constexpr uint64_t kSector = 512;
constexpr uint64_t kDescSize = 20 * kSector;
constexpr uint64_t kMaxExtentSectors = 1ULL << 32;
constexpr size_t kL2CacheTables = 64;
constexpr size_t kMaxExtents = 4096;

}  // namespace

bool probe(std::span<const uint8_t> head) {
  if (head.size() < 4) return false;
  const uint32_t magic = rd_be32(head.data());
  if (magic == kMagicKdmv || magic == kMagicCowd) return true;
  const char* p = reinterpret_cast<const char*>(head.data());
  const char* end = p + head.size();
  while (p < end) {
    if (*p == '#') {
      while (p < end && *p != '\n') ++p;
      ++p;
      continue;
    }
    if (*p == ' ') {
      while (p < end && *p == ' ') ++p;
      if (p < end && *p == '\r') ++p;
      if (p == end || *p != '\n') return false;
      ++p;
      continue;
    }
    for (const char* v : {"version=1\n", "version=2\n", "version=3\n", "version=1\r\n", "version=2\r\n", "version=3\r\n"}) {
      const size_t n = std::strlen(v);
      if (static_cast<size_t>(end - p) >= n && std::strncmp(v, p, n) == 0) return true;
    }
    return false;
  }
  return false;
}

SparseHeader parse_sparse_header(std::span<const uint8_t> s, uint64_t file_len, bool writable) {
  if (s.size() < kSector) fail("File is too small, not a valid image");
  if (rd_be32(s.data()) != kMagicKdmv) fail("Image not in VMDK format");
  const uint8_t* p = s.data() + 4;
  SparseHeader h;
  h.version = le32(p);
  h.flags = le32(p + 4);
  h.capacity = le64(p + 8);
  h.granularity = le64(p + 16);
  h.desc_offset = le64(p + 24);
  h.desc_size = le64(p + 32);
  h.num_gtes_per_gt = le32(p + 40);
  h.rgd_offset = le64(p + 44);
  h.gd_offset = le64(p + 52);
  h.grain_offset = le64(p + 60);
  h.compress_algorithm = le16(p + 73);
  const bool compressed = h.compress_algorithm == kCompressDeflate;
  if (h.version > 3) fail("Unsupported VMDK version {}", h.version);
  if (h.version == 3 && writable && !compressed) fail("VMDK version 3 must be read only");
  if (h.num_gtes_per_gt > 512) fail("L2 table size too big");
  const uint64_t l1_entry_sectors = uint64_t(h.num_gtes_per_gt) * h.granularity;
  // qemu keeps this product in 32 bits; a granularity that large is refused below anyway.
  if (l1_entry_sectors == 0 || h.granularity > 0xffffffffULL) fail("L1 entry size is invalid");
  // qemu computes this in 32 bits; an image whose capacity needs more opens and fails on access beyond it.
  h.l1_size = static_cast<uint32_t>((h.capacity + l1_entry_sectors - 1) / l1_entry_sectors);
  if (file_len / kSector < h.grain_offset)
    fail("File truncated, expecting at least {} bytes", h.grain_offset * kSector);
  if (h.granularity > 0x200000) fail("Invalid granularity, image may be corrupt");
  if (h.l1_size > 32 * 1024 * 1024) fail("L1 size too big");
  if (h.capacity > (1ULL << 54)) fail("Extent size too big");
  return h;
}

Descriptor parse_descriptor(const std::string& text) {
  Descriptor d;
  const auto quoted = [&](const char* name) -> std::optional<std::string> {
    auto pos = text.find(name);
    if (pos == std::string::npos) return std::nullopt;
    pos += std::strlen(name) + 2;   // skip '="'
    if (pos >= text.size()) return std::nullopt;
    auto end = text.find('"', pos);
    if (end == std::string::npos) return std::nullopt;
    return text.substr(pos, end - pos);
  };
  if (auto ct = quoted("createType"); ct && ct->size() < 128) d.create_type = *ct;
  const auto hex_after = [&](const char* name) -> std::optional<uint32_t> {
    auto pos = text.find(name);
    if (pos == std::string::npos) return std::nullopt;
    unsigned v = 0;
    if (std::sscanf(text.c_str() + pos + std::strlen(name) + 1, "%x", &v) != 1) return std::nullopt;
    return static_cast<uint32_t>(v);
  };
  d.cid = hex_after("CID");
  d.parent_cid = hex_after("parentCID");
  if (auto pos = text.find("parentFileNameHint"); pos != std::string::npos) {
    pos += std::strlen("parentFileNameHint") + 2;
    auto end = pos < text.size() ? text.find('"', pos) : std::string::npos;
    if (end == std::string::npos) fail("Invalid parentFileNameHint in the VMDK descriptor");
    if (end - pos > 1023) fail("parentFileNameHint too long in the VMDK descriptor");
    d.parent_hint = text.substr(pos, end - pos);
  }
  size_t line_start = 0;
  while (line_start < text.size()) {
    size_t nl = text.find('\n', line_start);
    const size_t line_end = nl == std::string::npos ? text.size() : nl;
    const std::string line = text.substr(line_start, line_end - line_start);
    line_start = nl == std::string::npos ? text.size() : nl + 1;
    char access[11] = {}, type[11] = {}, fname[512] = {};
    long long sectors = 0, flat_offset = -1;
    const int matches =
        std::sscanf(line.c_str(), "%10s %lld %10s \"%511[^\n\r\"]\" %lld", access, &sectors, type, fname, &flat_offset);
    if (matches < 4 || std::strcmp(access, "RW") != 0) continue;
    const std::string t = type;
    std::string shown = line;
    if (!shown.empty() && shown.back() == '\r') shown.pop_back();
    if (t == "FLAT") {
      if (matches != 5 || flat_offset < 0) fail("Invalid extent line: {}", shown);
    } else if (t == "VMFS") {
      if (matches != 4) fail("Invalid extent line: {}", shown);
      flat_offset = 0;
    } else if (matches != 4) {
      fail("Invalid extent line: {}", shown);
    }
    if (sectors <= 0 || (t != "FLAT" && t != "SPARSE" && t != "VMFS" && t != "VMFSSPARSE" && t != "SESPARSE"))
      continue;
    if (d.extents.size() >= kMaxExtents) fail("Too many extents in the VMDK descriptor");
    if (flat_offset > (1LL << 54)) fail("Invalid extent line: {}", shown);
    d.extents.push_back({access, t, fname, sectors, flat_offset < 0 ? 0 : flat_offset});
  }
  return d;
}

namespace {

struct Ext {
  HostFile* file = nullptr;
  std::string display_name;
  std::string type;          // descriptor type ("SPARSE", "FLAT", ...), "" for a monolithic sparse file
  bool flat = false, compressed = false, has_marker = false, zero_grain = false;
  uint64_t sectors = 0, start_sector = 0;      // size and first guest sector
  uint64_t flat_offset = 0;                    // bytes
  uint64_t l1_offset = 0, l1_backup_offset = 0;
  uint64_t l1_size = 0, l2_size = 0, cluster_sectors = 0;
  std::vector<uint32_t> l1, l1_backup;
  uint64_t next_cluster_sector = 0;
  // L2 cache: grain table sector -> entries, with LRU order.
  std::map<uint32_t, std::vector<uint32_t>> l2;
  std::list<uint32_t> lru;
  std::map<uint32_t, std::vector<uint32_t>> dirty;   // GT sector -> (index, value) pairs flattened
};

class VmdkImage final : public ForeignImage {
 public:
  VmdkImage(const std::string& path, const OpenOptions& o) : ForeignImage("vmdk", path, o), opts_(o) {}

  void open_all();
  std::optional<uint64_t> cluster_size() const override;
  nlohmann::ordered_json format_specific() const override;
  std::string backing_file_name() const override { return parent_hint_; }
  std::string backing_file_format() const override { return parent_hint_.empty() ? "" : "vmdk"; }
  bool can_check() const override { return true; }
  CheckResult check(RepairMode mode) override;
  ~VmdkImage() override {
    try {
      if (!read_only_) {
        std::lock_guard<std::mutex> g(mu_);
        flush_locked();
      }
    } catch (...) {
    }
  }

 protected:
  Map map(uint64_t offset, uint64_t max_len) override;
  void read_opaque(uint64_t offset, std::span<uint8_t> buf, const Map& m) override;
  void write_locked(uint64_t offset, std::span<const uint8_t> buf) override;
  void write_zeroes_locked(uint64_t offset, uint64_t length, bool may_unmap) override;
  void flush_locked() override;

 private:
  enum class Grain { Error, Unalloc, Zeroed, Ok };
  Ext& find(uint64_t offset);
  // Looks up the grain holding `offset` (guest bytes) of `e`; sets cluster_off (bytes in e.file).
  Grain lookup(Ext& e, uint64_t offset, uint64_t& cluster_off, uint32_t* gt_sector = nullptr,
               uint32_t* gt_index = nullptr);
  std::vector<uint32_t>& load_gt(Ext& e, uint32_t gt_sector);
  void set_gte(Ext& e, uint32_t l1_index, uint32_t gt_index, uint32_t value);
  void add_sparse(HostFile* f, const std::string& name, const std::string& type, uint64_t start);
  void add_cowd(HostFile* f, const std::string& name, const std::string& type, uint64_t start);
  void open_desc(const std::string& text);
  void update_cid();

  OpenOptions opts_;
  std::vector<std::unique_ptr<HostFile>> owned_;
  std::vector<Ext> ext_;
  HostFile* main_ = nullptr;
  uint64_t desc_offset_ = 0;
  uint32_t cid_ = 0, parent_cid_ = 0xffffffff;
  std::string create_type_, parent_hint_;
  bool cid_updated_ = false, cid_valid_ = true;
};

std::string read_desc_text(HostFile& f, uint64_t offset) {
  const uint64_t len = f.length();
  if (len < 4) fail("File is too small, not a valid image");
  const uint64_t n = std::min<uint64_t>(len, (1 << 20) - 1);
  std::string buf(n, '\0');
  f.pread_full(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), n));
  buf.resize(std::strlen(buf.c_str()));   // qemu treats it as a C string
  return buf;
}

void VmdkImage::add_sparse(HostFile* f, const std::string& name, const std::string& type, uint64_t start) {
  uint8_t sector[512];
  f->pread_full(0, sector);
  SparseHeader h = parse_sparse_header(sector, f->length(), !read_only_);
  if (h.capacity == 0 && h.desc_offset) {
    if (!ext_.empty() || start) fail("Invalid VMDK extent: nested descriptor");
    open_desc(read_desc_text(*f, h.desc_offset << 9));
    return;
  }
  if (create_type_.empty()) create_type_ = "monolithicSparse";
  if (h.gd_offset == kGdAtEnd) {
    // streamOptimized written by VMware: the footer (sector -3..-1: footer marker, header, end of stream)
    // takes precedence over the header.
    const uint64_t len = f->length();
    if (len < 1536) fail("Invalid footer");
    uint8_t foot[1536];
    f->pread_full(len / 512 * 512 - 1536, foot);
    const uint8_t* fm = foot;
    const uint8_t* eos = foot + 1024;
    if (rd_be32(foot + 512) != kMagicKdmv || le32(fm + 8) != 0 || le32(fm + 12) != 3 || le64(eos) != 0 ||
        le32(eos + 8) != 0 || le32(eos + 12) != 0)
      fail("Invalid footer");
    h = parse_sparse_header(std::span<const uint8_t>(foot + 512, 512), len, !read_only_);
  }
  Ext e;
  e.file = f;
  e.display_name = name;
  e.type = type;
  e.sectors = h.capacity;
  e.l1_offset = h.gd_offset << 9;
  if (h.flags & kFlagRgd) e.l1_backup_offset = h.rgd_offset << 9;
  e.l1_size = h.l1_size;
  e.l2_size = h.num_gtes_per_gt;
  e.cluster_sectors = h.granularity;
  e.compressed = h.compress_algorithm == kCompressDeflate;
  if (e.compressed) create_type_ = "streamOptimized";
  e.has_marker = h.flags & kFlagMarker;
  e.zero_grain = h.flags & kFlagZeroGrain;
  e.start_sector = start;
  const uint64_t fsec = (f->length() + 511) / 512;
  e.next_cluster_sector = (fsec + e.cluster_sectors - 1) / e.cluster_sectors * e.cluster_sectors;
  std::vector<uint8_t> raw(e.l1_size * 4);
  f->pread_full(e.l1_offset, raw);
  e.l1.resize(e.l1_size);
  for (uint64_t i = 0; i < e.l1_size; ++i) e.l1[i] = le32(&raw[i * 4]);
  if (e.l1_backup_offset) {
    f->pread_full(e.l1_backup_offset, raw);
    e.l1_backup.resize(e.l1_size);
    for (uint64_t i = 0; i < e.l1_size; ++i) e.l1_backup[i] = le32(&raw[i * 4]);
  }
  ext_.push_back(std::move(e));
}

void VmdkImage::add_cowd(HostFile* f, const std::string& name, const std::string& type, uint64_t start) {
  uint8_t h[44];
  f->pread_full(4, h);
  Ext e;
  e.file = f;
  e.display_name = name;
  e.type = type;
  e.sectors = le32(h + 8);
  e.cluster_sectors = le32(h + 12);
  e.l1_offset = uint64_t(le32(h + 16)) << 9;
  e.l1_size = le32(h + 20);
  e.l2_size = 4096;
  if (e.cluster_sectors > 0x200000) fail("Invalid granularity, image may be corrupt");
  if (e.l1_size > 32 * 1024 * 1024) fail("L1 size too big");
  if (e.cluster_sectors == 0) fail("Invalid granularity, image may be corrupt");
  e.start_sector = start;
  const uint64_t fsec = (f->length() + 511) / 512;
  e.next_cluster_sector = (fsec + e.cluster_sectors - 1) / e.cluster_sectors * e.cluster_sectors;
  std::vector<uint8_t> raw(e.l1_size * 4);
  f->pread_full(e.l1_offset, raw);
  e.l1.resize(e.l1_size);
  for (uint64_t i = 0; i < e.l1_size; ++i) e.l1[i] = le32(&raw[i * 4]);
  ext_.push_back(std::move(e));
}

void VmdkImage::open_desc(const std::string& text) {
  const Descriptor d = parse_descriptor(text);
  if (d.create_type.empty()) fail("invalid VMDK image descriptor");
  static const char* kTypes[] = {"monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
                                 "twoGbMaxExtentFlat"};
  if (std::none_of(std::begin(kTypes), std::end(kTypes), [&](const char* t) { return d.create_type == t; }))
    fail("Unsupported image type '{}'", d.create_type);
  create_type_ = d.create_type;
  desc_offset_ = 0;
  uint64_t start = 0;
  for (const auto& l : d.extents) {
    const std::string path = resolve_backing_path(filename_, l.filename);
    if (l.type == "SESPARSE") fail("Unsupported extent type '{}'", l.type);
    std::unique_ptr<HostFile> f;
    try {
      f = open_host_file(path, opts_);
    } catch (const Error& e) {
      throw Error(fmt::format("Could not open '{}': {}", path, e.what()), e.sys_errno());
    }
    HostFile* fp = f.get();
    owned_.push_back(std::move(f));
    files_.push_back(fp);
    if (l.type == "FLAT" || l.type == "VMFS") {
      Ext e;
      e.file = fp;
      e.display_name = path;
      e.type = l.type;
      e.flat = true;
      e.sectors = static_cast<uint64_t>(l.sectors);
      e.cluster_sectors = e.sectors;
      e.flat_offset = static_cast<uint64_t>(l.flat_offset) << 9;
      e.start_sector = start;
      ext_.push_back(std::move(e));
    } else {
      if (fp->length() < 4) fail("File is too small, not a valid image");
      uint8_t m[4];
      fp->pread_full(0, m);
      const uint32_t magic = rd_be32(m);
      const size_t before = ext_.size();
      if (magic == kMagicKdmv) add_sparse(fp, path, l.type, start);
      else if (magic == kMagicCowd) add_cowd(fp, path, l.type, start);
      else fail("Image not in VMDK format");
      if (ext_.size() != before + 1) fail("Invalid VMDK extent '{}'", path);
    }
    start += ext_.back().sectors;
    if (start > (1ULL << 54)) fail("VMDK image too big");
  }
}

void VmdkImage::open_all() {
  auto f = open_host_file(filename_, opts_);
  main_ = f.get();
  owned_.push_back(std::move(f));
  files_.push_back(main_);
  const std::string head = read_desc_text(*main_, 0);
  uint8_t m[4];
  main_->pread_full(0, m);
  const uint32_t magic = rd_be32(m);
  if (magic == kMagicKdmv) {
    add_sparse(main_, filename_, "", 0);
    desc_offset_ = 0x200;   // as qemu: even a sparse file whose header points at a descriptor elsewhere
  } else if (magic == kMagicCowd) {
    add_cowd(main_, filename_, "", 0);
    desc_offset_ = 0x200;
  } else {
    open_desc(head);
  }
  uint64_t total = 0;
  for (const auto& e : ext_) total += e.sectors;
  size_ = total * kSector;
  // CID / parent CID / parent hint come from the descriptor (inside the sparse file at 0x200, or the file).
  std::string desc(kDescSize, '\0');
  main_->pread_full(desc_offset_, std::span<uint8_t>(reinterpret_cast<uint8_t*>(desc.data()), kDescSize));
  desc.resize(std::strlen(desc.c_str()));
  const Descriptor d = parse_descriptor(desc);
  // qemu fails with a bare EINVAL here (e.g. a split extent file opened on its own).
  if (!d.cid || !d.parent_cid) throw Error(fmt::format("Could not open '{}': Invalid argument", filename_), EINVAL);
  cid_ = *d.cid;
  parent_cid_ = *d.parent_cid;
  parent_hint_ = d.parent_hint;
  if (!parent_hint_.empty()) {
    open_backing(parent_hint_, "", opts_);
    if (auto* b = dynamic_cast<VmdkImage*>(backing_.get())) cid_valid_ = b->cid_ == parent_cid_;
    else if (backing_) cid_valid_ = false;
  }
}

Ext& VmdkImage::find(uint64_t offset) {
  const uint64_t sector = offset / kSector;
  for (auto& e : ext_)
    if (sector < e.start_sector + e.sectors) return e;
  throw Error(fmt::format("{}: no extent for offset {}", filename_, offset), EIO);
}

std::vector<uint32_t>& VmdkImage::load_gt(Ext& e, uint32_t gt_sector) {
  auto it = e.l2.find(gt_sector);
  if (it != e.l2.end()) {
    e.lru.remove(gt_sector);
    e.lru.push_front(gt_sector);
    return it->second;
  }
  if (e.l2.size() >= kL2CacheTables) {
    // Evict the least recently used table that has no pending updates.
    for (auto r = e.lru.rbegin(); r != e.lru.rend(); ++r) {
      if (!e.dirty.count(*r)) {
        e.l2.erase(*r);
        e.lru.erase(std::next(r).base());
        break;
      }
    }
  }
  std::vector<uint8_t> raw(e.l2_size * 4);
  e.file->pread_full(uint64_t(gt_sector) * kSector, raw);
  std::vector<uint32_t> t(e.l2_size);
  for (uint64_t i = 0; i < e.l2_size; ++i) t[i] = le32(&raw[i * 4]);
  e.lru.push_front(gt_sector);
  return e.l2.emplace(gt_sector, std::move(t)).first->second;
}

VmdkImage::Grain VmdkImage::lookup(Ext& e, uint64_t offset, uint64_t& cluster_off, uint32_t* gt_sector,
                                   uint32_t* gt_index) {
  if (e.flat) {
    cluster_off = e.flat_offset;
    return Grain::Ok;
  }
  const uint64_t rel = offset - e.start_sector * kSector;
  const uint64_t l1_entry_sectors = e.l2_size * e.cluster_sectors;
  const uint64_t l1_index = (rel >> 9) / l1_entry_sectors;
  if (l1_index >= e.l1_size) return Grain::Error;
  const uint32_t l2_off = e.l1[l1_index];
  if (!l2_off) return Grain::Unalloc;
  auto& gt = load_gt(e, l2_off);
  const uint64_t l2_index = ((rel >> 9) / e.cluster_sectors) % e.l2_size;
  if (gt_sector) *gt_sector = static_cast<uint32_t>(l1_index);
  if (gt_index) *gt_index = static_cast<uint32_t>(l2_index);
  const uint32_t entry = gt[l2_index];
  if (e.zero_grain && entry == kGteZeroed) return Grain::Zeroed;
  if (!entry) return Grain::Unalloc;
  cluster_off = uint64_t(entry) << 9;
  return Grain::Ok;
}

ForeignImage::Map VmdkImage::map(uint64_t offset, uint64_t max_len) {
  Ext& e = find(offset);
  uint64_t coff = 0;
  const Grain g = lookup(e, offset, coff);
  const uint64_t csize = e.cluster_sectors * kSector;
  const uint64_t in = (offset - e.start_sector * kSector) % csize;
  Map m;
  m.length = std::min(max_len, csize - in);
  switch (g) {
    case Grain::Error:
      throw Error(fmt::format("read {}: grain directory index out of range at offset {}", filename_, offset), EIO);
    case Grain::Unalloc:
      if (backing_ && !cid_valid_)
        throw Error(fmt::format("read {}: parent CID does not match the backing file", filename_), EINVAL);
      m.kind = Map::Unallocated;
      break;
    case Grain::Zeroed: m.kind = Map::Zero; break;
    case Grain::Ok:
      if (e.compressed) {
        m.kind = Map::Opaque;
        m.host_offset = coff;
        m.file = e.file;
      } else {
        m.kind = Map::Data;
        m.host_offset = coff + in;
        m.file = e.file;
        m.recurse = e.flat;
      }
      break;
  }
  return m;
}

void VmdkImage::read_opaque(uint64_t offset, std::span<uint8_t> buf, const Map& m) {
  Ext& e = find(offset);
  const uint64_t csize = e.cluster_sectors * kSector;
  const uint64_t in = (offset - e.start_sector * kSector) % csize;
  std::vector<uint8_t> raw(csize * 2);
  e.file->pread_full(m.host_offset, raw);
  const uint8_t* data = raw.data();
  uint64_t data_len = csize;
  if (e.has_marker) {
    data = raw.data() + 12;
    data_len = le32(raw.data() + 8);
  }
  if (data_len == 0 || data_len > raw.size() - (data - raw.data()))
    throw Error(fmt::format("read {}: invalid compressed grain size {} at offset {}", filename_, data_len, m.host_offset), EINVAL);
  std::vector<uint8_t> out(csize);
  uLongf out_len = csize;
  if (uncompress(out.data(), &out_len, data, data_len) != Z_OK)
    throw Error(fmt::format("read {}: compressed grain at offset {} is corrupt", filename_, m.host_offset), EINVAL);
  if (in + buf.size() > out_len)
    throw Error(fmt::format("read {}: compressed grain at offset {} is too short", filename_, m.host_offset), EINVAL);
  std::memcpy(buf.data(), out.data() + in, buf.size());
}

void VmdkImage::set_gte(Ext& e, uint32_t l1_index, uint32_t gt_index, uint32_t value) {
  auto& gt = load_gt(e, e.l1[l1_index]);
  gt[gt_index] = value;
  auto& d = e.dirty[e.l1[l1_index]];
  d.push_back(gt_index);
  d.push_back(value);
  if (!e.l1_backup.empty() && e.l1_backup[l1_index]) {
    auto& b = e.dirty[e.l1_backup[l1_index]];
    b.push_back(gt_index);
    b.push_back(value);
    if (e.l2.count(e.l1_backup[l1_index])) e.l2[e.l1_backup[l1_index]][gt_index] = value;
  }
}

void VmdkImage::flush_locked() {
  // Grain data first, then the grain tables that point at it.
  bool any = false;
  for (auto& e : ext_) any = any || !e.dirty.empty();
  for (auto* f : files_) f->sync();
  if (!any) return;
  for (auto& e : ext_) {
    for (auto& [sector, pairs] : e.dirty) {
      for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
        uint8_t v[4];
        put_le32(v, pairs[i + 1]);
        e.file->pwrite_full(uint64_t(sector) * kSector + pairs[i] * 4, v);
      }
    }
    e.dirty.clear();
  }
  for (auto* f : files_) f->sync();
}

void VmdkImage::update_cid() {
  if (cid_updated_) return;
  cid_updated_ = true;
  std::string desc(kDescSize, '\0');
  main_->pread_full(desc_offset_, std::span<uint8_t>(reinterpret_cast<uint8_t*>(desc.data()), kDescSize));
  desc.resize(std::strlen(desc.c_str()));
  const auto pc = desc.find("parentCID");
  const auto c = desc.find("CID");
  if (pc == std::string::npos || c == std::string::npos || c + 4 > desc.size()) return;
  std::random_device rd;
  cid_ = static_cast<uint32_t>(rd());
  const std::string tail = desc.substr(pc);
  std::string out = desc.substr(0, c + 4) + fmt::format("{:x}\n", cid_) + tail;
  if (out.size() > kDescSize) return;
  main_->pwrite_full(desc_offset_, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(out.data()), out.size()));
  if (desc_offset_ == 0) main_->truncate(out.size());
  else if (out.size() < desc.size()) {
    std::vector<uint8_t> z(desc.size() - out.size(), 0);
    main_->pwrite_full(desc_offset_ + out.size(), z);
  }
}

void VmdkImage::write_locked(uint64_t offset, std::span<const uint8_t> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    const uint64_t pos = offset + done;
    Ext& e = find(pos);
    const uint64_t csize = e.cluster_sectors * kSector;
    const uint64_t in = (pos - e.start_sector * kSector) % csize;
    const uint64_t n = std::min<uint64_t>(buf.size() - done, csize - in);
    uint64_t coff = 0;
    uint32_t l1i = 0, l2i = 0;
    const Grain g = lookup(e, pos, coff, &l1i, &l2i);
    if (g == Grain::Error)
      throw Error(fmt::format("write {}: grain directory index out of range at offset {}", filename_, pos), EIO);
    if (e.flat) {
      e.file->pwrite_full(coff + in, buf.subspan(done, n));
    } else if (g == Grain::Ok && !e.compressed) {
      e.file->pwrite_full(coff + in, buf.subspan(done, n));
    } else if (e.compressed) {
      if (g == Grain::Ok) throw Error("Could not write to allocated cluster for streamOptimized", EIO);
      const uint64_t ext_end = (e.start_sector + e.sectors) * kSector;
      if (in != 0 || (n < csize && pos + n != ext_end))
        throw Error(fmt::format("write {}: streamOptimized images take whole grains only (offset {})", filename_, pos), EINVAL);
      if (!e.l1[l1i]) throw Error(fmt::format("write {}: grain table not allocated", filename_), ENOTSUP);
      uLongf clen = compressBound(n);
      std::vector<uint8_t> out(12 + clen);
      if (compress(out.data() + 12, &clen, buf.data() + done, n) != Z_OK || clen == 0)
        throw Error(fmt::format("write {}: compression failed", filename_), EINVAL);
      put_le64(out.data(), pos / kSector - e.start_sector);
      put_le32(out.data() + 8, static_cast<uint32_t>(clen));
      const uint64_t total = e.has_marker ? 12 + clen : clen;
      const uint8_t* src = e.has_marker ? out.data() : out.data() + 12;
      const uint64_t at = e.next_cluster_sector * kSector;
      e.file->pwrite_full(at, std::span<const uint8_t>(src, total));
      const uint64_t end_sector = (at + total + kSector - 1) / kSector;
      // Pad the last sector so the next grain starts sector aligned and the file ends on a sector.
      if ((at + total) % kSector) {
        std::vector<uint8_t> pad(kSector - (at + total) % kSector, 0);
        e.file->pwrite_full(at + total, pad);
      }
      set_gte(e, l1i, l2i, static_cast<uint32_t>(e.next_cluster_sector));
      e.next_cluster_sector = end_sector;
    } else {
      if (!e.l1[l1i]) throw Error(fmt::format("write {}: grain table not allocated", filename_), ENOTSUP);
      if (e.next_cluster_sector >= kMaxExtentSectors)
        throw Error(fmt::format("write {}: extent is full", filename_), ENOSPC);
      // New grain: the bytes around the request come from the backing file (unless the grain was zeroed).
      std::vector<uint8_t> grain(csize, 0);
      const uint64_t gstart = pos - in;
      if (backing_ && g == Grain::Unalloc && gstart < backing_->size()) {
        if (!cid_valid_) throw Error(fmt::format("write {}: parent CID does not match the backing file", filename_), EINVAL);
        backing_->read(gstart, std::span<uint8_t>(grain.data(), std::min<uint64_t>(csize, backing_->size() - gstart)));
      }
      std::memcpy(grain.data() + in, buf.data() + done, n);
      const uint64_t sector = e.next_cluster_sector;
      e.file->pwrite_full(sector * kSector, grain);
      e.next_cluster_sector += e.cluster_sectors;
      set_gte(e, l1i, l2i, static_cast<uint32_t>(sector));
    }
    done += n;
    update_cid();
  }
}

void VmdkImage::write_zeroes_locked(uint64_t offset, uint64_t length, bool may_unmap) {
  // Whole grains of an extent with the zeroed-grain feature become zero grains; the rest is written.
  uint64_t done = 0;
  while (done < length) {
    const uint64_t pos = offset + done;
    Ext& e = find(pos);
    const uint64_t csize = e.cluster_sectors * kSector;
    const uint64_t in = (pos - e.start_sector * kSector) % csize;
    const uint64_t n = std::min<uint64_t>(length - done, csize - in);
    uint64_t coff = 0;
    uint32_t l1i = 0, l2i = 0;
    const Grain g = lookup(e, pos, coff, &l1i, &l2i);
    if (!e.flat && !e.compressed && e.zero_grain && in == 0 && n == csize && g != Grain::Error && e.l1[l1i]) {
      if (g != Grain::Zeroed) set_gte(e, l1i, l2i, kGteZeroed);
      update_cid();
    } else if (!e.flat && !e.compressed && g == Grain::Unalloc && !backing_) {
      // Already reads as zeroes.
    } else if (e.compressed && g != Grain::Ok) {
      // Unwritten streamOptimized grains read as zeroes; writing would fill the stream.
    } else {
      ForeignImage::write_zeroes_locked(pos, n, may_unmap);
    }
    done += n;
  }
}

std::optional<uint64_t> VmdkImage::cluster_size() const {
  for (size_t i = 1; i < ext_.size(); ++i) {
    const Ext& a = ext_[0];
    const Ext& b = ext_[i];
    if (!(a.flat == b.flat && a.compressed == b.compressed && (a.flat || a.cluster_sectors == b.cluster_sectors)))
      return std::nullopt;
  }
  if (ext_.empty() || ext_[0].flat) return std::nullopt;
  return ext_[0].cluster_sectors * kSector;
}

nlohmann::ordered_json VmdkImage::format_specific() const {
  nlohmann::ordered_json d;
  d["cid"] = cid_;
  d["parent-cid"] = parent_cid_;
  d["create-type"] = create_type_;
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const auto& e : ext_) {
    nlohmann::ordered_json x;
    if (e.compressed) x["compressed"] = true;
    x["virtual-size"] = e.sectors * kSector;
    x["filename"] = e.display_name;
    if (!e.flat) x["cluster-size"] = e.cluster_sectors * kSector;
    x["format"] = e.type;
    arr.push_back(x);
  }
  d["extents"] = arr;
  return {{"type", "vmdk"}, {"data", d}};
}

CheckResult VmdkImage::check(RepairMode mode) {
  if (mode != RepairMode::None) throw Error("Check failed: Operation not supported", ENOTSUP);
  // qemu walks every grain; this walks the same grains in order but skips unallocated grain directory
  // entries and grain tables already checked (so a hostile image cannot make check run for hours).
  CheckResult r;
  // qemu prints the finding on stderr and fails the check with EINVAL ("Check failed: Invalid argument").
  const auto after_eof = [](uint64_t sector) {
    std::fflush(stdout);
    std::fprintf(stderr, "ERROR: cluster offset for sector %llu points after EOF\n", static_cast<unsigned long long>(sector));
    throw Error("Invalid argument", EINVAL);
  };
  std::lock_guard<std::mutex> g(mu_);
  for (auto& e : ext_) {
    const uint64_t len = e.file->length();
    if (e.flat) {
      if (e.flat_offset >= len) after_eof(e.start_sector);
      continue;
    }
    const uint64_t l1es = e.l2_size * e.cluster_sectors;
    const uint64_t spans = (e.sectors + l1es - 1) / l1es;
    std::set<uint32_t> done;
    for (uint64_t l1i = 0; l1i < spans; ++l1i) {
      const uint64_t sector = e.start_sector + l1i * l1es;
      if (l1i >= e.l1_size) {
        // qemu's check returns VMDK_ERROR (-1) here, which qemu-img reports as EPERM's text.
        std::fprintf(stderr, "ERROR: could not get cluster_offset for sector %llu\n", static_cast<unsigned long long>(sector));
        throw Error("Operation not permitted", EPERM);
      }
      const uint32_t l2off = e.l1[l1i];
      if (!l2off || !done.insert(l2off).second) continue;
      const auto& gt = load_gt(e, l2off);
      for (uint64_t i = 0; i < e.l2_size && l1i * l1es + i * e.cluster_sectors < e.sectors; ++i) {
        const uint32_t v = gt[i];
        if (!v || (e.zero_grain && v == kGteZeroed)) continue;
        if (uint64_t(v) << 9 >= len) after_eof(sector + i * e.cluster_sectors);
      }
    }
  }
  return r;
}

// -------------------------------------------------------------------------------------------- create

void write_text(HostFile& f, uint64_t off, const std::string& s) {
  f.pwrite_full(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

void init_sparse_extent(const std::string& path, uint64_t size, bool compress, bool zeroed_grain) {
  HostFile f(path, false, false, true);
  uint8_t hdr[512] = {};
  put_be32(hdr, kMagicKdmv);
  uint8_t* p = hdr + 4;
  const uint32_t version = compress ? 3 : zeroed_grain ? 2 : 1;
  const uint32_t flags = kFlagRgd | kFlagNlDetect | (compress ? kFlagCompress | kFlagMarker : 0) |
                         (zeroed_grain ? kFlagZeroGrain : 0);
  const uint64_t granularity = 128, gtes = 512;
  const uint64_t capacity = size / kSector;
  const uint64_t grains = (capacity + granularity - 1) / granularity;
  const uint64_t gt_size = (gtes * 4 + kSector - 1) / kSector;
  const uint64_t gt_count = (grains + gtes - 1) / gtes;
  const uint64_t gd_sectors = (gt_count * 4 + kSector - 1) / kSector;
  const uint64_t desc_offset = 1, desc_size = 20;
  const uint64_t rgd_offset = desc_offset + desc_size;
  const uint64_t gd_offset = rgd_offset + gd_sectors + gt_size * gt_count;
  const uint64_t grain_offset = (gd_offset + gd_sectors + gt_size * gt_count + granularity - 1) / granularity * granularity;
  put_le32(p, version);
  put_le32(p + 4, flags);
  put_le64(p + 8, capacity);
  put_le64(p + 16, granularity);
  put_le64(p + 24, desc_offset);
  put_le64(p + 32, desc_size);
  put_le32(p + 40, static_cast<uint32_t>(gtes));
  put_le64(p + 44, rgd_offset);
  put_le64(p + 52, gd_offset);
  put_le64(p + 60, grain_offset);
  p[68] = 0;   // unclean shutdown
  p[69] = 0xa; p[70] = 0x20; p[71] = 0xd; p[72] = 0xa;
  put_le16(p + 73, compress ? kCompressDeflate : 0);
  f.pwrite_full(0, std::span<const uint8_t>(hdr, 4 + 75));
  f.truncate(grain_offset << 9);
  std::vector<uint8_t> gd(gd_sectors * kSector, 0);
  for (uint64_t i = 0; i < gt_count; ++i) put_le32(&gd[i * 4], static_cast<uint32_t>(rgd_offset + gd_sectors + i * gt_size));
  f.pwrite_full(rgd_offset * kSector, gd);
  for (uint64_t i = 0; i < gt_count; ++i) put_le32(&gd[i * 4], static_cast<uint32_t>(gd_offset + gd_sectors + i * gt_size));
  f.pwrite_full(gd_offset * kSector, gd);
  f.sync();
}

void init_flat_extent(const std::string& path, uint64_t size, const std::string& prealloc) {
  HostFile f(path, false, false, true);
  f.truncate(size);
  if (prealloc == "falloc") f.allocate(0, size);
  if (prealloc == "full") {
    std::vector<uint8_t> z(1 << 20, 0);
    for (uint64_t off = 0; off < size; off += z.size())
      f.pwrite_full(off, std::span<const uint8_t>(z.data(), std::min<uint64_t>(z.size(), size - off)));
  } else {
    // Like qemu's file driver, allocate the first block so alignment probing by readers works.
    std::vector<uint8_t> z(std::min<uint64_t>(size, 4096), 0);
    if (!z.empty()) f.pwrite_full(0, z);
  }
  f.sync();
}

}  // namespace

std::unique_ptr<BlockImage> open(const std::string& path, const OpenOptions& opts) {
  auto img = std::make_unique<VmdkImage>(path, opts);
  img->open_all();
  return img;
}

void create(const std::string& path, const CreateOptions& c) {
  std::string subformat = "monolithicSparse", adapter = "ide", hwversion, toolsversion = "2147483647";
  bool compat6 = false, zeroed_grain = false;
  for (const auto& [k, v] : c.extra) {
    if (k == "subformat") subformat = v;
    else if (k == "adapter_type") adapter = v;
    else if (k == "hwversion") hwversion = v == "undefined" ? "" : v;
    else if (k == "toolsversion") toolsversion = v;
    else if (k == "compat6") compat6 = extra_bool(c, "compat6", false);
    else if (k == "zeroed_grain") zeroed_grain = extra_bool(c, "zeroed_grain", false);
    else fail("Invalid parameter '{}'", k);
  }
  if (!c.backing_format.empty() && c.backing_format != "vmdk") fail("backing_file must be a vmdk image");
  static const char* kSub[] = {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                               "streamOptimized"};
  if (std::none_of(std::begin(kSub), std::end(kSub), [&](const char* s) { return subformat == s; }))
    fail("invalid parameter value: {}", subformat);
  static const char* kAdapters[] = {"ide", "buslogic", "lsilogic", "legacyESX"};
  if (std::none_of(std::begin(kAdapters), std::end(kAdapters), [&](const char* s) { return adapter == s; }))
    fail("invalid parameter value: {}", adapter);
  if (compat6) {
    if (!hwversion.empty()) fail("compat6 cannot be enabled with hwversion set");
    hwversion = "6";
  }
  if (hwversion.empty()) hwversion = "4";
  const uint64_t size = (c.size + kSector - 1) / kSector * kSector;
  const bool split = subformat == "twoGbMaxExtentFlat" || subformat == "twoGbMaxExtentSparse";
  const bool flat = subformat == "monolithicFlat" || subformat == "twoGbMaxExtentFlat";
  const bool compress = subformat == "streamOptimized";
  const uint32_t heads = adapter == "ide" ? 16 : 255;
  if (flat && !c.backing_file.empty()) fail("Flat image can't have backing file");
  if (flat && zeroed_grain) fail("Flat image can't enable zeroed grain");

  // path = dir + prefix + postfix (".vmdk")
  std::string dir, base = path;
  if (auto slash = path.rfind('/'); slash != std::string::npos) {
    dir = path.substr(0, slash + 1);
    base = path.substr(slash + 1);
  }
  std::string prefix = base, postfix;
  if (auto dot = base.rfind('.'); dot != std::string::npos) {
    prefix = base.substr(0, dot);
    postfix = base.substr(dot);
  }
  uint32_t parent_cid = 0xffffffff;
  std::string parent_line;
  if (!c.backing_file.empty()) {
    const std::string full = resolve_backing_path(path, c.backing_file);
    OpenOptions o;
    o.read_only = true;
    o.force_share = true;
    o.open_backing = false;
    std::unique_ptr<BlockImage> b;
    try {
      b = open_image(full, o);
    } catch (const Error& e) {
      fail("Could not open '{}': {}", full, e.what());
    }
    auto* vb = dynamic_cast<ImageDetails*>(b.get());
    if (b->format() != "vmdk" || !vb) fail("Invalid backing file format: {}. Must be vmdk", b->format());
    parent_cid = vb->format_specific()["data"]["cid"].get<uint32_t>();
    parent_line = fmt::format("parentFileNameHint=\"{}\"\n", c.backing_file);
  }
  std::string lines;
  const auto add_line = [&](uint64_t sz, const std::string& fname) {
    if (flat) lines += fmt::format("RW {} FLAT \"{}\" 0\n", (sz + kSector - 1) / kSector, fname);
    else lines += fmt::format("RW {} SPARSE \"{}\"\n", (sz + kSector - 1) / kSector, fname);
  };
  const uint64_t split_size = 0x80000000ULL;
  if (!split && !flat) {
    init_sparse_extent(path, size, compress, zeroed_grain);
    add_line(size, base);
  } else {
    HostFile(path, false, false, true).truncate(0);
    uint64_t created = 0;
    int idx = 1;
    const uint64_t extent_size = split ? split_size : size;
    while (created < size) {
      const uint64_t cur = std::min(size - created, extent_size);
      const std::string rel = split ? fmt::format("{}-{}{:03d}{}", prefix, flat ? 'f' : 's', idx, postfix)
                                    : fmt::format("{}-flat{}", prefix, postfix);
      if (flat) init_flat_extent(dir + rel, cur, c.preallocation);
      else init_sparse_extent(dir + rel, cur, false, zeroed_grain);
      add_line(cur, rel);
      created += cur;
      ++idx;
    }
  }
  std::random_device rd;
  const uint32_t cid = static_cast<uint32_t>(rd());
  const std::string desc = fmt::format(
      "# Disk DescriptorFile\n"
      "version=1\n"
      "CID={:x}\n"
      "parentCID={:x}\n"
      "createType=\"{}\"\n"
      "{}"
      "\n"
      "# Extent description\n"
      "{}"
      "\n"
      "# The Disk Data Base\n"
      "#DDB\n"
      "\n"
      "ddb.virtualHWVersion = \"{}\"\n"
      "ddb.geometry.cylinders = \"{}\"\n"
      "ddb.geometry.heads = \"{}\"\n"
      "ddb.geometry.sectors = \"63\"\n"
      "ddb.adapterType = \"{}\"\n"
      "ddb.toolsVersion = \"{}\"\n",
      cid, parent_cid, subformat, parent_line, lines, hwversion, size / (63ULL * heads * kSector), heads, adapter,
      toolsversion);
  HostFile f(path, false, false);
  if (!split && !flat) {
    if (desc.size() > kDescSize) fail("VMDK descriptor too long");
    write_text(f, 0x200, desc);
  } else {
    write_text(f, 0, desc);
    f.truncate(desc.size());
  }
  f.sync();
}

}  // namespace vireo::block::vmdk
