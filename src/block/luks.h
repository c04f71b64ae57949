// vireo/block: LUKS version 1 volumes (cryptsetup's on-disk format, as QEMU reads and writes it): header
// parsing with every field bounds-checked, keyslot unlock (PBKDF2 + AF merge + master key digest), keyslot
// creation, and the sector cipher of the payload. Used by the raw `luks` driver and by qcow2 encryption.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>

#include "block/crypto.h"

namespace vireo::block::luks {

constexpr size_t kHeaderSize = 592;
constexpr size_t kNumSlots = 8;
constexpr uint32_t kStripes = 4000;
constexpr uint32_t kSlotEnabled = 0x00AC71F3;
constexpr uint32_t kSlotDisabled = 0x0000DEAD;
constexpr uint64_t kSectorSize = 512;
constexpr uint64_t kKeySlotOffset = 4096;   // first keyslot's material (bytes); the header's own area

struct Keyslot {
  uint32_t active = kSlotDisabled;
  uint32_t iterations = 0;
  std::array<uint8_t, 32> salt{};
  uint32_t key_offset_sector = 0;
  uint32_t stripes = kStripes;
};

struct Header {
  uint16_t version = 1;
  std::string cipher_name, cipher_mode, hash_spec;   // "aes", "xts-plain64", "sha256"
  uint32_t payload_offset_sector = 0;
  uint32_t key_bytes = 0;
  std::array<uint8_t, 20> mk_digest{};
  std::array<uint8_t, 32> mk_salt{};
  uint32_t mk_iterations = 0;
  std::string uuid;
  std::array<Keyslot, kNumSlots> slots{};
};

// True if the bytes start with the LUKS magic and version 1 (qemu's probe).
bool probe(std::span<const uint8_t> start);
// Parses and validates the 592-byte header (qemu's checks and texts: "Volume is not in LUKS format",
// "Keyslot 3 is corrupted (stripes 5 != 4000)", "LUKS payload is overlapping with the header", ...).
Header parse_header(std::span<const uint8_t> raw);
std::array<uint8_t, kHeaderSize> serialize_header(const Header& h);

// The algorithms a header names ("Algorithm 'foo' with key size 32 bytes not supported", ...).
struct Params {
  crypto::CipherAlg alg = crypto::CipherAlg::AES256;
  crypto::CipherMode mode = crypto::CipherMode::XTS;
  crypto::IvGen ivgen = crypto::IvGen::Plain64;
  std::optional<crypto::Hash> ivgen_hash;
  crypto::Hash hash = crypto::Hash::SHA256;
};
Params parse_params(const Header& h);

// Anti-forensic split/merge (LUKS spec section 2.4), diffusion with `h`.
void af_merge(crypto::Hash h, std::span<const uint8_t> split, uint32_t stripes, std::span<uint8_t> key);
void af_split(crypto::Hash h, std::span<const uint8_t> key, uint32_t stripes, std::span<uint8_t> split);

using ReadFn = std::function<void(uint64_t offset, std::span<uint8_t> buf)>;
using WriteFn = std::function<void(uint64_t offset, std::span<const uint8_t> buf)>;

struct CreateParams {
  Params params;
  uint64_t iter_time_ms = 2000;
};

class Volume {
 public:
  // Reads the header through `read` (offsets relative to the start of the LUKS area). With a password the
  // master key is unlocked ("Invalid password, cannot unlock any keyslot"); without one (qemu's NO_IO open,
  // for info) only the header is parsed and cipher() is null.
  static std::unique_ptr<Volume> open(const ReadFn& read, const std::optional<std::string>& password);
  // Writes a new header and keyslot 0 through `write` (a fresh random master key) and returns the volume.
  // `extra_payload_align`: the payload offset is rounded up to it (bytes; 0 = LUKS's own layout).
  static std::unique_ptr<Volume> create(const CreateParams& p, const std::string& password, const WriteFn& write);

  const Header& header() const { return h_; }
  const Params& params() const { return p_; }
  uint64_t payload_offset() const { return uint64_t(h_.payload_offset_sector) * kSectorSize; }
  // Bytes of the LUKS area that hold the header and the key material (the payload offset).
  uint64_t header_area_size() const { return payload_offset(); }
  const crypto::SectorCipher* cipher() const { return cipher_.get(); }
  // qemu's QCryptoBlockInfoLUKS members, in the order qemu-img prints them. `format` (qcow2's "encrypt"
  // member) is inserted where qemu places it when set.
  nlohmann::ordered_json info(const char* format = nullptr) const;

 private:
  Header h_;
  Params p_;
  std::unique_ptr<crypto::SectorCipher> cipher_;
};

// The key material size of one keyslot in sectors, rounded to the header area alignment (qemu's layout).
uint64_t split_key_sectors(uint32_t key_bytes, uint32_t stripes);

}  // namespace vireo::block::luks
