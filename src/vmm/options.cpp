#include "vmm/options.h"

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <iostream>

#include "boot/boot.h"
#include "common/error.h"
#include "common/size.h"

namespace vireo::vmm {

bool parse_on_off(const std::string& what, const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (t == "on" || t == "yes" || t == "true" || t == "1") return true;
  if (t == "off" || t == "no" || t == "false" || t == "0") return false;
  fail("{}: expected on or off, got '{}'", what, text);
}

MemoryConfig parse_memory_spec(const std::string& text) {
  MemoryConfig cfg;
  if (text.empty()) fail("--memory: empty value");
  auto parse_sz = [](const std::string& v) -> uint64_t {
    try {
      return parse_size(v, 1ull << 20);  // bare numbers are MiB
    } catch (const Error& e) {
      fail("--memory: {}", e.what());
    }
  };
  if (text.find('=') == std::string::npos) {
    cfg.size = parse_sz(text);
  } else {
    bool have_size = false;
    size_t pos = 0;
    while (pos <= text.size()) {
      const size_t comma = text.find(',', pos);
      const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
      const size_t eq = item.find('=');
      if (eq == std::string::npos) fail("--memory: expected key=value, got '{}'", item);
      const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
      if (key == "size") {
        cfg.size = parse_sz(val);
        have_size = true;
      } else if (key == "hugepages") {
        cfg.hugepages = parse_on_off("--memory hugepages", val);
      } else if (key == "thp") {
        cfg.thp = parse_on_off("--memory thp", val);
      } else if (key == "prealloc") {
        cfg.prealloc = parse_on_off("--memory prealloc", val);
      } else {
        fail("--memory: unknown key '{}' (size, hugepages, thp, prealloc)", key);
      }
    }
    if (!have_size) fail("--memory: size= missing");
  }
  if (cfg.size == 0) fail("--memory: size must be greater than 0");
  const uint64_t align = cfg.hugepages ? (2ull << 20) : 4096;
  if (cfg.size % align != 0)
    fail("--memory: {} bytes is not a multiple of {}", cfg.size, cfg.hugepages ? "2 MiB (hugepages)" : "4 KiB");
  if (cfg.size < (2ull << 20)) fail("--memory: {} is too small (at least 2 MiB)", format_size(cfg.size));
  if (cfg.size > (1ull << 46)) fail("--memory: {} is too large", format_size(cfg.size));
  return cfg;
}

namespace {

void check_readable(const std::string& what, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(what + " " + path);
  ::close(fd);
}

}  // namespace

ParseResult parse_options(int argc, const char* const* argv) {
  VmmOptions o;
  std::string memory = "256M", native = "on";
  long long cpus = 1;

  CLI::App app{"vireo-vmm: run one KVM virtual machine (see docs/vmm.md)", "vireo-vmm"};
  app.add_option("--kernel", o.kernel, "bzImage, PVH ELF or Vireo test-guest ELF64")->required();
  app.add_option("--initrd", o.initrd, "initial ramdisk (Linux)");
  app.add_option("--cmdline", o.cmdline, "kernel command line");
  app.add_option("--memory", memory, "SIZE or size=SIZE[,hugepages=on|off][,thp=on|off][,prealloc=on|off]")
      ->capture_default_str();
  app.add_option("--cpus", cpus, "number of vCPUs")->capture_default_str();
  app.add_option("--cpu", o.cpu_text, "host-passthrough | host-model | custom[=MODEL]")->capture_default_str();
  app.add_option("--serial", o.serial_text, "stdio | none | file=PATH | pty | unix=PATH")->capture_default_str();
  app.add_option("--api-socket", o.api_socket, "control socket path (JSON lines)");
  app.add_option("--name", o.name, "VM name (query-vm)")->capture_default_str();
  app.add_option("--native", native, "on|off: PVM native mode for long-mode guests")->capture_default_str();
  app.add_option("--boot-log", o.boot_log, "write boot-marker lines to FILE instead of stderr");
  app.add_option("--disk", o.disk_texts, "virtio-blk: path=F[,format=raw|qcow2][,readonly=on][,cache=none]...");
  app.add_option("--net", o.net_texts, "virtio-net: tap=NAME[,mac=M][,queues=N]");
  app.add_option("--console", o.console_text, "virtio-console: stdio | pty | unix=PATH");
  app.add_flag("--rng", o.rng, "virtio-rng");
  app.add_flag("--balloon", o.balloon, "virtio-balloon");
  app.add_option("--transport", o.transport_text, "virtio transport: pci (default) | mmio");

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

  o.memory = parse_memory_spec(memory);
  if (cpus <= 0) fail("--cpus: must be at least 1, got {}", cpus);
  if (cpus > 4096) fail("--cpus {}: more vCPUs than KVM allows", cpus);
  o.cpus = static_cast<uint32_t>(cpus);
  o.cpu = cpu::parse_cpu_spec(o.cpu_text);
  o.serial = parse_serial_spec(o.serial_text);
  if (o.console_text == "stdio" && o.serial.kind == SerialSpec::Kind::Stdio)
    o.serial.input = false;  // stdin belongs to the virtio console; serial output still goes to stdout
  o.native = parse_on_off("--native", native);
  if (o.name.empty()) fail("--name: must not be empty");
  if (!o.api_socket.empty() && o.api_socket.size() >= 108) fail("--api-socket: path too long: {}", o.api_socket);

  boot::probe_kernel(o.kernel);  // throws "kernel /x: ..." one-liners
  if (!o.initrd.empty()) check_readable("initrd", o.initrd);
  return ParseResult{std::move(o), 0};
}

}  // namespace vireo::vmm
