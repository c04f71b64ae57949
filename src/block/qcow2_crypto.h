// vireo/block: qcow2 encryption — LUKS (crypt_method 2: a LUKS1 header in clusters named by the crypto header
// extension, payload sectors encrypted with IVs from their host offset) and legacy AES (crypt_method 1:
// AES-128-CBC, the passphrase as key, IVs from the guest offset; read and written, as qemu-img 7.2 does).
// The qcow2 driver calls this at open/create and around every data cluster read and write.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "block/block.h"
#include "block/crypto.h"
#include "block/luks.h"

namespace vireo::block::qcow2 {

constexpr uint32_t kExtCryptoHeader = 0x0537be77;
constexpr uint32_t kCryptNone = 0, kCryptAes = 1, kCryptLuks = 2;

class Crypto {
 public:
  // `ext`: the crypto header extension's payload (LUKS only). `read` reads the image file. Without
  // opts.key_secret and with opts.no_io (info), the headers are parsed but can_io() is false.
  static std::unique_ptr<Crypto> open(uint32_t method, const std::vector<uint8_t>* ext, uint64_t file_len,
                                      const luks::ReadFn& read, const OpenOptions& opts);
  bool can_io() const { return cipher_ != nullptr; }
  // Legacy AES is written too: qemu-img 7.2 creates and writes it (IVs from guest offsets, as on read).
  bool writable() const { return method_ == kCryptLuks || method_ == kCryptAes; }
  // Whole 512-byte sectors; `host`/`guest` are the offsets of data[0].
  void decrypt(uint64_t host, uint64_t guest, std::span<uint8_t> data) const;
  void encrypt(uint64_t host, uint64_t guest, std::span<uint8_t> data) const;
  nlohmann::ordered_json info() const;   // format-specific "encrypt" member
  uint64_t header_offset() const { return hdr_off_; }   // LUKS header clusters (0/0 for AES)
  uint64_t header_length() const { return hdr_len_; }

 private:
  uint64_t sector_of(uint64_t host, uint64_t guest) const { return (method_ == kCryptLuks ? host : guest) / 512; }
  const crypto::SectorCipher& cipher() const;
  uint32_t method_ = 0;
  uint64_t hdr_off_ = 0, hdr_len_ = 0;
  std::unique_ptr<luks::Volume> luks_;
  std::unique_ptr<crypto::SectorCipher> aes_;
  const crypto::SectorCipher* cipher_ = nullptr;
};

// Encryption requested by qcow2 create options (encryption=on, encrypt.format=aes|luks, encrypt.*), or
// nullopt. Throws qemu's texts for bad values.
struct CreateCrypto {
  uint32_t method = kCryptNone;
  luks::CreateParams luks;
  std::string password;
};
std::optional<CreateCrypto> create_crypto_request(const CreateOptions& c);
// Bytes the LUKS header area needs with these parameters (header + 8 keyslots).
uint64_t luks_area_bytes(const luks::CreateParams& p);
// Writes the LUKS header at `offset` of the file through `write`; returns the extension payload.
std::vector<uint8_t> create_luks_header(const CreateCrypto& cc, uint64_t offset,
                                        const std::function<void(uint64_t, std::span<const uint8_t>)>& write);

}  // namespace vireo::block::qcow2
