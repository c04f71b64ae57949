// vireo-vmm: run one VM (docs/vmm.md). Exit codes: 0 powered off / stopped, 1 bad usage or start-up failure,
// 2 reset, 3 crashed, N debug-exit value.
#include <sys/resource.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>

#include "common/error.h"
#include "devices/serial_backend.h"
#include "kvm/kvm.h"
#include "vmm/control.h"
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

  vmm::VmmOptions opts;
  try {
    auto parsed = vmm::parse_options(argc, argv);
    if (!parsed.options) return parsed.exit_code;
    opts = std::move(*parsed.options);
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }

  vmm::setup_process_signals();
  int code;
  try {
    kvm::KvmSystem kvm;
    vmm::Machine machine(opts, kvm);
    std::unique_ptr<vmm::MachineCommands> commands;
    std::unique_ptr<vmm::ControlServer> control;
    if (!opts.api_socket.empty()) {
      commands = std::make_unique<vmm::MachineCommands>(machine);
      control = std::make_unique<vmm::ControlServer>(machine.io_loop(), opts.api_socket, *commands);
    }
    code = machine.run();
    control.reset();
    const auto state = machine.state();
    if (code == vmm::kExitReset) std::fprintf(stderr, "vireo-vmm: %s: exiting with 2\n", machine.state_reason().c_str());
    (void)state;
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }
  restore_all_ttys();
  std::fflush(stdout);
  return code;
}
