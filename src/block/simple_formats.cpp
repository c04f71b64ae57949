#include "block/simple_formats.h"

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "block/foreign.h"
#include "common/error.h"

namespace vireo::block {

namespace {

constexpr uint64_t kSector = 512;

// -------------------------------------------------------------------------------------------------- vpc

constexpr uint32_t kVhdFixed = 2;
constexpr uint64_t kVhdMaxSectors = 0xff000000ULL;   // qemu's limit: 2040 GiB

class VpcImage final : public ForeignImage {
 public:
  VpcImage(const std::string& p, const OpenOptions& o) : ForeignImage("vpc", p, o) {}

  // As qemu 7.2's vpc_open, texts included: a footer copy at offset 0 makes the image dynamic whatever its
  // disk type says (so differencing VHDs, type 4, read as dynamic images without their parent: qemu ignores
  // sector bitmaps and parent locators), a footer found only at the end must be of a fixed disk.
  void open_all(const OpenOptions& o) {
    file_ = open_host_file(filename_, o);
    files_.push_back(file_.get());
    const uint64_t len = file_->length();
    uint8_t f[512] = {};
    if (len >= 512) file_->pread_full(0, f);
    bool dynamic = std::memcmp(f, "conectix", 8) == 0;
    if (!dynamic) {
      if (len >= 512) file_->pread_full(len - 512, f);   // fixed VHDs keep only the footer, at the end
      if (len < 512 || std::memcmp(f, "conectix", 8) != 0 || rd_be32(f + 60) != kVhdFixed)
        fail("invalid VPC image");
    }
    uint32_t sum = 0;
    for (int i = 0; i < 512; ++i) sum += (i >= 64 && i < 68) ? 0 : f[i];
    if (~sum != rd_be32(f + 64)) fail("Incorrect header checksum");
    const uint32_t type = rd_be32(f + 60);
    uint64_t sectors = uint64_t(rd_be16(f + 56)) * f[58] * f[59];
    const bool use_current = std::memcmp(f + 28, "win ", 4) == 0 || std::memcmp(f + 28, "qem2", 4) == 0 ||
                             std::memcmp(f + 28, "d2v ", 4) == 0 || std::memcmp(f + 28, "CTXS", 4) == 0 ||
                             std::memcmp(f + 28, "tap", 4) == 0 ||
                             (rd_be16(f + 56) == 65535 && f[58] == 16 && f[59] == 255);
    if (use_current) sectors = rd_be64(f + 48) / kSector;
    if (sectors > kVhdMaxSectors) throw Error(fmt::format("Could not open '{}': File too large", filename_), EFBIG);
    size_ = sectors * kSector;
    // Data is read through the BAT unless the footer says fixed (qemu decides reads by the type field).
    fixed_ = type == kVhdFixed;
    if (!dynamic) {
      if (len < size_) fail("VHD fixed image is truncated: {} bytes of data expected, file has {}", size_, len);
      return;
    }
    // Past the end of the file qemu reads zeroes: a header there has no magic.
    const uint64_t dyn = rd_be64(f + 16);
    uint8_t h[1024] = {};
    if (dyn <= len && len - dyn >= 1024) file_->pread_full(dyn, h);
    if (std::memcmp(h, "cxsparse", 8) != 0) fail("Invalid header magic");
    const uint64_t bat_off = rd_be64(h + 16);
    const uint32_t entries = rd_be32(h + 28);
    block_size_ = rd_be32(h + 32);
    if (block_size_ < kSector || (block_size_ & (block_size_ - 1))) fail("Invalid block size {}", block_size_);
    if (size_ / block_size_ > 0xffffffffULL) fail("Too many blocks");
    if (size_ > uint64_t(entries) * block_size_) fail("Page table too small");
    if (entries > (INT32_MAX / 4)) fail("Max Table Entries too large ({})", entries);
    bitmap_size_ = ((block_size_ / kSector / 8) + kSector - 1) / kSector * kSector;
    // qemu's truncation test: the BAT and every allocated block (bitmap + data) must lie within the file.
    const auto truncated = [] { fail("block-vpc: free_data_block_offset points after the end of file. The image has been truncated."); };
    const uint64_t bat_bytes = uint64_t(entries) * 4;
    if (bat_off > len || bat_bytes > len - bat_off || (bat_off + bat_bytes + kSector - 1) / kSector * kSector > len)
      truncated();
    std::vector<uint8_t> raw(bat_bytes);
    file_->pread_full(bat_off, raw);
    bat_.resize(entries);
    for (uint32_t i = 0; i < entries; ++i) {
      bat_[i] = rd_be32(&raw[i * 4]);
      if (bat_[i] != 0xffffffffu && uint64_t(bat_[i]) * kSector + bitmap_size_ + block_size_ > len) truncated();
    }
    fixed_ = false;
    fixed_reads_ = type == kVhdFixed;
  }

  std::optional<uint64_t> cluster_size() const override {
    if (fixed_ || fixed_reads_) return std::nullopt;   // qemu: no cluster size when the type field says fixed
    return block_size_;
  }

 protected:
  Map map(uint64_t offset, uint64_t max_len) override {
    Map m;
    if (fixed_ || fixed_reads_) {
      m.kind = Map::Data;
      m.file = file_.get();
      m.host_offset = offset;
      m.length = max_len;
      m.recurse = true;   // qemu recurses into the file for fixed VHDs
      return m;
    }
    const uint64_t idx = offset / block_size_, in = offset % block_size_;
    m.length = std::min<uint64_t>(max_len, block_size_ - in);
    if (idx >= bat_.size() || bat_[idx] == 0xffffffffu) {
      m.kind = Map::Zero;
      return m;
    }
    m.kind = Map::Data;
    m.file = file_.get();
    m.host_offset = uint64_t(bat_[idx]) * kSector + bitmap_size_ + in;
    return m;
  }

 private:
  std::unique_ptr<HostFile> file_;
  bool fixed_ = false;
  bool fixed_reads_ = false;   // a dynamic-parsed image whose footer says fixed: qemu reads the file raw
  uint32_t block_size_ = 0;
  uint64_t bitmap_size_ = 0;
  std::vector<uint32_t> bat_;
};

// -------------------------------------------------------------------------------------------------- vdi

constexpr uint32_t kVdiSignature = 0xbeda107f;
constexpr uint32_t kVdiUnallocated = 0xffffffffu, kVdiDiscarded = 0xfffffffeu;
constexpr uint32_t kVdiBlockSize = 1u << 20;
constexpr uint64_t kVdiBlocksMax = 0x3fffffffULL;   // qemu: (1 << 30) - 1 ... bounded by memory as well
constexpr uint64_t kVdiDiskSizeMax = kVdiBlocksMax * kVdiBlockSize;

bool null_uuid(const uint8_t* p) {
  for (int i = 0; i < 16; ++i)
    if (p[i]) return false;
  return true;
}

class VdiImage final : public ForeignImage {
 public:
  VdiImage(const std::string& p, const OpenOptions& o) : ForeignImage("vdi", p, o) {}

  void open_all(const OpenOptions& o) {
    file_ = open_host_file(filename_, o);
    files_.push_back(file_.get());
    uint8_t h[512] = {};
    file_->pread_full(0, h);
    const uint32_t sig = le32(h + 64), version = le32(h + 68);
    if (sig != kVdiSignature) fail("Image not in VDI format (bad signature {:08x})", sig);
    if (version != 0x00010001) fail("unsupported VDI image (version {}.{})", version >> 16, version & 0xffff);
    bmap_off_ = le32(h + 340);
    data_off_ = le32(h + 344);
    const uint32_t sector_size = le32(h + 360);
    const uint64_t disk_size = le64(h + 368);
    block_size_ = le32(h + 376);
    blocks_ = le32(h + 384);
    blocks_allocated_ = le32(h + 388);
    if (bmap_off_ % kSector) fail("unsupported VDI image (unaligned block map offset 0x{:x})", bmap_off_);
    if (data_off_ % kSector) fail("unsupported VDI image (unaligned data offset 0x{:x})", data_off_);
    if (sector_size != kSector) fail("unsupported VDI image (sector size {} is not {})", sector_size, kSector);
    if (block_size_ != kVdiBlockSize)
      fail("unsupported VDI image (block size {} is not {})", block_size_, kVdiBlockSize);
    if (disk_size > uint64_t(blocks_) * block_size_)
      fail("unsupported VDI image (disk size {}, image bitmap has room for {})", disk_size,
           uint64_t(blocks_) * block_size_);
    if (!null_uuid(h + 424)) fail("unsupported VDI image (non-NULL link UUID)");
    if (!null_uuid(h + 440)) fail("unsupported VDI image (non-NULL parent UUID)");
    if (blocks_ > kVdiBlocksMax) fail("unsupported VDI image (too many blocks {}, max is {})", blocks_, kVdiBlocksMax);
    if (disk_size > kVdiDiskSizeMax)
      fail("Unsupported VDI image size (size is 0x{:x}, max supported is 0x{:x})", disk_size, kVdiDiskSizeMax);
    size_ = (disk_size + kSector - 1) / kSector * kSector;
    const uint64_t len = file_->length();
    const uint64_t bytes = uint64_t(blocks_) * 4;
    if (bmap_off_ > len || bytes > len - bmap_off_) fail("VDI block map is beyond the end of the file");
    std::vector<uint8_t> raw(bytes);
    file_->pread_full(bmap_off_, raw);
    bmap_.resize(blocks_);
    for (uint32_t i = 0; i < blocks_; ++i) bmap_[i] = le32(&raw[i * 4]);
  }

  std::optional<uint64_t> cluster_size() const override { return block_size_; }
  bool can_check() const override { return true; }

  CheckResult check(RepairMode mode) override {
    // qemu's vdi check cannot repair: -r is ENOTSUP, which qemu-img reports as no check support.
    if (mode != RepairMode::None) throw Error("This image format does not support checks", ENOTSUP);
    CheckResult r;
    std::vector<uint32_t> owner(blocks_, kVdiUnallocated);
    uint32_t allocated = 0;
    for (uint32_t i = 0; i < blocks_; ++i) {
      const uint32_t e = bmap_[i];
      if (e == kVdiUnallocated || e == kVdiDiscarded) continue;
      if (e < blocks_) {
        if (owner[e] == kVdiUnallocated) {
          owner[e] = i;
        } else {
          r.messages.push_back(fmt::format("ERROR: block index {} also used by {}", owner[e], i));
          r.corruptions++;
        }
        ++allocated;
      } else {
        r.messages.push_back(fmt::format("ERROR: block index {} too large, is {}", i, e));
        r.corruptions++;
      }
    }
    if (allocated != blocks_allocated_) {
      r.messages.push_back(
          fmt::format("ERROR: allocated blocks mismatch, is {}, should be {}", allocated, blocks_allocated_));
      r.corruptions++;
    }
    return r;
  }

 protected:
  Map map(uint64_t offset, uint64_t max_len) override {
    const uint64_t idx = offset / block_size_, in = offset % block_size_;
    Map m;
    m.length = std::min<uint64_t>(max_len, block_size_ - in);
    const uint32_t e = idx < bmap_.size() ? bmap_[idx] : kVdiUnallocated;
    if (e == kVdiUnallocated || e == kVdiDiscarded) {
      m.kind = Map::Zero;
      return m;
    }
    m.kind = Map::Data;
    m.file = file_.get();
    m.host_offset = data_off_ + uint64_t(e) * block_size_ + in;
    m.recurse = true;   // qemu's vdi reports BDRV_BLOCK_RECURSE: holes of the file show as zero
    return m;
  }

 private:
  std::unique_ptr<HostFile> file_;
  uint32_t bmap_off_ = 0, data_off_ = 0, block_size_ = 0, blocks_ = 0, blocks_allocated_ = 0;
  std::vector<uint32_t> bmap_;
};

// -------------------------------------------------------------------------------------------------- qed

constexpr uint32_t kQedMagic = 0x00444551;   // "QED\0"
constexpr uint64_t kQedFBacking = 1, kQedFNeedCheck = 2, kQedFRawBacking = 4;
constexpr uint64_t kQedFeatures = kQedFBacking | kQedFNeedCheck | kQedFRawBacking;
constexpr uint64_t kQedZero = 1;

bool pow2(uint64_t v) { return v && !(v & (v - 1)); }

class QedImage final : public ForeignImage {
 public:
  QedImage(const std::string& p, const OpenOptions& o) : ForeignImage("qed", p, o) {}

  void open_all(const OpenOptions& o) {
    file_ = open_host_file(filename_, o);
    files_.push_back(file_.get());
    uint8_t h[64] = {};
    file_->pread_full(0, h);
    if (le32(h) != kQedMagic) fail("Image not in QED format");
    cluster_size_ = le32(h + 4);
    table_size_ = le32(h + 8);
    header_size_ = le32(h + 12);
    const uint64_t features = le64(h + 16);
    l1_offset_ = le64(h + 40);
    size_ = le64(h + 48);
    const uint32_t bname_off = le32(h + 56), bname_size = le32(h + 60);
    if (features & ~kQedFeatures) fail("Unsupported QED features: {:x}", features & ~kQedFeatures);
    if (!pow2(cluster_size_) || cluster_size_ < 4096 || cluster_size_ > (64u << 20))
      fail("Invalid QED cluster size {}", cluster_size_);
    if (!pow2(table_size_) || table_size_ > 16) fail("Invalid QED table size {}", table_size_);
    entries_ = uint64_t(table_size_) * cluster_size_ / 8;
    const uint64_t max_size = entries_ * entries_ * cluster_size_;
    if (size_ % kSector || size_ > max_size) fail("Invalid QED image size {}", size_);
    if (header_size_ == 0 || uint64_t(header_size_) * cluster_size_ > (64ULL << 20))
      fail("Invalid QED header size {}", header_size_);
    if (l1_offset_ % cluster_size_ || l1_offset_ == 0) fail("Invalid QED L1 table offset {}", l1_offset_);
    const uint64_t len = file_->length();
    if (l1_offset_ > len) fail("QED L1 table offset {} is beyond the end of the file", l1_offset_);
    if (features & kQedFBacking) {
      if (uint64_t(bname_off) + bname_size > uint64_t(header_size_) * cluster_size_ || bname_size > 1023)
        fail("QED backing file name is out of the header's bounds");
      std::string name(bname_size, '\0');
      file_->pread_full(bname_off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(name.data()), bname_size));
      backing_name_ = name;
      backing_format_ = (features & kQedFRawBacking) ? "raw" : "";
    }
    l1_ = read_table(l1_offset_);
    if (!backing_name_.empty()) open_backing(backing_name_, backing_format_, o);
  }

  std::optional<uint64_t> cluster_size() const override { return cluster_size_; }
  std::string backing_file_name() const override { return backing_name_; }
  std::string backing_file_format() const override { return backing_format_; }
  bool can_check() const override { return true; }

  CheckResult check(RepairMode mode) override {
    CheckResult r;
    std::lock_guard<std::mutex> g(mu_);
    const uint64_t len = file_->length();
    const uint64_t nclusters = (len + cluster_size_ - 1) / cluster_size_;
    std::vector<bool> used(nclusters, false);
    const auto mark = [&](uint64_t off, uint64_t n) {
      for (uint64_t c = off / cluster_size_; c < off / cluster_size_ + n && c < nclusters; ++c) used[c] = true;
    };
    mark(0, header_size_);
    mark(l1_offset_, table_size_);
    const auto valid = [&](uint64_t off) { return off % cluster_size_ == 0 && off >= uint64_t(header_size_) * cluster_size_ && off < len; };
    for (uint64_t i = 0; i < l1_.size(); ++i) {
      const uint64_t l2off = l1_[i];
      if (l2off == 0) continue;
      if (!valid(l2off)) {
        r.corruptions++;
        continue;
      }
      mark(l2off, table_size_);
      const auto l2 = read_table(l2off);
      uint64_t last = 0;
      for (uint64_t off : l2) {
        if (off == 0 || off == kQedZero) continue;
        r.allocated_clusters++;
        if (last && last + cluster_size_ != off) r.fragmented_clusters++;
        last = off;
        if (!valid(off)) {
          r.corruptions++;
          continue;
        }
        mark(off, 1);
      }
    }
    r.total_clusters = (size_ + cluster_size_ - 1) / cluster_size_;
    for (uint64_t c = header_size_; c < nclusters; ++c) {
      if (!used[c]) {
        r.leaks++;
        r.messages.push_back(fmt::format("Leaked cluster {}", c));
      }
    }
    if (mode != RepairMode::None && (r.corruptions || r.leaks)) throw Error("Operation not supported", ENOTSUP);
    return r;
  }

 protected:
  std::vector<uint64_t> read_table(uint64_t off) {
    std::vector<uint8_t> raw(entries_ * 8);
    file_->pread_full(off, raw);
    std::vector<uint64_t> t(entries_);
    for (uint64_t i = 0; i < entries_; ++i) t[i] = le64(&raw[i * 8]);
    return t;
  }

  Map map(uint64_t offset, uint64_t max_len) override {
    const uint64_t cidx = offset / cluster_size_, in = offset % cluster_size_;
    Map m;
    m.length = std::min<uint64_t>(max_len, cluster_size_ - in);
    const uint64_t l1i = cidx / entries_, l2i = cidx % entries_;
    const uint64_t l2off = l1i < l1_.size() ? l1_[l1i] : 0;
    if (l2off == 0) return m;   // Unallocated
    if (l2off % cluster_size_ || l2off >= file_->length())
      throw Error(fmt::format("read {}: invalid QED L2 table offset {}", filename_, l2off), EINVAL);
    auto it = l2_cache_.find(l2off);
    if (it == l2_cache_.end()) {
      if (l2_cache_.size() >= 64) l2_cache_.clear();
      it = l2_cache_.emplace(l2off, read_table(l2off)).first;
    }
    const uint64_t e = it->second[l2i];
    if (e == 0) return m;
    if (e == kQedZero) {
      m.kind = Map::Zero;
      return m;
    }
    if (e % cluster_size_ || e >= file_->length())
      throw Error(fmt::format("read {}: invalid QED cluster offset {}", filename_, e), EINVAL);
    m.kind = Map::Data;
    m.file = file_.get();
    m.host_offset = e + in;
    return m;
  }

 private:
  std::unique_ptr<HostFile> file_;
  uint32_t cluster_size_ = 0, table_size_ = 0, header_size_ = 0;
  uint64_t entries_ = 0, l1_offset_ = 0;
  std::vector<uint64_t> l1_;
  std::map<uint64_t, std::vector<uint64_t>> l2_cache_;
  std::string backing_name_, backing_format_;
};

}  // namespace

bool probe_vpc(std::span<const uint8_t> h) { return h.size() >= 8 && std::memcmp(h.data(), "conectix", 8) == 0; }
bool probe_vdi(std::span<const uint8_t> h) { return h.size() >= 68 && le32(h.data() + 64) == kVdiSignature; }
bool probe_qed(std::span<const uint8_t> h) { return h.size() >= 4 && le32(h.data()) == kQedMagic; }

std::unique_ptr<BlockImage> open_vpc(const std::string& path, const OpenOptions& opts) {
  auto img = std::make_unique<VpcImage>(path, opts);
  img->open_all(opts);
  return img;
}
std::unique_ptr<BlockImage> open_vdi(const std::string& path, const OpenOptions& opts) {
  auto img = std::make_unique<VdiImage>(path, opts);
  img->open_all(opts);
  return img;
}
std::unique_ptr<BlockImage> open_qed(const std::string& path, const OpenOptions& opts) {
  auto img = std::make_unique<QedImage>(path, opts);
  img->open_all(opts);
  return img;
}

}  // namespace vireo::block
