#include "config/vm_config.h"

#include <sys/un.h>

#include "common/error.h"
#include "common/file.h"
#include "common/json_reader.h"
#include "config/flags.h"

namespace vireo::config {

using nlohmann::json;

const char* transport_name(Transport t) { return t == Transport::Mmio ? "mmio" : "pci"; }

// ---------------------------------------------------------------------------------------------------------
// Validation

void DiskConfig::validate(const std::string& what) const {
  if (path.empty()) fail("{}: path= is required", what);
  if (!format.empty() && format != "raw" && format != "qcow2")
    fail("{}: format must be raw or qcow2, not '{}'", what, format);
  if (serial.size() > 20) fail("{}: serial is at most 20 characters ('{}' has {})", what, serial, serial.size());
  if (queues < 1 || queues > 64) fail("{}: queues must be 1-64, not {}", what, queues);
  if (engine != "auto" && engine != "threads" && engine != "uring")
    fail("{}: engine must be auto, threads or uring, not '{}'", what, engine);
}

void NetConfig::validate(const std::string& what) const {
  if (tap.empty()) fail("{}: tap= is required", what);
  if (tap.size() > 15) fail("{}: tap name must be 1-15 characters, not '{}'", what, tap);
  if (mac && ((*mac)[0] & 1)) fail("{}: mac '{}' is a multicast address", what, format_mac(*mac));
  if (queues < 1 || queues > 16) fail("{}: queues must be 1-16, not {}", what, queues);
}

namespace {

void validate_socket_path(const std::string& what, const std::string& path) {
  if (path.empty()) fail("{}: a path is required", what);
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) fail("{}: path too long: {}", what, path);
}

}  // namespace

void VmConfig::validate() const {
  if (name.empty()) fail("--name: must not be empty");
  if (name.size() > 200) fail("--name: longer than 200 characters");
  if (boot.kernel.empty()) fail("--kernel: required");
  validate_memory("--memory", memory);
  if (cpus == 0) fail("--cpus: must be at least 1, got 0");
  if (cpus > kMaxVcpus) fail("--cpus {}: at most {} vCPUs are supported (8-bit APIC ids)", cpus, kMaxVcpus);
  if (cpu.mode == cpu::CpuMode::Custom) (void)cpu::parse_cpu_spec(cpu::format_cpu_spec(cpu));  // known model
  if (serial.kind == SerialSpec::Kind::File && serial.path.empty()) fail("serial: file= needs a path");
  if (serial.kind == SerialSpec::Kind::Unix) validate_socket_path("serial: unix=", serial.path);
  if (!api_socket.empty()) validate_socket_path("--api-socket", api_socket);
  for (size_t i = 0; i < disks.size(); ++i) disks[i].validate(fmt::format("--disk {}", i));
  for (size_t i = 0; i < nets.size(); ++i) nets[i].validate(fmt::format("--net {}", i));
  if (disks.size() + nets.size() > 24) fail("at most 24 disks and network interfaces together");
  if (console && console->kind == ConsoleConfig::Kind::Unix) validate_socket_path("--console unix=", console->path);
}

// ---------------------------------------------------------------------------------------------------------
// JSON

namespace {

const char* serial_kind_name(SerialSpec::Kind k) {
  switch (k) {
    case SerialSpec::Kind::Stdio: return "stdio";
    case SerialSpec::Kind::None: return "none";
    case SerialSpec::Kind::File: return "file";
    case SerialSpec::Kind::Pty: return "pty";
    case SerialSpec::Kind::Unix: return "unix";
  }
  return "none";
}

const char* console_kind_name(ConsoleConfig::Kind k) {
  switch (k) {
    case ConsoleConfig::Kind::Stdio: return "stdio";
    case ConsoleConfig::Kind::Pty: return "pty";
    case ConsoleConfig::Kind::Unix: return "unix";
  }
  return "stdio";
}

const char* cpu_mode_name(cpu::CpuMode m) {
  switch (m) {
    case cpu::CpuMode::HostPassthrough: return "host-passthrough";
    case cpu::CpuMode::HostModel: return "host-model";
    case cpu::CpuMode::Custom: return "custom";
  }
  return "host-model";
}

json disk_json(const DiskConfig& d) {
  return {{"path", d.path},     {"format", d.format}, {"readonly", d.read_only}, {"cache", d.direct ? "none" : "writeback"},
          {"serial", d.serial}, {"queues", d.queues}, {"engine", d.engine}};
}

json net_json(const NetConfig& n) {
  json j = {{"tap", n.tap}, {"queues", n.queues}};
  if (n.mac) j["mac"] = format_mac(*n.mac);
  return j;
}

json serial_json(const SerialSpec& s) {
  json j = {{"kind", serial_kind_name(s.kind)}};
  if (!s.path.empty()) j["path"] = s.path;
  return j;
}

json console_json(const ConsoleConfig& c) {
  json j = {{"kind", console_kind_name(c.kind)}};
  if (!c.path.empty()) j["path"] = c.path;
  return j;
}

DiskConfig disk_from(JsonReader r) {
  DiskConfig d;
  d.path = r.str("path");
  r.opt("format", d.format);
  r.opt("readonly", d.read_only);
  std::string cache = "writeback";
  r.opt("cache", cache);
  if (cache == "none" || cache == "directsync") d.direct = true;
  else if (cache != "writeback" && cache != "writethrough" && cache != "default")
    fail("{}: cache must be none, writeback or writethrough, not '{}'", r.key_path("cache"), cache);
  r.opt("serial", d.serial);
  r.opt_uint("queues", d.queues);
  r.opt("engine", d.engine);
  r.finish();
  d.validate(r.path());
  return d;
}

NetConfig net_from(JsonReader r) {
  NetConfig n;
  n.tap = r.str("tap");
  if (r.has("mac")) n.mac = parse_mac(r.key_path("mac"), r.str("mac"));
  else r.skip("mac");
  r.opt_uint("queues", n.queues);
  r.finish();
  n.validate(r.path());
  return n;
}

SerialSpec serial_from(JsonReader r) {
  const std::string kind = r.str("kind");
  std::string path;
  r.opt("path", path);
  r.finish();
  if (kind == "stdio" || kind == "none" || kind == "pty") return parse_serial_spec(kind);
  if (kind == "file" || kind == "unix") return parse_serial_spec(kind + "=" + path);
  fail("{}: unknown kind '{}' (stdio, none, file, pty, unix)", r.key_path("kind"), kind);
}

ConsoleConfig console_from(JsonReader r) {
  const std::string kind = r.str("kind");
  std::string path;
  r.opt("path", path);
  r.finish();
  if (kind == "unix") return parse_console("unix=" + path);
  if (kind == "stdio" || kind == "pty") return parse_console(kind);
  fail("{}: unknown kind '{}' (stdio, pty, unix)", r.key_path("kind"), kind);
}

}  // namespace

json to_json(const VmConfig& c) {
  json disks = json::array(), nets = json::array();
  for (const auto& d : c.disks) disks.push_back(disk_json(d));
  for (const auto& n : c.nets) nets.push_back(net_json(n));
  json cpu = {{"mode", cpu_mode_name(c.cpu.mode)}};
  if (c.cpu.mode == cpu::CpuMode::Custom) cpu["model"] = c.cpu.model;
  if (c.cpu.enforce) cpu["enforce"] = true;
  json j = {
      {"version", kConfigVersion},
      {"name", c.name},
      {"arch", cpu::arch_name(c.arch)},
      {"boot", {{"kernel", c.boot.kernel}, {"initrd", c.boot.initrd}, {"cmdline", c.boot.cmdline}}},
      {"memory",
       {{"size", c.memory.size}, {"hugepages", c.memory.hugepages}, {"thp", c.memory.thp}, {"prealloc", c.memory.prealloc}}},
      {"cpus", c.cpus},
      {"cpu", cpu},
      {"native", c.native},
      {"serial", serial_json(c.serial)},
      {"api_socket", c.api_socket},
      {"boot_log", c.boot_log},
      {"disks", disks},
      {"nets", nets},
      {"console", c.console ? console_json(*c.console) : json()},
      {"rng", c.rng},
      {"balloon", c.balloon},
      {"transport", transport_name(c.transport)},
  };
  return j;
}

VmConfig from_json(const json& j, const std::string& source) {
  JsonReader r(j, source);
  VmConfig c;
  if (r.has("version")) {
    const uint64_t v = r.u64("version");
    if (v != kConfigVersion) fail("{}: configuration version {} is not supported (this vireo-vmm reads {})", source, v, kConfigVersion);
  } else {
    r.skip("version");
  }
  r.opt("name", c.name);
  if (r.has("arch")) c.arch = cpu::parse_arch(r.str("arch"), r.key_path("arch"));
  else r.skip("arch");
  {
    JsonReader b = r.object("boot");
    c.boot.kernel = b.str("kernel");
    b.opt("initrd", c.boot.initrd);
    b.opt("cmdline", c.boot.cmdline);
    b.finish();
  }
  if (r.has("memory")) {
    JsonReader m = r.object("memory");
    c.memory.size = m.u64("size");
    m.opt("hugepages", c.memory.hugepages);
    m.opt("thp", c.memory.thp);
    m.opt("prealloc", c.memory.prealloc);
    m.finish();
    validate_memory(m.path(), c.memory);
  } else {
    r.skip("memory");
  }
  r.opt_uint("cpus", c.cpus);
  if (r.has("cpu")) {
    JsonReader p = r.object("cpu");
    const std::string mode = p.str("mode");
    std::string model;
    bool enforce = false;
    p.opt("model", model);
    p.opt("enforce", enforce);
    p.finish();
    c.cpu = cpu::parse_cpu_spec((mode == "custom" && !model.empty() ? "custom=" + model : mode) +
                                (enforce ? ",enforce" : ""));
  } else {
    r.skip("cpu");
  }
  r.opt("native", c.native);
  if (r.has("serial")) c.serial = serial_from(r.object("serial"));
  else r.skip("serial");
  r.opt("api_socket", c.api_socket);
  r.opt("boot_log", c.boot_log);
  if (r.has("disks")) {
    const json& a = r.array("disks", 64);
    for (size_t i = 0; i < a.size(); ++i) c.disks.push_back(disk_from(JsonReader(a[i], r.key_path(fmt::format("disks[{}]", i)))));
  } else {
    r.skip("disks");
  }
  if (r.has("nets")) {
    const json& a = r.array("nets", 64);
    for (size_t i = 0; i < a.size(); ++i) c.nets.push_back(net_from(JsonReader(a[i], r.key_path(fmt::format("nets[{}]", i)))));
  } else {
    r.skip("nets");
  }
  if (r.has("console")) c.console = console_from(r.object("console"));
  else r.skip("console");
  r.opt("rng", c.rng);
  r.opt("balloon", c.balloon);
  if (r.has("transport")) {
    const std::string t = r.str("transport");
    if (t != "pci" && t != "mmio") fail("{}: must be pci or mmio, not '{}'", r.key_path("transport"), t);
    c.transport = parse_transport(t);
  } else {
    r.skip("transport");
  }
  r.finish();
  try {
    c.validate();
  } catch (const Error& e) {
    fail("{}: {}", source, e.what());
  }
  return c;
}

VmConfig load_vm_config(const std::string& path) {
  const std::string text = read_file("--config", path, 1 << 20);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  return from_json(j, path);
}

void write_vm_config(const std::string& path, const VmConfig& c) { atomic_write_file(path, to_json(c).dump(2) + "\n"); }

// ---------------------------------------------------------------------------------------------------------
// Host overrides

void apply_overrides(VmConfig& c, const HostOverrides& o) {
  if (o.name) c.name = *o.name;
  if (o.serial) c.serial = *o.serial;
  if (o.api_socket) c.api_socket = *o.api_socket;
  if (o.boot_log) c.boot_log = *o.boot_log;
  if (o.console) {
    if (!c.console) fail("--console: the saved VM has no virtio console");
    c.console = *o.console;
  }
  if (o.disks) {
    if (o.disks->size() != c.disks.size())
      fail("--disk: {} given, the saved VM has {} (give all of them, in order)", o.disks->size(), c.disks.size());
    for (size_t i = 0; i < c.disks.size(); ++i) {
      const DiskConfig& want = (*o.disks)[i];
      DiskConfig& have = c.disks[i];
      auto differs = [&](const char* what) { fail("--disk {}: {} differs from the saved VM", i, what); };
      if (!want.format.empty() && !have.format.empty() && want.format != have.format) differs("format");
      if (want.read_only != have.read_only) differs("readonly");
      if (want.serial != have.serial) differs("serial");
      if (want.queues != have.queues) differs("queues");
      have.path = want.path;
      have.direct = want.direct;
      have.engine = want.engine;
      if (have.format.empty()) have.format = want.format;
    }
  }
  if (o.nets) {
    if (o.nets->size() != c.nets.size())
      fail("--net: {} given, the saved VM has {} (give all of them, in order)", o.nets->size(), c.nets.size());
    for (size_t i = 0; i < c.nets.size(); ++i) {
      const NetConfig& want = (*o.nets)[i];
      NetConfig& have = c.nets[i];
      if (want.queues != have.queues) fail("--net {}: queues differs from the saved VM", i);
      if (want.mac && want.mac != have.mac) fail("--net {}: mac differs from the saved VM", i);
      have.tap = want.tap;
    }
  }
  c.validate();
}

}  // namespace vireo::config
