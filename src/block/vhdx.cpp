#include "block/vhdx.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "block/crypto.h"
#include "block/foreign.h"
#include "common/error.h"

namespace vireo::block::vhdx {

namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * 1024, GiB = MiB * 1024, TiB = GiB * 1024;
constexpr uint64_t kHeader1 = 64 * KiB, kHeader2 = 128 * KiB, kRegion1 = 192 * KiB, kRegion2 = 256 * KiB;
constexpr uint64_t kHeaderSectionEnd = 1 * MiB;
constexpr uint64_t kMaxSize = 64 * TiB;

// GUIDs as stored (the first three fields little endian).
using Guid = std::array<uint8_t, 16>;
Guid guid(const char* hex) {
  Guid g{};
  for (int i = 0; i < 16; ++i) {
    unsigned v = 0;
    std::sscanf(hex + 2 * i, "%2x", &v);
    g[i] = static_cast<uint8_t>(v);
  }
  return g;
}
const Guid kBatGuid = guid("6677c22d23f600429d64115e9bfd4a08");
const Guid kMetaGuid = guid("06a27c8b90479a4bb8fe575f050f886e");
const Guid kFileParams = guid("3767a1ca36fa434db3b633f0aa44e76b");
const Guid kVirtualSize = guid("2442a52f1bcd7648b2115dbed83bf4b8");
const Guid kPage83 = guid("ab12cabee6b2234593efc309e000c746");
const Guid kLogicalSector = guid("1dbf41816fa90947ba47f233a8faab5f");
const Guid kPhysicalSector = guid("c748a3cd5d4471449cc9e9885251c556");
const Guid kParentLocator = guid("2d5fd3a80bb34d45abf7d3d84834ab0c");

bool same(const uint8_t* p, const Guid& g) { return std::memcmp(p, g.data(), 16) == 0; }
bool zero16(const uint8_t* p) {
  for (int i = 0; i < 16; ++i)
    if (p[i]) return false;
  return true;
}

enum : uint64_t {
  kNotPresent = 0, kUndefined = 1, kZero = 2, kUnmapped = 3, kFullyPresent = 6, kPartiallyPresent = 7
};
constexpr uint64_t kStateMask = 7, kOffsetMask = 0xfffffffffff00000ULL;

uint32_t checksum_of(std::span<const uint8_t> block) {
  // The checksum field itself counts as zero.
  static const uint8_t zero[4] = {};
  if (block.size() < 8) return 0;
  uint32_t crc = crc32c(block.subspan(0, 4));
  crc = crc32c(std::span<const uint8_t>(zero, 4), crc);
  return crc32c(block.subspan(8), crc);
}

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint32_t default_block_size(uint64_t size) {
  if (size > 32 * TiB) return 64 * MiB;
  if (size > 100 * GiB) return 32 * MiB;
  if (size > 1 * GiB) return 16 * MiB;
  return 8 * MiB;
}

}  // namespace

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) {
  // CRC-32C (Castagnoli, reflected polynomial 0x82f63b78): the checksum VHDX specifies. A checksum, not a
  // cryptographic primitive; none of the installed libraries offers it.
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (uint8_t b : data) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

bool probe(std::span<const uint8_t> h) { return h.size() >= 8 && std::memcmp(h.data(), "vhdxfile", 8) == 0; }

std::optional<Header> parse_header(std::span<const uint8_t> b) {
  if (b.size() < 4096 || std::memcmp(b.data(), "head", 4) != 0) return std::nullopt;
  if (le32(b.data() + 4) != checksum_of(b.subspan(0, 4096))) return std::nullopt;
  Header h;
  h.seq = le64(b.data() + 8);
  std::memcpy(h.file_write_guid, b.data() + 16, 16);
  std::memcpy(h.data_write_guid, b.data() + 32, 16);
  std::memcpy(h.log_guid, b.data() + 48, 16);
  h.log_version = le16(b.data() + 64);
  h.version = le16(b.data() + 66);
  h.log_length = le32(b.data() + 68);
  h.log_offset = le64(b.data() + 72);
  return h;
}

Regions parse_region_table(std::span<const uint8_t> t, uint64_t file_len) {
  if (t.size() < 64 * KiB || std::memcmp(t.data(), "regi", 4) != 0) fail("VHDX region table signature is invalid");
  if (le32(t.data() + 4) != checksum_of(t.subspan(0, 64 * KiB))) fail("VHDX region table checksum is invalid");
  const uint32_t n = le32(t.data() + 8);
  if (n > 2047) fail("VHDX region table has too many entries ({})", n);
  Regions r;
  bool bat = false, meta = false;
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* e = t.data() + 16 + 32 * i;
    const uint64_t off = le64(e + 16);
    const uint32_t len = le32(e + 24), flags = le32(e + 28);
    if (off % MiB || len % MiB) fail("VHDX region {} is not aligned to 1 MiB", i);
    if (off < kHeaderSectionEnd || off > file_len || len > file_len - off)
      fail("VHDX region {} ({}+{}) is outside the file", i, off, len);
    if (same(e, kBatGuid)) {
      if (bat) fail("VHDX region table lists the BAT twice");
      bat = true;
      r.bat_offset = off;
      r.bat_length = len;
    } else if (same(e, kMetaGuid)) {
      if (meta) fail("VHDX region table lists the metadata twice");
      meta = true;
      r.meta_offset = off;
      r.meta_length = len;
    } else if (flags & 1) {
      fail("VHDX region {} is required but unknown", i);
    }
  }
  if (!bat || !meta) fail("VHDX region table lacks the {} region", bat ? "metadata" : "BAT");
  if (r.bat_offset < r.meta_offset + r.meta_length && r.meta_offset < r.bat_offset + r.bat_length)
    fail("VHDX BAT and metadata regions overlap");
  return r;
}

Metadata parse_metadata(std::span<const uint8_t> region) {
  if (region.size() < 64 * KiB || std::memcmp(region.data(), "metadata", 8) != 0)
    fail("VHDX metadata table signature is invalid");
  const uint16_t n = le16(region.data() + 10);
  if (n > 2047) fail("VHDX metadata table has too many entries ({})", n);
  Metadata m;
  bool have_params = false, have_size = false, have_lss = false, have_pss = false, have_page83 = false;
  bool have_locator = false;
  for (uint16_t i = 0; i < n; ++i) {
    const uint8_t* e = region.data() + 32 + 32 * i;
    const uint32_t off = le32(e + 16), len = le32(e + 20), flags = le32(e + 24);
    if (len == 0) continue;
    if (off < 64 * KiB || off > region.size() || len > region.size() - off)
      fail("VHDX metadata item {} is outside the metadata region", i);
    const uint8_t* d = region.data() + off;
    if (same(e, kFileParams)) {
      if (len < 8) fail("VHDX file parameters item is too short");
      m.block_size = le32(d);
      m.leave_blocks_allocated = le32(d + 4) & 1;
      m.has_parent = le32(d + 4) & 2;
      have_params = true;
    } else if (same(e, kVirtualSize)) {
      if (len < 8) fail("VHDX virtual disk size item is too short");
      m.virtual_size = le64(d);
      have_size = true;
    } else if (same(e, kLogicalSector)) {
      if (len < 4) fail("VHDX logical sector size item is too short");
      m.logical_sector = le32(d);
      have_lss = true;
    } else if (same(e, kPhysicalSector)) {
      if (len < 4) fail("VHDX physical sector size item is too short");
      m.physical_sector = le32(d);
      have_pss = true;
    } else if (same(e, kPage83)) {
      have_page83 = true;
    } else if (same(e, kParentLocator)) {
      have_locator = true;
    } else if (flags & 4) {
      throw Error(fmt::format("VHDX metadata item {} is required but unknown", i), ENOTSUP);
    }
  }
  // The errno values are qemu 7.2's for these cases (the open reports them as qemu does).
  if (!have_params || !have_size || !have_lss || !have_pss || !have_page83)
    throw Error("VHDX metadata lacks a required item", ENOTSUP);
  // qemu 7.2 does not read differencing VHDX images (its parent locator parsing is a TODO).
  if (m.has_parent && have_locator) throw Error("Differencing VHDX images are not supported", ENOTSUP);
  if (m.has_parent) throw Error("VHDX image has a parent but no parent locator", EINVAL);
  if (m.block_size < MiB || m.block_size > 256 * MiB || (m.block_size & (m.block_size - 1)))
    fail("VHDX block size {} is invalid (a power of two from 1 MiB to 256 MiB)", m.block_size);
  if (m.logical_sector != 512 && m.logical_sector != 4096)
    fail("VHDX logical sector size {} is invalid", m.logical_sector);
  if (m.virtual_size > kMaxSize || m.virtual_size % m.logical_sector)
    fail("VHDX virtual disk size {} is invalid", m.virtual_size);
  return m;
}

namespace {

class VhdxImage final : public ForeignImage {
 public:
  VhdxImage(const std::string& p, const OpenOptions& o) : ForeignImage("vhdx", p, o) {}
  ~VhdxImage() override {
    try {
      if (!read_only_) {
        std::lock_guard<std::mutex> g(mu_);
        flush_locked();
      }
    } catch (...) {
    }
  }

  void open_all(const OpenOptions& o) {
    file_ = open_host_file(filename_, o);
    files_.push_back(file_.get());
    const uint64_t len = file_->length();
    uint8_t id[8];
    file_->pread_full(0, id);
    if (std::memcmp(id, "vhdxfile", 8) != 0) fail("Image not in VHDX format");
    std::vector<uint8_t> b(64 * KiB);
    file_->pread_full(kHeader1, std::span<uint8_t>(b.data(), 4096));
    auto h1 = parse_header(std::span<const uint8_t>(b.data(), 4096));
    file_->pread_full(kHeader2, std::span<uint8_t>(b.data(), 4096));
    auto h2 = parse_header(std::span<const uint8_t>(b.data(), 4096));
    if (!h1 && !h2) fail("No valid VHDX header found");
    if (h1 && (!h2 || h1->seq >= h2->seq)) {
      hdr_ = *h1;
      cur_slot_ = 0;
    } else {
      hdr_ = *h2;
      cur_slot_ = 1;
    }
    if (hdr_.version != 1) fail("VHDX version {} is not supported", hdr_.version);
    open_log(o, len);
    file_->pread_full(kRegion1, b);
    std::optional<Regions> r;
    try {
      r = parse_region_table(b, len);
    } catch (const Error&) {
      file_->pread_full(kRegion2, b);
      r = parse_region_table(b, len);
    }
    reg_ = *r;
    std::vector<uint8_t> meta(reg_.meta_length);
    file_->pread_full(reg_.meta_offset, meta);
    try {
      md_ = parse_metadata(meta);
    } catch (const Error& e) {
      if (!e.sys_errno()) throw;
      throw Error(fmt::format("Could not open '{}': {}", filename_, std::strerror(e.sys_errno())), e.sys_errno());
    }
    size_ = md_.virtual_size;
    chunk_ratio_ = (8ULL * MiB * md_.logical_sector) / md_.block_size;
    data_blocks_ = (size_ + md_.block_size - 1) / md_.block_size;
    const uint64_t entries = data_blocks_ ? data_blocks_ + (data_blocks_ - 1) / chunk_ratio_ : 0;
    if (entries * 8 > reg_.bat_length) fail("VHDX BAT region is too small for the disk size");
    std::vector<uint8_t> raw(entries * 8);
    file_->pread_full(reg_.bat_offset, raw);
    bat_.resize(entries);
    for (uint64_t i = 0; i < entries; ++i) bat_[i] = le64(&raw[i * 8]);
  }

  // [MS-VHDX] 2.3.3: a log with an active sequence is replayed before anything else is read. As in QEMU, a
  // read-only open refuses such an image (its hint names the command that replays it) and a defective log
  // fails the open with QEMU's errno text (the specific reason is in the log functions' errors).
  void open_log(const OpenOptions& o, uint64_t len) {
    const auto qemu_error = [&](const Error& e) {
      throw Error(fmt::format("Could not open '{}': {}", filename_, std::strerror(e.sys_errno() ? e.sys_errno() : EINVAL)),
                  e.sys_errno() ? e.sys_errno() : EINVAL);
    };
    // QEMU checks the log's place and version even when no log is pending.
    if (hdr_.log_offset < kHeaderSectionEnd || hdr_.log_offset % MiB || hdr_.log_version != 0)
      qemu_error(Error(fmt::format("VHDX log at {} version {} is invalid", hdr_.log_offset, hdr_.log_version), EINVAL));
    if (zero16(hdr_.log_guid) || hdr_.log_length == 0) return;
    const uint64_t log_offset = hdr_.log_offset;
    const LogReader rd = [&, log_offset, len](uint64_t pos, std::span<uint8_t> sector) {
      // Past the end of the file the log reads as zeroes (no entry), as QEMU's reads do.
      const uint64_t at = log_offset + pos;
      const uint64_t have = at >= len ? 0 : std::min<uint64_t>(sector.size(), len - at);
      if (have) file_->pread_full(at, sector.subspan(0, have));
      std::memset(sector.data() + have, 0, sector.size() - have);
    };
    std::vector<LogEntry> seq;
    try {
      seq = find_log_sequence(rd, hdr_.log_length, hdr_.log_guid);
    } catch (const Error& e) {
      qemu_error(e);
    }
    if (seq.empty()) return;   // stale entries only: nothing to replay (QEMU opens such images too)
    if (o.read_only)
      fail("VHDX image file '{}' opened read-only, but contains a log that needs to be replayed\n"
           "To replay the log, run:\nqemu-img check -r all '{}'", filename_, filename_);
    try {
      check_log_replay(rd, seq, len, hdr_.log_offset, hdr_.log_length);
    } catch (const Error& e) {
      qemu_error(e);
    }
    replay_log(*file_, rd, seq);   // ends with an fdatasync
    // Only now is the log emptied (a zero log GUID): a crash before this replays the same entries again.
    std::memset(hdr_.log_guid, 0, 16);
    write_headers();
    log_replayed_ = true;
  }

  std::optional<uint64_t> cluster_size() const override { return md_.block_size; }
  bool can_check() const override { return true; }

  CheckResult check(RepairMode) override {
    CheckResult r;
    // QEMU counts a log replayed by this (read-write) open as one repaired corruption.
    if (log_replayed_) r.corruptions_fixed++;
    std::lock_guard<std::mutex> g(mu_);
    const uint64_t len = file_->length();
    std::vector<std::pair<uint64_t, uint64_t>> used = {{0, kHeaderSectionEnd},
                                                       {hdr_.log_offset, hdr_.log_length},
                                                       {reg_.bat_offset, reg_.bat_length},
                                                       {reg_.meta_offset, reg_.meta_length}};
    std::map<uint64_t, uint64_t> blocks;   // offset -> BAT index
    for (uint64_t b = 0; b < data_blocks_; ++b) {
      const uint64_t i = b + b / chunk_ratio_;
      if ((bat_[i] & kStateMask) != kFullyPresent) continue;
      const uint64_t off = bat_[i] & kOffsetMask;
      const uint64_t blen = std::min<uint64_t>(md_.block_size, size_ - b * md_.block_size);
      if (off + blen > len) {
        r.messages.push_back(fmt::format(
            "VHDX BAT entry {} start offset {} points after end of file ({}). Image has probably been truncated.", i,
            off, len));
        r.corruptions++;
        continue;
      }
      bool overlap = false;
      for (const auto& [s, l] : used)
        if (off < s + l && s < off + md_.block_size) overlap = true;
      auto it = blocks.lower_bound(off);
      if (it != blocks.end() && it->first < off + md_.block_size) overlap = true;
      if (it != blocks.begin() && std::prev(it)->first + md_.block_size > off) overlap = true;
      if (overlap) {
        r.messages.push_back(fmt::format("VHDX BAT entry {} offset {} overlaps with other metadata or data", i, off));
        r.corruptions++;
        continue;
      }
      blocks[off] = i;
    }
    return r;
  }

 protected:
  Map map(uint64_t offset, uint64_t max_len) override {
    const uint64_t b = offset / md_.block_size, in = offset % md_.block_size;
    Map m;
    m.length = std::min<uint64_t>(max_len, md_.block_size - in);
    const uint64_t e = bat_[b + b / chunk_ratio_];
    switch (e & kStateMask) {
      case kFullyPresent:
        m.kind = Map::Data;
        m.file = file_.get();
        m.host_offset = (e & kOffsetMask) + in;
        if ((e & kOffsetMask) < kHeaderSectionEnd)
          throw Error(fmt::format("read {}: VHDX BAT entry {} points into the file header", filename_, b), EIO);
        break;
      case kPartiallyPresent:
        throw Error(fmt::format("read {}: partially present VHDX blocks need a parent image", filename_), ENOTSUP);
      default: m.kind = Map::Zero; break;
    }
    return m;
  }

  // qemu's vhdx has no block status: every range is reported as data without an offset.
  Extent status_override(uint64_t offset, uint64_t len) {
    Extent e;
    e.offset = offset;
    e.length = len;
    e.data = true;
    e.allocated = true;
    return e;
  }

 public:
  Extent block_status(uint64_t offset, uint64_t max_length) override {
    if (offset >= size_)
      throw Error(fmt::format("block status {}: offset {} is beyond the end", filename_, offset), EINVAL);
    return status_override(offset, std::min(max_length, size_ - offset));
  }

 protected:
  void first_write() {
    if (headers_updated_) return;
    headers_updated_ = true;
    crypto::random_bytes(std::span<uint8_t>(hdr_.file_write_guid, 16));
    crypto::random_bytes(std::span<uint8_t>(hdr_.data_write_guid, 16));
    write_headers();
  }

  void write_headers() {
    // Both copies, the stale slot first, each with a higher sequence number (a crash leaves one valid).
    for (int k = 0; k < 2; ++k) {
      const int slot = (cur_slot_ + 1 + k) % 2;
      hdr_.seq++;
      std::vector<uint8_t> b(4096, 0);
      std::memcpy(b.data(), "head", 4);
      put_le64(&b[8], hdr_.seq);
      std::memcpy(&b[16], hdr_.file_write_guid, 16);
      std::memcpy(&b[32], hdr_.data_write_guid, 16);
      std::memcpy(&b[48], hdr_.log_guid, 16);
      put_le16(&b[64], hdr_.log_version);
      put_le16(&b[66], hdr_.version);
      put_le32(&b[68], hdr_.log_length);
      put_le64(&b[72], hdr_.log_offset);
      put_le32(&b[4], crc32c(b));
      file_->pwrite_full(slot ? kHeader2 : kHeader1, b);
      file_->sync();
    }
  }

  void write_locked(uint64_t offset, std::span<const uint8_t> buf) override {
    first_write();
    size_t done = 0;
    while (done < buf.size()) {
      const uint64_t pos = offset + done;
      const uint64_t b = pos / md_.block_size, in = pos % md_.block_size;
      const uint64_t n = std::min<uint64_t>(buf.size() - done, md_.block_size - in);
      const uint64_t idx = b + b / chunk_ratio_;
      uint64_t& e = bat_[idx];
      if ((e & kStateMask) == kPartiallyPresent)
        throw Error(fmt::format("write {}: partially present VHDX blocks need a parent image", filename_), ENOTSUP);
      if ((e & kStateMask) != kFullyPresent) {
        // New block at the end of the file (1 MiB aligned); the file is extended first so the rest of the
        // block is a hole that reads as zeroes.
        const uint64_t at = round_up(file_->length(), MiB);
        file_->truncate(at + md_.block_size);
        e = at | kFullyPresent;
        dirty_.push_back(idx);
      }
      file_->pwrite_full((e & kOffsetMask) + in, buf.subspan(done, n));
      done += n;
    }
  }

  void write_zeroes_locked(uint64_t offset, uint64_t length, bool may_unmap) override {
    uint64_t done = 0;
    while (done < length) {
      const uint64_t pos = offset + done;
      const uint64_t b = pos / md_.block_size, in = pos % md_.block_size;
      const uint64_t n = std::min<uint64_t>(length - done, md_.block_size - in);
      const uint64_t idx = b + b / chunk_ratio_;
      const uint64_t state = bat_[idx] & kStateMask;
      if (state != kFullyPresent && state != kPartiallyPresent) {
        // already reads as zeroes
      } else if (in == 0 && n == md_.block_size && !md_.leave_blocks_allocated) {
        first_write();
        bat_[idx] = kZero;   // the block's space is leaked to the file (as qemu does; VHDX has no free map)
        dirty_.push_back(idx);
      } else {
        ForeignImage::write_zeroes_locked(pos, n, may_unmap);
      }
      done += n;
    }
  }

  void flush_locked() override {
    file_->sync();   // data before the BAT entries that point at it
    if (dirty_.empty()) return;
    std::sort(dirty_.begin(), dirty_.end());
    dirty_.erase(std::unique(dirty_.begin(), dirty_.end()), dirty_.end());
    for (uint64_t i : dirty_) {
      uint8_t v[8];
      put_le64(v, bat_[i]);
      file_->pwrite_full(reg_.bat_offset + i * 8, v);
    }
    dirty_.clear();
    file_->sync();
  }

 private:
  std::unique_ptr<HostFile> file_;
  Header hdr_;
  int cur_slot_ = 0;
  Regions reg_;
  Metadata md_;
  uint64_t chunk_ratio_ = 1, data_blocks_ = 0;
  std::vector<uint64_t> bat_;
  std::vector<uint64_t> dirty_;
  bool headers_updated_ = false;
  bool log_replayed_ = false;
};

void put_guid(uint8_t* p, const Guid& g) { std::memcpy(p, g.data(), 16); }

}  // namespace

std::unique_ptr<BlockImage> open(const std::string& path, const OpenOptions& opts) {
  auto img = std::make_unique<VhdxImage>(path, opts);
  img->open_all(opts);
  return img;
}

void create(const std::string& path, const CreateOptions& c) {
  uint64_t log_size = 1 * MiB, block_size = 0;
  std::string subformat = "dynamic";
  bool zero_blocks = true;
  // qemu's size syntax (the CLI layer has validated the values).
  const auto size_opt = [&](const char* name, uint64_t def) -> uint64_t {
    auto v = extra_option(c, name);
    if (!v) return def;
    uint64_t mult = 1;
    std::string s = *v;
    if (!s.empty() && std::string("kKmMgGtT").find(s.back()) != std::string::npos) {
      const char u = static_cast<char>(std::tolower(s.back()));
      mult = u == 'k' ? KiB : u == 'm' ? MiB : u == 'g' ? GiB : TiB;
      s.pop_back();
    } else if (!s.empty() && (s.back() == 'b' || s.back() == 'B')) {
      s.pop_back();
    }
    char* end = nullptr;
    const unsigned long long n = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end) fail("Parameter '{}' expects a size", name);
    return n * mult;
  };
  log_size = size_opt("log_size", 1 * MiB);
  block_size = size_opt("block_size", 0);
  if (auto s = extra_option(c, "subformat")) subformat = *s;
  zero_blocks = extra_bool(c, "block_state_zero", true);
  for (const auto& [k, v] : c.extra) {
    (void)v;
    if (k != "log_size" && k != "block_size" && k != "subformat" && k != "block_state_zero")
      fail("Invalid parameter '{}'", k);
  }
  if (c.size > kMaxSize) fail("Image size too large; max of 64TB");
  if (subformat != "dynamic" && subformat != "fixed") fail("Parameter 'subformat' does not accept value '{}'", subformat);
  const bool fixed = subformat == "fixed";
  // qemu rounds the log to 1 MiB and the block size to a power of two in [1 MiB, 256 MiB].
  if (log_size < MiB) log_size = MiB;
  log_size = round_up(log_size, MiB);
  if (log_size > 0xffffffffULL) fail("Log size must be smaller than 4 GB");
  if (block_size == 0) block_size = default_block_size(c.size);
  block_size = round_up(block_size, MiB);
  if (block_size > 256 * MiB) fail("Block size must not exceed 256 MB");
  if (block_size & (block_size - 1)) fail("Block size must be a power of two");
  const uint64_t size = round_up(c.size, 512);

  const uint64_t chunk_ratio = (8ULL * MiB * 512) / block_size;
  const uint64_t blocks = (size + block_size - 1) / block_size;
  const uint64_t entries = blocks ? blocks + (blocks - 1) / chunk_ratio : 0;
  const uint64_t log_offset = kHeaderSectionEnd;
  const uint64_t bat_offset = log_offset + log_size;
  const uint64_t bat_length = std::max<uint64_t>(MiB, round_up(entries * 8, MiB));
  const uint64_t meta_offset = bat_offset + bat_length, meta_length = MiB;
  const uint64_t data_offset = meta_offset + 5 * MiB;

  HostFile f(path, false, false, true);
  // File type identifier: signature and creator (UTF-16LE).
  std::vector<uint8_t> id(64 * KiB, 0);
  std::memcpy(id.data(), "vhdxfile", 8);
  const char* creator = "vireo";
  for (size_t i = 0; creator[i]; ++i) id[8 + 2 * i] = static_cast<uint8_t>(creator[i]);
  f.pwrite_full(0, id);
  // Region tables (both copies identical).
  std::vector<uint8_t> rt(64 * KiB, 0);
  std::memcpy(rt.data(), "regi", 4);
  put_le32(&rt[8], 2);
  put_guid(&rt[16], kBatGuid);
  put_le64(&rt[32], bat_offset);
  put_le32(&rt[40], static_cast<uint32_t>(bat_length));
  put_guid(&rt[48], kMetaGuid);
  put_le64(&rt[64], meta_offset);
  put_le32(&rt[72], static_cast<uint32_t>(meta_length));
  put_le32(&rt[4], crc32c(rt));
  f.pwrite_full(kRegion1, rt);
  f.pwrite_full(kRegion2, rt);
  // Metadata.
  std::vector<uint8_t> md(64 * KiB + 64, 0);
  std::memcpy(md.data(), "metadata", 8);
  put_le16(&md[10], 5);
  struct Item {
    const Guid* g;
    uint32_t off, len, flags;
  } items[] = {{&kFileParams, 65536, 8, 4}, {&kVirtualSize, 65544, 8, 6}, {&kPage83, 65552, 16, 6},
               {&kLogicalSector, 65568, 4, 6}, {&kPhysicalSector, 65572, 4, 6}};
  for (int i = 0; i < 5; ++i) {
    uint8_t* e = &md[32 + 32 * i];
    put_guid(e, *items[i].g);
    put_le32(e + 16, items[i].off);
    put_le32(e + 20, items[i].len);
    put_le32(e + 24, items[i].flags);
  }
  put_le32(&md[65536], static_cast<uint32_t>(block_size));
  put_le32(&md[65540], fixed ? 1 : 0);   // fixed images keep their blocks allocated
  put_le64(&md[65544], size);
  crypto::random_bytes(std::span<uint8_t>(&md[65552], 16));
  put_le32(&md[65568], 512);
  put_le32(&md[65572], 512);
  f.pwrite_full(meta_offset, md);
  // BAT.
  std::vector<uint8_t> bat(entries * 8, 0);
  uint64_t off = data_offset;
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint64_t i = b + b / chunk_ratio;
    uint64_t e = 0;
    if (fixed) {
      e = zero_blocks ? kZero : (off | kFullyPresent);
      off += block_size;
    } else if (zero_blocks) {
      e = kZero;
    }
    put_le64(&bat[i * 8], e);
  }
  if (!bat.empty()) f.pwrite_full(bat_offset, bat);
  f.truncate(fixed ? data_offset + round_up(size, MiB) : data_offset);
  // Headers last: the image becomes valid only once everything it points at is on disk.
  f.sync();
  Header h;
  crypto::random_bytes(std::span<uint8_t>(h.file_write_guid, 16));
  crypto::random_bytes(std::span<uint8_t>(h.data_write_guid, 16));
  for (int k = 0; k < 2; ++k) {
    std::vector<uint8_t> b(4096, 0);
    std::memcpy(b.data(), "head", 4);
    put_le64(&b[8], static_cast<uint64_t>(k + 1));
    std::memcpy(&b[16], h.file_write_guid, 16);
    std::memcpy(&b[32], h.data_write_guid, 16);
    put_le16(&b[66], 1);
    put_le32(&b[68], static_cast<uint32_t>(log_size));
    put_le64(&b[72], log_offset);
    put_le32(&b[4], crc32c(b));
    f.pwrite_full(k ? kHeader2 : kHeader1, b);
  }
  f.sync();
}

}  // namespace vireo::block::vhdx
