#include "block/qcow2_crypto.h"

#include <cerrno>
#include <cstring>

#include "block/luks_image.h"
#include "block/secret.h"
#include "common/error.h"

namespace vireo::block::qcow2 {

namespace {
uint64_t get_be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}
void set_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
}  // namespace

std::unique_ptr<Crypto> Crypto::open(uint32_t method, const std::vector<uint8_t>* ext, uint64_t file_len,
                                     const luks::ReadFn& read, const OpenOptions& opts) {
  auto c = std::make_unique<Crypto>();
  c->method_ = method;
  const auto password = luks_open_password(opts, "encrypt.");
  if (method == kCryptAes) {
    if (password) {
      // qemu's legacy key: the passphrase bytes, at most 16, zero padded.
      uint8_t key[16] = {};
      std::memcpy(key, password->data(), std::min<size_t>(16, password->size()));
      c->aes_ = std::make_unique<crypto::SectorCipher>(crypto::CipherAlg::AES128, crypto::CipherMode::CBC,
                                                       crypto::IvGen::Plain64, std::nullopt, key);
      c->cipher_ = c->aes_.get();
    }
    return c;
  }
  if (method != kCryptLuks) fail("Invalid encryption method {} in qcow2 header", method);
  if (!ext || ext->size() < 16) fail("Missing or invalid crypto header extension for LUKS encryption");
  c->hdr_off_ = get_be64(ext->data());
  c->hdr_len_ = get_be64(ext->data() + 8);
  if (c->hdr_off_ == 0 || c->hdr_off_ > file_len || c->hdr_len_ > file_len - c->hdr_off_ ||
      c->hdr_len_ < luks::kHeaderSize)
    fail("Invalid crypto header offset {} length {} (file size {})", c->hdr_off_, c->hdr_len_, file_len);
  const uint64_t base = c->hdr_off_, len = c->hdr_len_;
  c->luks_ = luks::Volume::open(
      [&](uint64_t off, std::span<uint8_t> b) {
        if (off > len || b.size() > len - off) fail("LUKS key material lies outside the crypto header area");
        read(base + off, b);
      },
      password);
  c->cipher_ = c->luks_->cipher();
  return c;
}

const crypto::SectorCipher& Crypto::cipher() const {
  if (!cipher_) throw Error("Parameter 'encrypt.key-secret' is required for cipher", EACCES);
  return *cipher_;
}

void Crypto::decrypt(uint64_t host, uint64_t guest, std::span<uint8_t> data) const {
  cipher().decrypt(sector_of(host, guest), data);
}

void Crypto::encrypt(uint64_t host, uint64_t guest, std::span<uint8_t> data) const {
  if (!writable()) throw Error("Writing AES-encrypted qcow2 images is not supported; convert them instead", ENOTSUP);
  cipher().encrypt(sector_of(host, guest), data);
}

nlohmann::ordered_json Crypto::info() const {
  if (method_ == kCryptAes) return {{"format", "aes"}};
  return luks_->info("luks");
}

std::optional<CreateCrypto> create_crypto_request(const CreateOptions& c) {
  std::optional<std::string> format;
  for (const auto& kv : c.extra) {
    if (kv.first == "encrypt.format") format = kv.second;
    if (kv.first == "encryption" && (kv.second == "on" || kv.second == "yes" || kv.second == "true")) format = "aes";
  }
  if (!format) {
    for (const auto& kv : c.extra)
      if (kv.first.rfind("encrypt.", 0) == 0) format = "luks";   // qemu: encrypt.* alone implies nothing
    if (!format) return std::nullopt;
    fail("Parameter 'encrypt.format' is required when encrypt.* options are given");
  }
  CreateCrypto cc;
  if (*format == "aes") {
    cc.method = kCryptAes;
    std::optional<std::string> secret;
    for (const auto& kv : c.extra)
      if (kv.first == "encrypt.key-secret") secret = kv.second;
    if (!secret) fail("Parameter 'encrypt.key-secret' is required for cipher");
    cc.password = lookup_secret(*secret);
    return cc;
  }
  if (*format != "luks") fail("Parameter 'format' does not accept value '{}'", *format);
  cc.method = kCryptLuks;
  const LuksCreateRequest r = luks_create_request(c, "encrypt.");
  cc.luks = r.params;
  cc.password = r.password;
  return cc;
}

uint64_t luks_area_bytes(const luks::CreateParams& p) {
  const uint32_t key_bytes =
      static_cast<uint32_t>(crypto::key_len(p.params.alg) * (p.params.mode == crypto::CipherMode::XTS ? 2 : 1));
  return luks::kKeySlotOffset + luks::kNumSlots * luks::split_key_sectors(key_bytes, luks::kStripes) * luks::kSectorSize;
}

std::vector<uint8_t> create_luks_header(const CreateCrypto& cc, uint64_t offset,
                                        const std::function<void(uint64_t, std::span<const uint8_t>)>& write) {
  auto v = luks::Volume::create(cc.luks, cc.password,
                                [&](uint64_t off, std::span<const uint8_t> b) { write(offset + off, b); });
  std::vector<uint8_t> ext(16);
  set_be64(ext.data(), offset);
  set_be64(ext.data() + 8, v->payload_offset());
  return ext;
}

}  // namespace vireo::block::qcow2
