// vireo-vmm: run one VM (docs/vmm.md). Exit codes: 0 powered off / stopped, 1 bad usage or start-up failure,
// 2 reset, 3 crashed, N debug-exit value.
#include <sys/resource.h>

#include <fmt/format.h>

#include <cstdio>
#include <iterator>
#include <exception>
#include <iostream>
#include <memory>

#include "common/error.h"
#include "devices/serial_backend.h"
#include "kvm/kvm.h"
#include "acpi/pm.h"
#include "acpi/tables.h"
#include "vmm/control.h"
#include "vmm/machine.h"
#include "vmm/options.h"
#ifdef VIREO_HAVE_VIRTIO
#include "virtio/balloon.h"
#include "virtio/virtio_devices.h"
#endif

namespace {

int fail_exit(const std::string& msg) {
  vireo::restore_all_ttys();
  std::fprintf(stderr, "vireo-vmm: error: %s\n", msg.c_str());
  return vireo::vmm::kExitStartup;
}

}  // namespace

#ifdef VIREO_HAVE_VIRTIO
namespace {
// QMP-like balloon commands: `balloon {"value": <bytes the guest should keep>}` and `query-balloon`
// (the guest's current size, the virtio statistics it last reported, and bytes returned to the host).
void add_balloon_commands(vireo::vmm::MachineCommands& cmds, vireo::virtio::BalloonDevice& b, uint64_t ram_bytes) {
  using nlohmann::json;
  constexpr uint64_t kPage = 4096;
  cmds.add_command("balloon", [&b, ram_bytes](const json& id, const json& args) -> vireo::vmm::CommandResult {
    if (!args.contains("value") || !args["value"].is_number_unsigned())
      return {vireo::vmm::error_reply(id, "InvalidArgument", "balloon: 'value' (bytes, unsigned) is required"), nullptr};
    const uint64_t value = args["value"].get<uint64_t>();
    if (value == 0 || value > ram_bytes)
      return {vireo::vmm::error_reply(id, "InvalidArgument",
                               fmt::format("balloon: value must be in 1..{} bytes", ram_bytes)), nullptr};
    b.set_target_pages(static_cast<uint32_t>((ram_bytes - value) / kPage));
    return {vireo::vmm::ok_reply(id, json::object()), nullptr};
  });
  cmds.add_command("query-balloon", [&b, ram_bytes](const json& id, const json&) -> vireo::vmm::CommandResult {
    static const char* names[] = {"stat-swap-in",      "stat-swap-out",         "stat-major-faults",
                                  "stat-minor-faults", "stat-free-memory",      "stat-total-memory",
                                  "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc",
                                  "stat-htlb-pgfail"};
    json stats = json::object();
    for (const auto& [tag, val] : b.stats())
      stats[tag < std::size(names) ? names[tag] : fmt::format("stat-tag-{}", tag)] = val;
    b.request_stats();
    json r = {{"actual", ram_bytes - uint64_t{b.actual_pages()} * kPage},
              {"discarded_bytes", b.discarded_bytes()},
              {"stats", stats}};
    return {vireo::vmm::ok_reply(id, r), nullptr};
  });
}
}  // namespace
#endif

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

#ifdef VIREO_HAVE_VIRTIO
  virtio::VirtioOptions vopts;
  try {
    for (const auto& t : opts.disk_texts) vopts.disks.push_back(virtio::parse_disk(t));
    for (const auto& t : opts.net_texts) vopts.nets.push_back(virtio::parse_net(t));
    if (!opts.console_text.empty()) vopts.console = virtio::parse_console(opts.console_text);
    vopts.rng = opts.rng;
    vopts.balloon = opts.balloon;
    if (!opts.transport_text.empty()) vopts.transport = virtio::parse_transport(opts.transport_text);
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }
#else
  if (opts.any_virtio() || !opts.transport_text.empty())
    return fail_exit("virtio devices requested, but this vireo-vmm was built without src/virtio");
#endif

  vmm::setup_process_signals();
  int code;
  try {
    kvm::KvmSystem kvm;
    // ACPI fixed hardware (docs/acpi.md): PM1 registers, power button (the control socket's `shutdown`),
    // S5 power-off (exit 0) and the reset register (exit 2).
    std::shared_ptr<acpi::AcpiPm> acpi_pm;
    auto wire_acpi = [&acpi_pm](vmm::Machine& m) {
      acpi_pm = acpi::install_pm(
          m, [&m] { m.request_exit(vmm::kExitOk, "guest powered off (ACPI S5)", vmm::RunState::Shutoff); },
          [&m] { m.request_exit(vmm::kExitReset, "guest reset (ACPI reset register)", vmm::RunState::Shutoff); });
      m.shutdown_hook = [pm = acpi_pm] { pm->press_power_button(); };
    };
#ifdef VIREO_HAVE_VIRTIO
    std::unique_ptr<virtio::VirtioDevices> virtio_devs;
    auto make_machine = [&]() {
      try {
        return std::make_unique<vmm::Machine>(opts, kvm, [&](vmm::Machine& m) {
          wire_acpi(m);
          if (vopts.any()) virtio_devs = std::make_unique<virtio::VirtioDevices>(m, vopts);
        });
      } catch (...) {
        // The devices were wired into a Machine that no longer exists: tearing them down would touch it.
        // We are about to exit with an error, so let them go without cleanup.
        (void)virtio_devs.release();
        throw;
      }
    };
    auto machine_ptr = make_machine();
    vmm::Machine& machine = *machine_ptr;
    // The ACPI tables describing that hardware replace the boot loader's generic ones in place (same RSDP
    // address, so the pointers boot handed to the guest stay right). Kernel loaded, vCPUs not started yet.
    acpi::write_tables(machine.memory(), {.cpus = opts.cpus});
    // Destroyed before the Machine: on an error path (control socket, run()) the vCPUs may still be running,
    // so the devices are let go without cleanup rather than torn down under them.
    struct ReleaseOnError {
      std::unique_ptr<virtio::VirtioDevices>& devs;
      ~ReleaseOnError() {
        if (std::uncaught_exceptions() > 0) (void)devs.release();
      }
    } release_on_error{virtio_devs};
#else
    vmm::Machine machine(opts, kvm, wire_acpi);
    acpi::write_tables(machine.memory(), {.cpus = opts.cpus});
#endif
    std::unique_ptr<vmm::MachineCommands> commands;
    std::unique_ptr<vmm::ControlServer> control;
    if (!opts.api_socket.empty()) {
      commands = std::make_unique<vmm::MachineCommands>(machine);
#ifdef VIREO_HAVE_VIRTIO
      if (virtio_devs && virtio_devs->balloon())
        add_balloon_commands(*commands, *virtio_devs->balloon(), opts.memory.size);
#endif
      control = std::make_unique<vmm::ControlServer>(machine.io_loop(), opts.api_socket, *commands);
    }
    code = machine.run();
    control.reset();
#ifdef VIREO_HAVE_VIRTIO
    virtio_devs.reset();  // vCPUs are stopped; devices go before the Machine
#endif
    if (code == vmm::kExitReset) std::fprintf(stderr, "vireo-vmm: %s: exiting with 2\n", machine.state_reason().c_str());
  } catch (const std::exception& e) {
    return fail_exit(e.what());
  }
  restore_all_ttys();
  std::fflush(stdout);
  return code;
}
