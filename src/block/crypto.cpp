#include "block/crypto.h"

#include <gcrypt.h>
#include <time.h>

#include <cstring>

#include "common/error.h"

namespace vireo::block::crypto {

namespace {

void init_gcrypt() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!gcry_check_version(GCRYPT_VERSION)) fail("libgcrypt version mismatch");
    // Keys live in ordinary memory (as in QEMU); secure memory would need privileges and cap sizes.
    gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
    gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
  });
}

[[noreturn]] void gcry_fail(const char* what, gcry_error_t err) { fail("{}: {}", what, gcry_strerror(err)); }

struct HashInfo {
  Hash h;
  const char* name;
  int algo;
};
constexpr HashInfo kHashes[] = {
    {Hash::MD5, "md5", GCRY_MD_MD5},          {Hash::SHA1, "sha1", GCRY_MD_SHA1},
    {Hash::SHA224, "sha224", GCRY_MD_SHA224}, {Hash::SHA256, "sha256", GCRY_MD_SHA256},
    {Hash::SHA384, "sha384", GCRY_MD_SHA384}, {Hash::SHA512, "sha512", GCRY_MD_SHA512},
    {Hash::RIPEMD160, "ripemd160", GCRY_MD_RMD160},
};

struct CipherInfo {
  CipherAlg a;
  const char* name;
  const char* family;
  int algo;
  size_t key;
  size_t block;
};
constexpr CipherInfo kCiphers[] = {
    {CipherAlg::AES128, "aes-128", "aes", GCRY_CIPHER_AES128, 16, 16},
    {CipherAlg::AES192, "aes-192", "aes", GCRY_CIPHER_AES192, 24, 16},
    {CipherAlg::AES256, "aes-256", "aes", GCRY_CIPHER_AES256, 32, 16},
    {CipherAlg::CAST5_128, "cast5-128", "cast5", GCRY_CIPHER_CAST5, 16, 8},
    {CipherAlg::SERPENT128, "serpent-128", "serpent", GCRY_CIPHER_SERPENT128, 16, 16},
    {CipherAlg::SERPENT192, "serpent-192", "serpent", GCRY_CIPHER_SERPENT192, 24, 16},
    {CipherAlg::SERPENT256, "serpent-256", "serpent", GCRY_CIPHER_SERPENT256, 32, 16},
    {CipherAlg::TWOFISH128, "twofish-128", "twofish", GCRY_CIPHER_TWOFISH128, 16, 16},
    {CipherAlg::TWOFISH192, "twofish-192", "twofish", GCRY_CIPHER_TWOFISH, 24, 16},
    {CipherAlg::TWOFISH256, "twofish-256", "twofish", GCRY_CIPHER_TWOFISH, 32, 16},
};

const HashInfo& info(Hash h) {
  for (const auto& i : kHashes)
    if (i.h == h) return i;
  fail("unknown hash");
}
const CipherInfo& info(CipherAlg a) {
  for (const auto& i : kCiphers)
    if (i.a == a) return i;
  fail("unknown cipher");
}

int gcry_mode(CipherMode m) {
  switch (m) {
    case CipherMode::ECB: return GCRY_CIPHER_MODE_ECB;
    case CipherMode::CBC: return GCRY_CIPHER_MODE_CBC;
    case CipherMode::XTS: return GCRY_CIPHER_MODE_XTS;
    case CipherMode::CTR: return GCRY_CIPHER_MODE_CTR;
  }
  return GCRY_CIPHER_MODE_NONE;
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

std::optional<Hash> hash_from_name(std::string_view n) {
  for (const auto& i : kHashes)
    if (n == i.name) return i.h;
  return std::nullopt;
}
std::optional<CipherAlg> cipher_from_name(std::string_view n) {
  for (const auto& i : kCiphers)
    if (n == i.name) return i.a;
  return std::nullopt;
}
std::optional<CipherMode> mode_from_name(std::string_view n) {
  if (n == "ecb") return CipherMode::ECB;
  if (n == "cbc") return CipherMode::CBC;
  if (n == "xts") return CipherMode::XTS;
  if (n == "ctr") return CipherMode::CTR;
  return std::nullopt;
}
std::optional<IvGen> ivgen_from_name(std::string_view n) {
  if (n == "plain") return IvGen::Plain;
  if (n == "plain64") return IvGen::Plain64;
  if (n == "essiv") return IvGen::Essiv;
  return std::nullopt;
}
const char* name(Hash h) { return info(h).name; }
const char* name(CipherAlg a) { return info(a).name; }
const char* name(CipherMode m) {
  switch (m) {
    case CipherMode::ECB: return "ecb";
    case CipherMode::CBC: return "cbc";
    case CipherMode::XTS: return "xts";
    case CipherMode::CTR: return "ctr";
  }
  return "?";
}
const char* name(IvGen g) {
  switch (g) {
    case IvGen::Plain: return "plain";
    case IvGen::Plain64: return "plain64";
    case IvGen::Essiv: return "essiv";
  }
  return "?";
}

size_t digest_len(Hash h) { return gcry_md_get_algo_dlen(info(h).algo); }
size_t key_len(CipherAlg a) { return info(a).key; }
size_t block_len(CipherAlg a) { return info(a).block; }
const char* family(CipherAlg a) { return info(a).family; }

std::optional<CipherAlg> cipher_from_family(std::string_view fam, size_t key_bytes) {
  for (const auto& i : kCiphers)
    if (fam == i.family && key_bytes == i.key) return i.a;
  return std::nullopt;
}

std::vector<uint8_t> digest(Hash h, std::span<const uint8_t> data) {
  init_gcrypt();
  std::vector<uint8_t> out(digest_len(h));
  gcry_md_hash_buffer(info(h).algo, out.data(), data.data(), data.size());
  return out;
}

void pbkdf2(Hash h, std::span<const uint8_t> password, std::span<const uint8_t> salt, uint64_t iterations,
            std::span<uint8_t> out) {
  init_gcrypt();
  if (iterations == 0 || iterations > 0xffffffffull) fail("PBKDF2 iteration count {} out of range", iterations);
  // gcrypt refuses an empty passphrase buffer pointer; any non-null pointer with length 0 is fine.
  static const uint8_t empty = 0;
  gcry_error_t err =
      gcry_kdf_derive(password.empty() ? &empty : password.data(), password.size(), GCRY_KDF_PBKDF2,
                      info(h).algo, salt.data(), salt.size(), static_cast<unsigned long>(iterations), out.size(),
                      out.data());
  if (err) gcry_fail("PBKDF2", err);
}

uint64_t pbkdf2_iterations_per_second(Hash h, size_t password_len, size_t out_len) {
  std::vector<uint8_t> pass(password_len, 0x5a), salt(32, 0xa5), out(out_len);
  // Grow the trial until it takes at least 100 ms of CPU (QEMU uses 500 ms; the rate is what matters).
  uint64_t iters = 1 << 12;
  for (;;) {
    const uint64_t t0 = thread_cpu_ns();
    pbkdf2(h, pass, salt, iters, out);
    const uint64_t dt = thread_cpu_ns() - t0;
    if (dt >= 100000000ull || iters >= (1ull << 31)) return std::max<uint64_t>(1, iters * 1000000000ull / std::max<uint64_t>(dt, 1));
    if (dt == 0) iters *= 16;
    else iters = std::min<uint64_t>(1ull << 31, std::max<uint64_t>(iters * 2, iters * 120000000ull / dt));
  }
}

void random_bytes(std::span<uint8_t> out) {
  init_gcrypt();
  gcry_randomize(out.data(), out.size(), GCRY_STRONG_RANDOM);
}

std::string random_uuid() {
  uint8_t u[16];
  random_bytes(u);
  u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x40);
  u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80);
  return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                     u[15]);
}

// ------------------------------------------------------------------------------------------------ Cipher

struct Cipher::Handle {
  gcry_cipher_hd_t hd = nullptr;
  ~Handle() {
    if (hd) gcry_cipher_close(hd);
  }
};

Cipher::Cipher(CipherAlg alg, CipherMode mode, std::span<const uint8_t> key)
    : alg_(alg), mode_(mode), key_(key.begin(), key.end()) {
  init_gcrypt();
  const size_t want = key_len(alg) * (mode == CipherMode::XTS ? 2 : 1);
  if (key.size() != want) fail("Cipher key length {} is not {} for {}-{}", key.size(), want, name(alg), name(mode));
  give(take());   // opens and keys one handle now, so a bad combination fails here
}

Cipher::~Cipher() = default;

size_t Cipher::iv_len() const { return mode_ == CipherMode::ECB ? 0 : block_len(alg_); }

std::unique_ptr<Cipher::Handle> Cipher::take() const {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!pool_.empty()) {
      auto h = std::move(pool_.back());
      pool_.pop_back();
      return h;
    }
  }
  auto h = std::make_unique<Handle>();
  gcry_error_t err = gcry_cipher_open(&h->hd, info(alg_).algo, gcry_mode(mode_), 0);
  if (err) fail("Cipher algorithm {} in mode {} not supported: {}", name(alg_), name(mode_), gcry_strerror(err));
  err = gcry_cipher_setkey(h->hd, key_.data(), key_.size());
  if (err) fail("Cipher algorithm {} in mode {} refused the key: {}", name(alg_), name(mode_), gcry_strerror(err));
  return h;
}

void Cipher::give(std::unique_ptr<Handle> h) const {
  std::lock_guard<std::mutex> g(mu_);
  if (pool_.size() < 16) pool_.push_back(std::move(h));
}

void Cipher::run(bool enc, std::span<const uint8_t> iv, std::span<uint8_t> data) const {
  if (data.size() % block_len(alg_)) fail("cipher data length {} is not a multiple of the block size", data.size());
  auto h = take();
  gcry_error_t err = 0;
  if (mode_ == CipherMode::CTR) err = gcry_cipher_setctr(h->hd, iv.data(), iv.size());
  else if (mode_ != CipherMode::ECB) err = gcry_cipher_setiv(h->hd, iv.data(), iv.size());
  if (err) gcry_fail("cipher IV", err);
  err = enc ? gcry_cipher_encrypt(h->hd, data.data(), data.size(), nullptr, 0)
            : gcry_cipher_decrypt(h->hd, data.data(), data.size(), nullptr, 0);
  if (err) gcry_fail(enc ? "encrypt" : "decrypt", err);
  give(std::move(h));
}

void Cipher::crypt_units(bool enc, std::span<uint8_t> data, size_t unit,
                         const std::function<void(uint64_t, std::span<uint8_t>)>& iv_for) const {
  if (data.size() % block_len(alg_)) fail("cipher data length {} is not a multiple of the block size", data.size());
  auto h = take();
  uint8_t iv[16];
  const std::span<uint8_t> ivs(iv, iv_len());
  for (size_t off = 0, i = 0; off < data.size(); off += unit, ++i) {
    const size_t n = std::min(unit, data.size() - off);
    gcry_error_t err = 0;
    if (!ivs.empty()) {
      iv_for(i, ivs);
      err = mode_ == CipherMode::CTR ? gcry_cipher_setctr(h->hd, iv, ivs.size()) : gcry_cipher_setiv(h->hd, iv, ivs.size());
      if (err) gcry_fail("cipher IV", err);
    }
    err = enc ? gcry_cipher_encrypt(h->hd, data.data() + off, n, nullptr, 0)
              : gcry_cipher_decrypt(h->hd, data.data() + off, n, nullptr, 0);
    if (err) gcry_fail(enc ? "encrypt" : "decrypt", err);
  }
  give(std::move(h));
}

void Cipher::encrypt(std::span<const uint8_t> iv, std::span<uint8_t> data) const { run(true, iv, data); }
void Cipher::decrypt(std::span<const uint8_t> iv, std::span<uint8_t> data) const { run(false, iv, data); }

// ------------------------------------------------------------------------------------------ SectorCipher

CipherAlg essiv_cipher_for(CipherAlg alg, Hash h) {
  const size_t dl = digest_len(h);
  if (dl == key_len(alg)) return alg;
  const std::string fam = family(alg);
  if (fam == "cast5") fail("Cipher {} not supported with essiv", name(alg));
  if (auto a = cipher_from_family(fam, dl)) return *a;
  const char* pretty = fam == "aes" ? "AES" : fam == "serpent" ? "Serpent" : "Twofish";
  fail("No {} cipher with key size {} available", pretty, dl);
}

SectorCipher::SectorCipher(CipherAlg alg, CipherMode mode, IvGen ivgen, std::optional<Hash> ivgen_hash,
                           std::span<const uint8_t> key)
    : cipher_(alg, mode, key), ivgen_(ivgen) {
  if (ivgen == IvGen::Essiv) {
    if (!ivgen_hash) fail("Missing IV generator hash specification");
    auto salt = digest(*ivgen_hash, key);
    essiv_ = std::make_unique<Cipher>(essiv_cipher_for(alg, *ivgen_hash), CipherMode::ECB, salt);
  }
}

void SectorCipher::iv_for(uint64_t sector, std::span<uint8_t> iv) const {
  std::memset(iv.data(), 0, iv.size());
  const uint64_t s = ivgen_ == IvGen::Plain ? (sector & 0xffffffffull) : sector;
  for (size_t i = 0; i < 8 && i < iv.size(); ++i) iv[i] = static_cast<uint8_t>(s >> (8 * i));
  if (essiv_) essiv_->encrypt({}, iv);
}

void SectorCipher::encrypt(uint64_t sector, std::span<uint8_t> data) const {
  cipher_.crypt_units(true, data, kSectorSize, [&](uint64_t i, std::span<uint8_t> iv) { iv_for(sector + i, iv); });
}

void SectorCipher::decrypt(uint64_t sector, std::span<uint8_t> data) const {
  cipher_.crypt_units(false, data, kSectorSize, [&](uint64_t i, std::span<uint8_t> iv) { iv_for(sector + i, iv); });
}

}  // namespace vireo::block::crypto
