// vireo/block: ciphers, hashes, PBKDF2 and sector encryption for LUKS and legacy qcow2 AES, on libgcrypt.
//
// Nothing cryptographic is implemented here: this is a typed wrapper (QEMU's algorithm names, RAII handles,
// a handle pool so several threads can encrypt at once) over gcrypt's primitives.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vireo::block::crypto {

enum class Hash { MD5, SHA1, SHA224, SHA256, SHA384, SHA512, RIPEMD160 };
enum class CipherAlg {
  AES128, AES192, AES256, CAST5_128, SERPENT128, SERPENT192, SERPENT256, TWOFISH128, TWOFISH192, TWOFISH256
};
enum class CipherMode { ECB, CBC, XTS, CTR };
enum class IvGen { Plain, Plain64, Essiv };

// QEMU's QAPI names: "sha256", "aes-256", "xts", "plain64", ...
std::optional<Hash> hash_from_name(std::string_view name);
std::optional<CipherAlg> cipher_from_name(std::string_view name);
std::optional<CipherMode> mode_from_name(std::string_view name);
std::optional<IvGen> ivgen_from_name(std::string_view name);
const char* name(Hash h);
const char* name(CipherAlg a);
const char* name(CipherMode m);
const char* name(IvGen g);

size_t digest_len(Hash h);
size_t key_len(CipherAlg a);      // bytes of one key (XTS needs twice that)
size_t block_len(CipherAlg a);
// The LUKS cipher family name ("aes", "serpent", "twofish", "cast5") and the algorithm for a family + key size.
const char* family(CipherAlg a);
std::optional<CipherAlg> cipher_from_family(std::string_view family, size_t key_bytes);

std::vector<uint8_t> digest(Hash h, std::span<const uint8_t> data);
// PBKDF2-HMAC-<h>. Throws Error on a library failure.
void pbkdf2(Hash h, std::span<const uint8_t> password, std::span<const uint8_t> salt, uint64_t iterations,
            std::span<uint8_t> out);
// How many PBKDF2 iterations of this shape run per second of CPU time (QEMU sizes LUKS iterations with it).
uint64_t pbkdf2_iterations_per_second(Hash h, size_t password_len, size_t out_len);
// Cryptographically strong random bytes (key material, salts).
void random_bytes(std::span<uint8_t> out);
// A random RFC 4122 version 4 UUID string ("01c5abf3-ca85-4061-9069-466b228cc8f0").
std::string random_uuid();

// One cipher in one mode with one key. Thread-safe: a small pool of gcrypt handles, one per concurrent call.
class Cipher {
 public:
  Cipher(CipherAlg alg, CipherMode mode, std::span<const uint8_t> key);
  ~Cipher();
  Cipher(const Cipher&) = delete;
  Cipher& operator=(const Cipher&) = delete;

  CipherAlg alg() const { return alg_; }
  CipherMode mode() const { return mode_; }
  size_t iv_len() const;   // 0 for ECB
  // data.size() must be a multiple of the block size. iv may be empty for ECB.
  void encrypt(std::span<const uint8_t> iv, std::span<uint8_t> data) const;
  void decrypt(std::span<const uint8_t> iv, std::span<uint8_t> data) const;
  // Encrypts/decrypts data in `unit`-byte pieces with one handle; iv_for(i, iv) fills the IV of piece i.
  void crypt_units(bool enc, std::span<uint8_t> data, size_t unit,
                   const std::function<void(uint64_t, std::span<uint8_t>)>& iv_for) const;

 private:
  struct Handle;
  std::unique_ptr<Handle> take() const;
  void give(std::unique_ptr<Handle> h) const;
  void run(bool enc, std::span<const uint8_t> iv, std::span<uint8_t> data) const;
  CipherAlg alg_;
  CipherMode mode_;
  std::vector<uint8_t> key_;
  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<Handle>> pool_;
};

// Sector encryption as dm-crypt/LUKS/QEMU do it: the data is cut in 512-byte sectors, each encrypted with
// the IV of its sector number (plain: 32-bit LE, plain64: 64-bit LE, essiv: E_{hash(key)}(64-bit LE)).
class SectorCipher {
 public:
  static constexpr uint64_t kSectorSize = 512;
  SectorCipher(CipherAlg alg, CipherMode mode, IvGen ivgen, std::optional<Hash> ivgen_hash,
               std::span<const uint8_t> key);
  // data.size() a multiple of 512; `sector` is the number of its first sector.
  void encrypt(uint64_t sector, std::span<uint8_t> data) const;
  void decrypt(uint64_t sector, std::span<uint8_t> data) const;

 private:
  void iv_for(uint64_t sector, std::span<uint8_t> iv) const;
  Cipher cipher_;
  IvGen ivgen_;
  std::unique_ptr<Cipher> essiv_;
};

// The ESSIV cipher dm-crypt uses: the same family with the key size equal to the hash's digest size.
// Throws Error with QEMU's text when the family has no such key size.
CipherAlg essiv_cipher_for(CipherAlg alg, Hash h);

}  // namespace vireo::block::crypto
