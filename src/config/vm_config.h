// vireo/config: the one typed description of a virtual machine. vireo-vmm runs from it (`--config vm.json`, or
// the command-line flags, which fill the same struct: src/vmm/options.cpp), vireod writes it for each domain
// (src/domain/vmm_args.cpp), and snapshots and migration streams carry it. JSON via nlohmann-json; the schema
// is documented in docs/vmm.md ("VM configuration").
//
// Split of responsibilities: the flag parsers (config/flags.h) check syntax; validate() checks meaning, for
// every source alike (flags, JSON file, snapshot, migration stream), and throws vireo::Error with one line.
//
// Adding a field: add it to the struct with its default, to to_json()/from_json() in vm_config.cpp (unknown
// keys are rejected, so a missing from_json entry shows up at once in the round-trip test), to validate() if
// it has constraints, and to a flag in src/vmm/options.cpp if users set it on the command line. Host-side
// settings (paths on this host, sockets) also go into HostOverrides so --restore/--incoming can replace them.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/cpu_model.h"
#include "devices/serial_backend.h"
#include "memory/guest_memory.h"

namespace vireo::config {

// The single vCPU limit: xAPIC ids are 8 bits (0xff is broadcast), and the MP table/MADT carry 8-bit ids.
// KVM may allow fewer (KVM_CAP_MAX_VCPUS): the Machine checks that once /dev/kvm is open.
inline constexpr uint32_t kMaxVcpus = 254;
inline constexpr uint32_t kConfigVersion = 1;

enum class Transport { Pci, Mmio };
const char* transport_name(Transport t);  // "pci", "mmio"

struct DiskConfig {
  std::string path;
  std::string format;        // "" = probe, "raw", "qcow2"
  bool read_only = false;
  bool direct = false;       // cache=none/directsync: O_DIRECT
  std::string serial;        // GET_ID, <= 20 bytes
  uint16_t queues = 1;       // 1..64
  std::string engine = "auto";  // auto | threads | uring (uring: raw files only)
  // `what` names the item in messages ("--disk", "disks[1]").
  void validate(const std::string& what) const;
};

struct NetConfig {
  std::string tap;                            // interface name (created if missing, when permitted)
  std::optional<std::array<uint8_t, 6>> mac;  // default: 52:54:00:12:34:(56+index)
  uint16_t queues = 1;                        // queue pairs, 1..16
  void validate(const std::string& what) const;
};

struct ConsoleConfig {
  enum class Kind { Stdio, Pty, Unix } kind = Kind::Stdio;
  std::string path;  // Unix
};

struct BootSource {
  std::string kernel;   // bzImage, PVH ELF or Vireo test-guest ELF64
  std::string initrd;
  std::string cmdline;
};

struct VmConfig {
  std::string name = "vireo";
  cpu::Arch arch = cpu::Arch::X86_64;  // i686: CPUID without long mode, 32-bit boot protocols only
  BootSource boot;
  MemoryConfig memory{.size = 256ull << 20};  // memory.name (the memfd's name) is not part of the config
  uint32_t cpus = 1;
  cpu::CpuSpec cpu;
  bool native = true;  // PVM native mode for long-mode guests (no effect on hardware KVM)
  // Host side.
  SerialSpec serial;   // serial0's backend
  std::string api_socket;
  std::string boot_log;
  // Virtio devices, in this order: disks, nets, console, rng, balloon.
  std::vector<DiskConfig> disks;
  std::vector<NetConfig> nets;
  std::optional<ConsoleConfig> console;
  bool rng = false;
  bool balloon = false;
  Transport transport = Transport::Pci;

  bool any_virtio() const { return !disks.empty() || !nets.empty() || console || rng || balloon; }
  // Every constraint that does not need the host (files are checked where they are opened). One-line Error.
  void validate() const;
};

nlohmann::json to_json(const VmConfig& c);
// Strict: unknown keys, wrong types and out-of-range numbers are errors naming the key
// ("memory.size: expected an unsigned number"). Calls validate(). `source` prefixes messages ("vm.json").
VmConfig from_json(const nlohmann::json& j, const std::string& source);
VmConfig load_vm_config(const std::string& path);            // reads + parses + validates a JSON file
void write_vm_config(const std::string& path, const VmConfig& c);  // temp + fsync + rename

// Host-side settings given again when a saved or migrated VM starts on this host; they replace the saved
// ones. Guest-visible settings of a disk or NIC (format, read-only, serial, queues, MAC) must not change.
struct HostOverrides {
  std::optional<std::string> name;
  std::optional<SerialSpec> serial;
  std::optional<std::string> api_socket, boot_log;
  std::optional<std::vector<DiskConfig>> disks;
  std::optional<std::vector<NetConfig>> nets;
  std::optional<ConsoleConfig> console;
  bool empty() const { return !name && !serial && !api_socket && !boot_log && !disks && !nets && !console; }
};
// Applies `o` to `c` and re-validates; throws Error naming the conflict ("--disk 0: serial differs from the
// saved VM").
void apply_overrides(VmConfig& c, const HostOverrides& o);

}  // namespace vireo::config
