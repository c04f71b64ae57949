#include "block/luks_image.h"

#include <cerrno>
#include <cstring>

#include "block/foreign.h"
#include "block/secret.h"
#include "common/error.h"

namespace vireo::block {

namespace {

constexpr uint64_t kSector = 512;

class LuksImage final : public ForeignImage {
 public:
  LuksImage(const std::string& path, const OpenOptions& o) : ForeignImage("luks", path, o) {}

  void open_all(const OpenOptions& o) {
    file_ = open_host_file(filename_, o);
    files_.push_back(file_.get());
    vol_ = luks::Volume::open([&](uint64_t off, std::span<uint8_t> b) { file_->pread_full(off, b); },
                              luks_open_password(o, ""));
    const uint64_t len = file_->length();
    if (len < vol_->payload_offset()) fail("LUKS payload offset {} is past the end of the file", vol_->payload_offset());
    size_ = len - vol_->payload_offset();
  }

  bool encrypted() const override { return true; }
  bool has_zero_init() const override { return false; }
  nlohmann::ordered_json format_specific() const override { return {{"type", "luks"}, {"data", vol_->info()}}; }
  void resize(uint64_t new_size, bool allow_shrink) override {
    if (read_only_) throw Error(fmt::format("resize {}: image is read-only", filename_), EROFS);
    std::lock_guard<std::mutex> g(mu_);
    if (new_size < size_ && !allow_shrink) fail("Use the --shrink option to perform a shrink operation.");
    file_->truncate(vol_->payload_offset() + new_size);
    size_ = new_size;
  }

 protected:
  Map map(uint64_t, uint64_t max_len) override {
    Map m;
    m.kind = Map::Opaque;
    m.length = max_len;
    return m;
  }

  const crypto::SectorCipher& cipher() const {
    if (!vol_->cipher()) throw Error(fmt::format("{}: the image was opened without its key", filename_), EACCES);
    return *vol_->cipher();
  }

  // Reads and decrypts whole sectors [first, first+count).
  void read_sectors(uint64_t first, std::span<uint8_t> out) {
    file_->pread_full(vol_->payload_offset() + first * kSector, out);
    cipher().decrypt(first, out);
  }

  void read_opaque(uint64_t offset, std::span<uint8_t> buf, const Map&) override {
    const uint64_t first = offset / kSector;
    const uint64_t end = (offset + buf.size() + kSector - 1) / kSector;
    if (offset % kSector == 0 && buf.size() % kSector == 0) return read_sectors(first, buf);
    std::vector<uint8_t> tmp((end - first) * kSector);
    read_sectors(first, tmp);
    std::memcpy(buf.data(), tmp.data() + offset % kSector, buf.size());
  }

  void write_locked(uint64_t offset, std::span<const uint8_t> buf) override {
    const uint64_t first = offset / kSector;
    const uint64_t end = (offset + buf.size() + kSector - 1) / kSector;
    std::vector<uint8_t> tmp((end - first) * kSector);
    if (offset % kSector || buf.size() % kSector) {
      // Partial sectors: decrypt the old content around the new bytes (the tail sector may be past EOF).
      read_sectors(first, std::span<uint8_t>(tmp.data(), kSector));
      if (end - first > 1)
        read_sectors(end - 1, std::span<uint8_t>(tmp.data() + tmp.size() - kSector, kSector));
    }
    std::memcpy(tmp.data() + offset % kSector, buf.data(), buf.size());
    cipher().encrypt(first, tmp);
    uint64_t n = tmp.size();
    // Never grow the file past the image's end for a partial last sector.
    const uint64_t limit = vol_->payload_offset() + size_;
    if (vol_->payload_offset() + first * kSector + n > limit) n = limit - (vol_->payload_offset() + first * kSector);
    file_->pwrite_full(vol_->payload_offset() + first * kSector, std::span<const uint8_t>(tmp.data(), n));
  }

 private:
  std::unique_ptr<HostFile> file_;
  std::unique_ptr<luks::Volume> vol_;
};

}  // namespace

std::optional<std::string> luks_open_password(const OpenOptions& opts, const std::string& prefix) {
  if (opts.key_secret.empty()) {
    if (opts.no_io) return std::nullopt;
    fail("Parameter '{}key-secret' is required for cipher", prefix);
  }
  return lookup_secret(opts.key_secret);
}

LuksCreateRequest luks_create_request(const CreateOptions& c, const std::string& prefix) {
  LuksCreateRequest r;
  luks::Params& p = r.params.params;
  std::optional<std::string> secret;
  bool ivhash_set = false;
  for (const auto& kv : c.extra) {
    const std::string& key = kv.first;
    const std::string& v = kv.second;
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string k = key.substr(prefix.size());
    const auto bad = [&]() { fail("Parameter '{}' does not accept value '{}'", k, v); };
    if (k == "key-secret") {
      secret = v;
    } else if (k == "cipher-alg") {
      auto a = crypto::cipher_from_name(v);
      if (!a) bad();
      p.alg = *a;
    } else if (k == "cipher-mode") {
      auto m = crypto::mode_from_name(v);
      if (!m) bad();
      p.mode = *m;
    } else if (k == "ivgen-alg") {
      auto g = crypto::ivgen_from_name(v);
      if (!g) bad();
      p.ivgen = *g;
    } else if (k == "ivgen-hash-alg") {
      auto h = crypto::hash_from_name(v);
      if (!h) bad();
      p.ivgen_hash = *h;
      ivhash_set = true;
    } else if (k == "hash-alg") {
      auto h = crypto::hash_from_name(v);
      if (!h) bad();
      p.hash = *h;
    } else if (k == "iter-time") {
      char* end = nullptr;
      const unsigned long long t = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end || v[0] == '-') fail("Parameter '{}iter-time' expects a number", prefix);
      r.params.iter_time_ms = t;
    }
  }
  if (p.ivgen == crypto::IvGen::Essiv && !ivhash_set) p.ivgen_hash = crypto::Hash::SHA256;
  if (!secret) fail("Parameter '{}key-secret' is required for cipher", prefix);
  if (p.mode == crypto::CipherMode::XTS && crypto::block_len(p.alg) != 16)
    fail("Unsupported cipher mode {}", crypto::name(p.mode));
  r.password = lookup_secret(*secret);
  return r;
}

std::unique_ptr<BlockImage> open_luks(const std::string& path, const OpenOptions& opts) {
  auto img = std::make_unique<LuksImage>(path, opts);
  img->open_all(opts);
  return img;
}

void create_luks(const std::string& path, const CreateOptions& c) {
  for (const auto& kv : c.extra) {
    const std::string& k = kv.first;
    static const char* kKnown[] = {"key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg",
                                   "hash-alg", "iter-time"};
    if (std::none_of(std::begin(kKnown), std::end(kKnown), [&](const char* s) { return k == s; }))
      fail("Invalid parameter '{}'", k);
  }
  if (c.preallocation != "off" && c.preallocation != "falloc" && c.preallocation != "full")
    fail("Parameter 'preallocation' does not accept value '{}'", c.preallocation);
  const LuksCreateRequest req = luks_create_request(c, "");
  HostFile f(path, false, false, true);
  auto vol = luks::Volume::create(req.params, req.password,
                                  [&](uint64_t off, std::span<const uint8_t> b) { f.pwrite_full(off, b); });
  const uint64_t payload = vol->payload_offset();
  f.truncate(payload + c.size);
  if (c.preallocation == "falloc") f.allocate(payload, c.size);
  if (c.preallocation == "full") {
    std::vector<uint8_t> z(1 << 20, 0);
    for (uint64_t off = 0; off < c.size; off += z.size())
      f.pwrite_full(payload + off, std::span<const uint8_t>(z.data(), std::min<uint64_t>(z.size(), c.size - off)));
  }
  f.sync();
}

}  // namespace vireo::block
