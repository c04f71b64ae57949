// vireo/vmm: vireo-vmm's command line (docs/vmm.md), parsed and validated without touching /dev/kvm.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpu/cpu_model.h"
#include "devices/serial_backend.h"
#include "memory/guest_memory.h"

namespace vireo::vmm {

struct VmmOptions {
  std::string kernel, initrd, cmdline;
  MemoryConfig memory;
  uint32_t cpus = 1;
  cpu::CpuSpec cpu;
  std::string cpu_text = "host-model";
  SerialSpec serial;
  std::string serial_text = "stdio";
  std::string api_socket;
  std::string name = "vireo";
  std::string boot_log;   // boot-marker lines go here instead of stderr
  bool native = true;     // --native on|off (PVM only)
  // Virtio device flags, kept as text here and parsed by the virtio library in main (docs/virtio.md).
  std::vector<std::string> disk_texts, net_texts;
  std::string console_text, transport_text;
  bool rng = false, balloon = false;
  bool any_virtio() const {
    return !disk_texts.empty() || !net_texts.empty() || !console_text.empty() || rng || balloon;
  }
};

// "SIZE" or "size=SIZE[,hugepages=on|off][,thp=on|off][,prealloc=on|off]"; SIZE without a suffix is MiB
// (as QEMU's -m). Throws Error("--memory: ...") naming the problem (0, junk, unknown key, not 4K-aligned).
MemoryConfig parse_memory_spec(const std::string& text);

// "on"/"off" (also yes/no, true/false, 1/0); throws Error("<what>: expected on or off, got 'x'").
bool parse_on_off(const std::string& what, const std::string& text);

// Result of parse_options: either options to run with, or an exit (help/version text already printed).
struct ParseResult {
  std::optional<VmmOptions> options;
  int exit_code = 0;
};

// Parses and validates argv (CLI11). Bad input throws Error with a one-line message; --help prints and returns
// exit_code 0. Checks the kernel with boot::probe_kernel and that the initrd is readable.
ParseResult parse_options(int argc, const char* const* argv);

}  // namespace vireo::vmm
