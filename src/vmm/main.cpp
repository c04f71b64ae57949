// vireo-vmm: run one VM (docs/vmm.md). Exit codes: 0 powered off / stopped, 1 bad usage or start-up failure,
// 2 reset, 3 crashed, N debug-exit value. main parses the command line and runs the Machine; everything
// else is the Machine's.
#include <sys/resource.h>

#include <cstdio>
#include <exception>
#include <optional>

#include "devices/serial_backend.h"
#include "kvm/kvm.h"
#include "vmm/machine.h"
#include "vmm/options.h"

namespace {

int fail_exit(const std::string& msg) {
  vireo::restore_all_ttys();
  std::fprintf(stderr, "vireo-vmm: error: %s\n", msg.c_str());
  return vireo::vmm::kExitStartup;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vireo;
  // Guest RAM is excluded from dumps (MADV_DONTDUMP), but a failed start-up must not leave a core either.
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);

  vmm::Launch launch;
  try {
    auto parsed = vmm::parse_options(argc, argv);
    if (!parsed.launch) return parsed.exit_code;
    launch = std::move(*parsed.launch);
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }

  vmm::setup_process_signals();
  int code;
  try {
    kvm::KvmSystem kvm;
    std::optional<vmm::RestoreSpec> restore;
    if (!launch.restore_dir.empty())
      restore = vmm::RestoreSpec{launch.restore_dir, std::move(launch.restore_state), launch.start_paused};
    vmm::Machine machine(launch.config, kvm, restore ? &*restore : nullptr);
    code = machine.run();
    if (code == vmm::kExitReset) std::fprintf(stderr, "vireo-vmm: %s: exiting with 2\n", machine.state_reason().c_str());
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }
  restore_all_ttys();
  std::fflush(stdout);
  return code;
}
