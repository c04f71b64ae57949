// vireo/vmm: vireo-vmm's command line (docs/vmm.md), parsed and validated without touching /dev/kvm. Every
// flag fills the one config::VmConfig; `--config vm.json` loads it from a file first, and flags given as well
// override the file's values (a repeatable flag such as --disk replaces the whole list).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config/vm_config.h"

namespace vireo::vmm {

struct Launch {
  config::VmConfig config;
  // --restore DIR [--paused]: config is DIR/config.json with the host-side flags applied; restore_state is
  // DIR/state.bin, its header and encoding already checked (snapshot_format.h).
  std::string restore_dir;
  nlohmann::json restore_state;
  bool start_paused = false;
};

// Result of parse_options: either what to run, or an exit (help text already printed).
struct ParseResult {
  std::optional<Launch> launch;
  int exit_code = 0;
};

// Parses and validates argv (CLI11). Bad input throws Error with a one-line message; --help prints and returns
// exit_code 0. Checks the kernel with boot::probe_kernel and that the initrd is readable.
ParseResult parse_options(int argc, const char* const* argv);

}  // namespace vireo::vmm
