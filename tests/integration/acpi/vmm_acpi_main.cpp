// vireo-vmm-acpi-wired: a TEST-ONLY vireo-vmm that carries exactly the ACPI wiring docs/acpi.md asks the VMM core
// to add (PM device + shutdown hook in the device-wiring callback; tables written after the kernel is loaded).
// It exists so tests/integration/acpi can check the ACPI path end to end before src/vmm/main.cpp is wired; it
// has no virtio. Same command line, exit codes and control socket as vireo-vmm.
#include <sys/resource.h>

#include <cstdio>
#include <exception>
#include <memory>

#include "acpi/pm.h"
#include "acpi/tables.h"
#include "common/error.h"
#include "devices/serial_backend.h"
#include "kvm/kvm.h"
#include "vmm/control.h"
#include "vmm/machine.h"
#include "vmm/options.h"

int main(int argc, char** argv) {
  using namespace vireo;
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  auto fail_exit = [](const std::string& msg) {
    restore_all_ttys();
    std::fprintf(stderr, "vireo-vmm: error: %s\n", msg.c_str());
    return vmm::kExitStartup;
  };
  vmm::VmmOptions opts;
  try {
    auto parsed = vmm::parse_options(argc, argv);
    if (!parsed.options) return parsed.exit_code;
    opts = std::move(*parsed.options);
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }
  if (opts.any_virtio()) return fail_exit("vireo-vmm-acpi-wired: no virtio in this test build");

  vmm::setup_process_signals();
  int code;
  try {
    kvm::KvmSystem kvm;
    // ---- the ACPI wiring (docs/acpi.md, "Wiring") ----
    std::shared_ptr<acpi::AcpiPm> pm;
    vmm::Machine machine(opts, kvm, [&](vmm::Machine& m) {
      pm = acpi::install_pm(
          m, [&m] { m.request_exit(vmm::kExitOk, "guest powered off (ACPI S5)", vmm::RunState::Shutoff); },
          [&m] { m.request_exit(vmm::kExitReset, "guest reset (ACPI reset register)", vmm::RunState::Shutoff); });
      m.shutdown_hook = [pm] { pm->press_power_button(); };
    });
    acpi::write_tables(machine.memory(), {.cpus = opts.cpus});  // same RSDP address boot announces (0xf8000)
    // ---- end of the ACPI wiring ----
    std::unique_ptr<vmm::MachineCommands> commands;
    std::unique_ptr<vmm::ControlServer> control;
    if (!opts.api_socket.empty()) {
      commands = std::make_unique<vmm::MachineCommands>(machine);
      control = std::make_unique<vmm::ControlServer>(machine.io_loop(), opts.api_socket, *commands);
    }
    code = machine.run();
    control.reset();
    if (code == vmm::kExitReset) std::fprintf(stderr, "vireo-vmm: %s: exiting with 2\n", machine.state_reason().c_str());
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }
  restore_all_ttys();
  std::fflush(stdout);
  return code;
}
