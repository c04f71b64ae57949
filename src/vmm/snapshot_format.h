// vireo/vmm: the on-disk form of a VM snapshot (docs/vmm.md, "Snapshots"). A snapshot folder holds
//   config.json  the typed VmConfig (config::to_json), human-readable
//   memory       guest RAM as one flat file (regions at their memfd offsets), mapped MAP_PRIVATE on restore
//   state.bin    everything else: a fixed header (magic, format version, body length, CRC-32 of the body) and
//                a CBOR body: {"memory": {...}, "kernel_kind", "vm": {...}, "vcpus": [...], "devices": {...}}
// state.bin is written last, each file as temp + fsync + rename: a folder without state.bin is not a
// snapshot, so a save killed at any point leaves nothing that would be loaded.
//
// state.bin is untrusted input: the header catches truncation, corruption and foreign files before the body
// is parsed; every value of the body is then read through JsonReader (one-line errors naming the key), and
// KVM structures are byte strings of their exact ABI size.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "common/json_reader.h"
#include "config/vm_config.h"
#include "kvm/state.h"

namespace vireo::vmm::snapshot {

inline constexpr char kMagic[8] = {'V', 'I', 'R', 'E', 'O', 'S', 'N', 'P'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kHeaderSize = 24;           // magic, u32 version, u32 crc32, u64 body length
inline constexpr uint64_t kMaxBody = 256ull << 20;  // far above any real state; bounds what we read
inline constexpr const char* kStateFile = "state.bin";
inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kMemoryFile = "memory";

// Header + CBOR of `body`.
std::string encode_state(const nlohmann::json& body);
// Validates the header (magic, version, length, CRC) and decodes the body. Throws Error naming `what`:
// "<what>: truncated (N of M bytes)", "<what>: state format version 7, this vireo-vmm reads 1", ...
nlohmann::json decode_state(const std::string& bytes, const std::string& what);

// KVM state <-> body parts. Reading checks every size.
nlohmann::json vcpu_to_json(const kvm::VcpuState& s);
kvm::VcpuState vcpu_from_json(JsonReader& r);
nlohmann::json vm_to_json(const kvm::VmState& s);
kvm::VmState vm_from_json(JsonReader& r);

// Creates `dir` if absent; it must then be an empty folder (else Error "snapshot-save: DIR is not empty").
void prepare_dir(const std::string& dir);
// Writes guest RAM to dir/memory (temp + fsync + rename). Reads a memfd sparsely (SEEK_DATA/SEEK_HOLE) so
// untouched RAM costs nothing; `fd` < 0 means copy from the mapping `base` (a restored VM's private map).
void write_memory(const std::string& dir, int fd, const uint8_t* base, uint64_t size);

}  // namespace vireo::vmm::snapshot

namespace vireo::vmm::snapshot {
// Reads a snapshot folder for --restore: config.json into `cfg` (validated) and state.bin (header and
// encoding checked); the memory file must exist with the configured size. Throws one-line Errors naming the
// file ("snapshot /s: not a snapshot (no state.bin: the save did not complete)").
nlohmann::json read_snapshot(const std::string& dir, config::VmConfig& cfg);
}  // namespace vireo::vmm::snapshot
