#include "vmm/options.h"

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <vector>

#include "boot/boot.h"
#include "common/error.h"
#include "config/flags.h"
#include "vmm/snapshot_format.h"

namespace vireo::vmm {

namespace {

void check_readable(const std::string& what, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(what + " " + path);
  ::close(fd);
}

// The flags' texts, as typed; applied onto the config only when given.
struct Texts {
  std::string config_file, arch, kernel, initrd, cmdline, memory, cpu, serial, api_socket, name, native, boot_log,
      console, transport, restore;
  long long cpus = 1;
  std::vector<std::string> disks, nets;
  bool rng = false, balloon = false, paused = false;
};

}  // namespace

ParseResult parse_options(int argc, const char* const* argv) {
  Texts t;
  CLI::App app{"vireo-vmm: run one KVM virtual machine (see docs/vmm.md)", "vireo-vmm"};
  app.add_option("--config", t.config_file, "VM configuration (JSON, docs/vmm.md); other flags override it");
  app.add_option("--arch", t.arch, "guest CPU: x86_64 (default) | i686 (no long mode; 32-bit boot only)");
  app.add_option("--kernel", t.kernel, "bzImage, PVH ELF or Vireo test-guest ELF64");
  app.add_option("--initrd", t.initrd, "initial ramdisk (Linux)");
  app.add_option("--cmdline", t.cmdline, "kernel command line");
  app.add_option("--memory", t.memory, "SIZE or size=SIZE[,hugepages=on|off][,thp=on|off][,prealloc=on|off] (256M)");
  app.add_option("--cpus", t.cpus, "number of vCPUs (1)");
  app.add_option("--cpu", t.cpu, "host-passthrough | host-model | custom[=MODEL] (host-model)");
  app.add_option("--serial", t.serial, "stdio | none | file=PATH | pty | unix=PATH (stdio)");
  app.add_option("--api-socket", t.api_socket, "control socket path (JSON lines)");
  app.add_option("--name", t.name, "VM name (query-vm; vireo)");
  app.add_option("--native", t.native, "on|off: PVM native mode for long-mode guests (on)");
  app.add_option("--boot-log", t.boot_log, "write boot-marker lines to FILE instead of stderr");
  app.add_option("--disk", t.disks, "virtio-blk: path=F[,format=raw|qcow2][,readonly=on][,cache=none]...");
  app.add_option("--net", t.nets, "virtio-net: tap=NAME[,mac=M][,queues=N]");
  app.add_option("--console", t.console, "virtio-console: stdio | pty | unix=PATH");
  app.add_flag("--rng", t.rng, "virtio-rng");
  app.add_flag("--balloon", t.balloon, "virtio-balloon");
  app.add_option("--transport", t.transport, "virtio transport: pci (default) | mmio");
  app.add_option("--restore", t.restore, "continue the VM saved by snapshot-save in DIR");
  app.add_flag("--paused", t.paused, "with --restore: stay paused until the control socket's resume");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return ParseResult{std::nullopt, 0};
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help();
    return ParseResult{std::nullopt, 0};
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    fail("{}", msg);
  }
  auto given = [&](const char* flag) { return app.count(flag) > 0; };

  Launch l;
  config::VmConfig& c = l.config;
  if (given("--paused") && !given("--restore")) fail("--paused needs --restore DIR");
  if (given("--restore")) {
    // The saved configuration describes the guest; only host-side settings may change.
    for (const char* f : {"--config", "--kernel", "--initrd", "--cmdline", "--memory", "--cpus", "--cpu", "--native",
                          "--rng", "--balloon", "--transport", "--arch"})
      if (given(f)) fail("{} cannot be combined with --restore (the snapshot holds the VM's configuration)", f);
    config::HostOverrides o;
    if (given("--serial")) o.serial = parse_serial_spec(t.serial);
    if (given("--api-socket")) o.api_socket = t.api_socket;
    if (given("--name")) o.name = t.name;
    if (given("--boot-log")) o.boot_log = t.boot_log;
    if (given("--disk")) {
      o.disks.emplace();
      for (const auto& d : t.disks) o.disks->push_back(config::parse_disk(d));
    }
    if (given("--net")) {
      o.nets.emplace();
      for (const auto& n : t.nets) o.nets->push_back(config::parse_net(n));
    }
    if (given("--console")) o.console = config::parse_console(t.console);
    l.restore_dir = t.restore;
    l.start_paused = t.paused;
    l.restore_state = snapshot::read_snapshot(t.restore, c);
    config::apply_overrides(c, o);
    return ParseResult{std::move(l), 0};
  }
  if (given("--config")) c = config::load_vm_config(t.config_file);
  else if (!given("--kernel")) fail("--kernel is required (or --config FILE)");
  if (given("--arch")) c.arch = cpu::parse_arch(t.arch, "--arch");
  if (given("--kernel")) c.boot.kernel = t.kernel;
  if (given("--initrd")) c.boot.initrd = t.initrd;
  if (given("--cmdline")) c.boot.cmdline = t.cmdline;
  if (given("--memory")) c.memory = config::parse_memory_spec(t.memory);
  if (given("--cpus")) {
    if (t.cpus <= 0) fail("--cpus: must be at least 1, got {}", t.cpus);
    if (t.cpus > config::kMaxVcpus)
      fail("--cpus {}: at most {} vCPUs are supported (8-bit APIC ids)", t.cpus, config::kMaxVcpus);
    c.cpus = static_cast<uint32_t>(t.cpus);
  }
  if (given("--cpu")) c.cpu = cpu::parse_cpu_spec(t.cpu);
  if (given("--serial")) c.serial = parse_serial_spec(t.serial);
  if (given("--api-socket")) c.api_socket = t.api_socket;
  if (given("--name")) c.name = t.name;
  if (given("--native")) c.native = config::parse_on_off("--native", t.native);
  if (given("--boot-log")) c.boot_log = t.boot_log;
  if (given("--disk")) {
    c.disks.clear();
    for (const auto& d : t.disks) c.disks.push_back(config::parse_disk(d));
  }
  if (given("--net")) {
    c.nets.clear();
    for (const auto& n : t.nets) c.nets.push_back(config::parse_net(n));
  }
  if (given("--console")) c.console = config::parse_console(t.console);
  if (given("--rng")) c.rng = t.rng;
  if (given("--balloon")) c.balloon = t.balloon;
  if (given("--transport")) c.transport = config::parse_transport(t.transport);
  c.validate();

  // Throws "kernel /x: ..." one-liners, including a 64-bit-only kernel on an i686 VM.
  boot::probe_kernel(c.boot.kernel, c.arch == cpu::Arch::X86_64);
  if (!c.boot.initrd.empty()) check_readable("initrd", c.boot.initrd);
  return ParseResult{std::move(l), 0};
}

}  // namespace vireo::vmm
