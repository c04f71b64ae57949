#include "block/luks.h"

#include <cstring>
#include <vector>

#include "common/error.h"

namespace vireo::block::luks {

namespace {

constexpr uint8_t kMagic[6] = {'L', 'U', 'K', 'S', 0xBA, 0xBE};
constexpr uint32_t kMinSlotIters = 1000;
constexpr uint32_t kMinMasterKeyIters = 1000;

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
void put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}

// Offsets of the on-disk header (LUKS1 spec, all big endian).
constexpr size_t kOffVersion = 6, kOffCipherName = 8, kOffCipherMode = 40, kOffHashSpec = 72, kOffPayload = 104,
                 kOffKeyBytes = 108, kOffMkDigest = 112, kOffMkSalt = 132, kOffMkIters = 164, kOffUuid = 168,
                 kOffSlots = 208, kSlotSize = 48;

// A fixed-size NUL-padded string field; false if it has no NUL.
bool field_string(const uint8_t* p, size_t n, std::string& out) {
  const void* z = std::memchr(p, 0, n);
  if (!z) return false;
  out.assign(reinterpret_cast<const char*>(p), static_cast<const uint8_t*>(z) - p);
  return true;
}

// Diffuses buf in place (AF-split's H): each digest-sized piece i becomes hash(be32(i) || piece), truncated.
void diffuse(crypto::Hash h, std::span<uint8_t> buf) {
  const size_t ds = crypto::digest_len(h);
  std::vector<uint8_t> in(4 + ds);
  for (size_t i = 0, off = 0; off < buf.size(); ++i, off += ds) {
    const size_t n = std::min(ds, buf.size() - off);
    put32(in.data(), static_cast<uint32_t>(i));
    std::memcpy(in.data() + 4, buf.data() + off, n);
    auto d = crypto::digest(h, std::span<const uint8_t>(in.data(), 4 + n));
    std::memcpy(buf.data() + off, d.data(), n);
  }
}

}  // namespace

uint64_t split_key_sectors(uint32_t key_bytes, uint32_t stripes) {
  const uint64_t header_sectors = kKeySlotOffset / kSectorSize;
  const uint64_t bytes = uint64_t(key_bytes) * stripes;
  const uint64_t sectors = (bytes + kSectorSize - 1) / kSectorSize;
  return (sectors + header_sectors - 1) / header_sectors * header_sectors;
}

bool probe(std::span<const uint8_t> s) {
  return s.size() >= kOffCipherName && std::memcmp(s.data(), kMagic, 6) == 0 && be16(s.data() + kOffVersion) == 1;
}

Header parse_header(std::span<const uint8_t> raw) {
  if (raw.size() < kHeaderSize || std::memcmp(raw.data(), kMagic, 6) != 0) fail("Volume is not in LUKS format");
  const uint8_t* p = raw.data();
  Header h;
  h.version = be16(p + kOffVersion);
  if (h.version != 1) fail("LUKS version {} is not supported", h.version);
  if (!field_string(p + kOffCipherName, 32, h.cipher_name)) fail("LUKS header cipher name is not NUL terminated");
  if (!field_string(p + kOffCipherMode, 32, h.cipher_mode)) fail("LUKS header cipher mode is not NUL terminated");
  if (!field_string(p + kOffHashSpec, 32, h.hash_spec)) fail("LUKS header hash spec is not NUL terminated");
  h.payload_offset_sector = be32(p + kOffPayload);
  h.key_bytes = be32(p + kOffKeyBytes);
  std::memcpy(h.mk_digest.data(), p + kOffMkDigest, 20);
  std::memcpy(h.mk_salt.data(), p + kOffMkSalt, 32);
  h.mk_iterations = be32(p + kOffMkIters);
  // The UUID field is 40 bytes; qemu treats it as a string (a full field would run into the slots).
  const void* z = std::memchr(p + kOffUuid, 0, 40);
  h.uuid.assign(reinterpret_cast<const char*>(p + kOffUuid), z ? static_cast<const uint8_t*>(z) - (p + kOffUuid) : 40);
  for (size_t i = 0; i < kNumSlots; ++i) {
    const uint8_t* s = p + kOffSlots + i * kSlotSize;
    Keyslot& k = h.slots[i];
    k.active = be32(s);
    k.iterations = be32(s + 4);
    std::memcpy(k.salt.data(), s + 8, 32);
    k.key_offset_sector = be32(s + 40);
    k.stripes = be32(s + 44);
  }

  const uint64_t header_sectors = kKeySlotOffset / kSectorSize;
  if (h.payload_offset_sector < header_sectors) fail("LUKS payload is overlapping with the header");
  if (h.mk_iterations == 0) fail("LUKS key iteration count is zero");
  for (size_t i = 0; i < kNumSlots; ++i) {
    const Keyslot& k = h.slots[i];
    if (k.stripes != kStripes) fail("Keyslot {} is corrupted (stripes {} != {})", i, k.stripes, kStripes);
    if (k.active != kSlotDisabled && k.active != kSlotEnabled)
      fail("Keyslot {} state (active/disable) is corrupted", i);
    if (k.active == kSlotEnabled && k.iterations == 0) fail("Keyslot {} iteration count is zero", i);
    const uint64_t start1 = k.key_offset_sector, len1 = split_key_sectors(h.key_bytes, k.stripes);
    if (start1 < header_sectors) fail("Keyslot {} is overlapping with the LUKS header", i);
    if (start1 + len1 > h.payload_offset_sector) fail("Keyslot {} is overlapping with the encrypted payload", i);
    for (size_t j = i + 1; j < kNumSlots; ++j) {
      const uint64_t start2 = h.slots[j].key_offset_sector, len2 = split_key_sectors(h.key_bytes, h.slots[j].stripes);
      if (start1 < start2 + len2 && start2 < start1 + len1)
        fail("Keyslots {} and {} are overlapping in the header", i, j);
    }
  }
  return h;
}

std::array<uint8_t, kHeaderSize> serialize_header(const Header& h) {
  std::array<uint8_t, kHeaderSize> b{};
  uint8_t* p = b.data();
  std::memcpy(p, kMagic, 6);
  put16(p + kOffVersion, h.version);
  std::memcpy(p + kOffCipherName, h.cipher_name.data(), std::min<size_t>(31, h.cipher_name.size()));
  std::memcpy(p + kOffCipherMode, h.cipher_mode.data(), std::min<size_t>(31, h.cipher_mode.size()));
  std::memcpy(p + kOffHashSpec, h.hash_spec.data(), std::min<size_t>(31, h.hash_spec.size()));
  put32(p + kOffPayload, h.payload_offset_sector);
  put32(p + kOffKeyBytes, h.key_bytes);
  std::memcpy(p + kOffMkDigest, h.mk_digest.data(), 20);
  std::memcpy(p + kOffMkSalt, h.mk_salt.data(), 32);
  put32(p + kOffMkIters, h.mk_iterations);
  std::memcpy(p + kOffUuid, h.uuid.data(), std::min<size_t>(39, h.uuid.size()));
  for (size_t i = 0; i < kNumSlots; ++i) {
    uint8_t* s = p + kOffSlots + i * kSlotSize;
    const Keyslot& k = h.slots[i];
    put32(s, k.active);
    put32(s + 4, k.iterations);
    std::memcpy(s + 8, k.salt.data(), 32);
    put32(s + 40, k.key_offset_sector);
    put32(s + 44, k.stripes);
  }
  return b;
}

Params parse_params(const Header& h) {
  Params p;
  const auto dash = h.cipher_mode.find('-');
  if (dash == std::string::npos) fail("Unexpected cipher mode string format '{}'", h.cipher_mode);
  const std::string mode_name = h.cipher_mode.substr(0, dash);
  std::string ivgen_name = h.cipher_mode.substr(dash + 1);
  std::optional<std::string> ivhash_name;
  if (auto colon = ivgen_name.find(':'); colon != std::string::npos) {
    ivhash_name = ivgen_name.substr(colon + 1);
    ivgen_name.resize(colon);
    p.ivgen_hash = crypto::hash_from_name(*ivhash_name);
    if (!p.ivgen_hash) fail("Hash algorithm '{}' not supported", *ivhash_name);
  }
  auto mode = crypto::mode_from_name(mode_name);
  if (!mode) fail("Cipher mode '{}' not supported", mode_name);
  p.mode = *mode;
  const uint32_t kb = p.mode == crypto::CipherMode::XTS ? h.key_bytes / 2 : h.key_bytes;
  auto alg = crypto::cipher_from_family(h.cipher_name, kb);
  if (!alg || (p.mode == crypto::CipherMode::XTS && h.key_bytes % 2))
    fail("Algorithm '{}' with key size {} bytes not supported", h.cipher_name, kb);
  p.alg = *alg;
  auto hash = crypto::hash_from_name(h.hash_spec);
  if (!hash) fail("Hash algorithm '{}' not supported", h.hash_spec);
  p.hash = *hash;
  auto ivgen = crypto::ivgen_from_name(ivgen_name);
  if (!ivgen) fail("IV generator '{}' not supported", ivgen_name);
  p.ivgen = *ivgen;
  if (p.ivgen == crypto::IvGen::Essiv) {
    if (!ivhash_name) fail("Missing IV generator hash specification");
    crypto::essiv_cipher_for(p.alg, *p.ivgen_hash);   // throws qemu's text if there is none
  } else {
    // dm-crypt ignores a hash named with plain/plain64; so does qemu.
    p.ivgen_hash.reset();
  }
  return p;
}

void af_merge(crypto::Hash h, std::span<const uint8_t> split, uint32_t stripes, std::span<uint8_t> key) {
  const size_t n = key.size();
  if (split.size() < n * stripes) fail("AF split buffer too small");
  std::vector<uint8_t> d(n, 0);
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    for (size_t k = 0; k < n; ++k) d[k] ^= split[i * n + k];
    diffuse(h, d);
  }
  for (size_t k = 0; k < n; ++k) key[k] = d[k] ^ split[(stripes - 1) * n + k];
}

void af_split(crypto::Hash h, std::span<const uint8_t> key, uint32_t stripes, std::span<uint8_t> split) {
  const size_t n = key.size();
  if (split.size() < n * stripes) fail("AF split buffer too small");
  crypto::random_bytes(split.subspan(0, n * (stripes - 1)));
  std::vector<uint8_t> d(n, 0);
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    for (size_t k = 0; k < n; ++k) d[k] ^= split[i * n + k];
    diffuse(h, d);
  }
  for (size_t k = 0; k < n; ++k) split[(stripes - 1) * n + k] = d[k] ^ key[k];
}

std::unique_ptr<Volume> Volume::open(const ReadFn& read, const std::optional<std::string>& password) {
  std::array<uint8_t, kHeaderSize> raw{};
  read(0, raw);
  auto v = std::make_unique<Volume>();
  v->h_ = parse_header(raw);
  v->p_ = parse_params(v->h_);
  if (!password) return v;
  const Header& h = v->h_;
  const Params& p = v->p_;
  const std::span<const uint8_t> pass(reinterpret_cast<const uint8_t*>(password->data()), password->size());
  std::vector<uint8_t> slot_key(h.key_bytes), split(uint64_t(h.key_bytes) * kStripes), mk(h.key_bytes);
  std::array<uint8_t, 20> digest{};
  for (const Keyslot& k : h.slots) {
    if (k.active != kSlotEnabled) continue;
    crypto::pbkdf2(p.hash, pass, k.salt, k.iterations, slot_key);
    read(uint64_t(k.key_offset_sector) * kSectorSize, split);
    crypto::SectorCipher(p.alg, p.mode, p.ivgen, p.ivgen_hash, slot_key).decrypt(0, split);
    af_merge(p.hash, split, k.stripes, mk);
    crypto::pbkdf2(p.hash, mk, h.mk_salt, h.mk_iterations, digest);
    if (std::memcmp(digest.data(), h.mk_digest.data(), 20) == 0) {
      v->cipher_ = std::make_unique<crypto::SectorCipher>(p.alg, p.mode, p.ivgen, p.ivgen_hash, mk);
      return v;
    }
  }
  fail("Invalid password, cannot unlock any keyslot");
}

std::unique_ptr<Volume> Volume::create(const CreateParams& cp, const std::string& password, const WriteFn& write) {
  const Params& p = cp.params;
  auto v = std::make_unique<Volume>();
  v->p_ = p;
  Header& h = v->h_;
  h.cipher_name = crypto::family(p.alg);
  h.cipher_mode = std::string(crypto::name(p.mode)) + "-" + crypto::name(p.ivgen);
  if (p.ivgen == crypto::IvGen::Essiv) {
    if (!p.ivgen_hash) fail("Missing IV generator hash specification");
    crypto::essiv_cipher_for(p.alg, *p.ivgen_hash);
    h.cipher_mode += std::string(":") + crypto::name(*p.ivgen_hash);
  }
  if (p.mode == crypto::CipherMode::XTS && crypto::block_len(p.alg) != 16)
    fail("XTS cipher block size must be 16 bytes");
  h.hash_spec = crypto::name(p.hash);
  h.key_bytes = static_cast<uint32_t>(crypto::key_len(p.alg) * (p.mode == crypto::CipherMode::XTS ? 2 : 1));
  h.uuid = crypto::random_uuid();

  std::vector<uint8_t> mk(h.key_bytes);
  crypto::random_bytes(mk);
  // The cipher must accept the key before anything is written.
  auto payload_cipher = std::make_unique<crypto::SectorCipher>(p.alg, p.mode, p.ivgen, p.ivgen_hash, mk);

  crypto::random_bytes(h.mk_salt);
  uint64_t iters = crypto::pbkdf2_iterations_per_second(p.hash, mk.size(), 20);
  if (iters > UINT64_MAX / std::max<uint64_t>(cp.iter_time_ms, 1)) fail("PBKDF iterations {} too large to scale", iters);
  // cryptsetup spends an eighth of the time on the digest; qemu does the same.
  iters = iters * cp.iter_time_ms / 1000 / 8;
  if (iters > UINT32_MAX) fail("PBKDF iterations {} larger than {}", iters, UINT32_MAX);
  h.mk_iterations = static_cast<uint32_t>(std::max<uint64_t>(iters, kMinMasterKeyIters));
  crypto::pbkdf2(p.hash, mk, h.mk_salt, h.mk_iterations, h.mk_digest);

  const uint64_t header_sectors = kKeySlotOffset / kSectorSize;
  const uint64_t split_sectors = split_key_sectors(h.key_bytes, kStripes);
  for (size_t i = 0; i < kNumSlots; ++i) {
    h.slots[i].active = kSlotDisabled;
    h.slots[i].stripes = kStripes;
    h.slots[i].key_offset_sector = static_cast<uint32_t>(header_sectors + i * split_sectors);
  }
  h.payload_offset_sector = static_cast<uint32_t>(header_sectors + kNumSlots * split_sectors);

  Keyslot& k = h.slots[0];
  crypto::random_bytes(k.salt);
  const std::span<const uint8_t> pass(reinterpret_cast<const uint8_t*>(password.data()), password.size());
  uint64_t slot_iters = crypto::pbkdf2_iterations_per_second(p.hash, pass.size(), h.key_bytes);
  if (slot_iters > UINT64_MAX / std::max<uint64_t>(cp.iter_time_ms, 1))
    fail("PBKDF iterations {} too large to scale", slot_iters);
  slot_iters = slot_iters * cp.iter_time_ms / 1000;
  if (slot_iters > UINT32_MAX) fail("PBKDF iterations {} larger than {}", slot_iters, UINT32_MAX);
  k.iterations = static_cast<uint32_t>(std::max<uint64_t>(slot_iters, kMinSlotIters));
  std::vector<uint8_t> slot_key(h.key_bytes);
  crypto::pbkdf2(p.hash, pass, k.salt, k.iterations, slot_key);
  std::vector<uint8_t> split(split_sectors * kSectorSize, 0);
  af_split(p.hash, mk, kStripes, split);
  // Only the split key itself is encrypted and written (the rest of the slot area stays a hole, as in qemu).
  const size_t used = (size_t(h.key_bytes) * kStripes + kSectorSize - 1) / kSectorSize * kSectorSize;
  split.resize(used);
  crypto::SectorCipher(p.alg, p.mode, p.ivgen, p.ivgen_hash, slot_key).encrypt(0, split);
  k.active = kSlotEnabled;

  write(uint64_t(k.key_offset_sector) * kSectorSize, split);
  const auto raw = serialize_header(h);
  write(0, raw);
  v->cipher_ = std::move(payload_cipher);
  return v;
}

nlohmann::ordered_json Volume::info(const char* format) const {
  nlohmann::ordered_json j;
  j["ivgen-alg"] = crypto::name(p_.ivgen);
  j["hash-alg"] = crypto::name(p_.hash);
  j["cipher-alg"] = crypto::name(p_.alg);
  j["uuid"] = h_.uuid;
  if (p_.ivgen_hash) j["ivgen-hash-alg"] = crypto::name(*p_.ivgen_hash);
  if (format) j["format"] = format;
  j["cipher-mode"] = crypto::name(p_.mode);
  nlohmann::ordered_json slots = nlohmann::ordered_json::array();
  for (const Keyslot& k : h_.slots) {
    nlohmann::ordered_json s;
    s["active"] = k.active == kSlotEnabled;
    if (k.active == kSlotEnabled) s["iters"] = k.iterations;
    s["key-offset"] = uint64_t(k.key_offset_sector) * kSectorSize;
    if (k.active == kSlotEnabled) s["stripes"] = k.stripes;
    slots.push_back(s);
  }
  j["slots"] = slots;
  j["payload-offset"] = payload_offset();
  j["master-key-iters"] = h_.mk_iterations;
  return j;
}

}  // namespace vireo::block::luks
