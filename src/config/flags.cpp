#include "config/flags.h"

#include <algorithm>

#include "common/error.h"
#include "common/size.h"

namespace vireo::config {

std::vector<std::pair<std::string, std::string>> split_kv(const std::string& flag, const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  if (text.empty()) fail("{}: empty value", flag);
  size_t pos = 0;
  for (;;) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item.empty()) fail("{}: empty item in '{}'", flag, text);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) out.emplace_back(item, "");
    else out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

bool parse_on_off(const std::string& what, const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (t == "on" || t == "yes" || t == "true" || t == "1") return true;
  if (t == "off" || t == "no" || t == "false" || t == "0") return false;
  fail("{}: expected on or off, got '{}'", what, text);
}

void validate_memory(const std::string& what, const MemoryConfig& m) {
  if (m.size == 0) fail("{}: size must be greater than 0", what);
  const uint64_t align = m.hugepages ? (2ull << 20) : 4096;
  if (m.size % align != 0)
    fail("{}: {} bytes is not a multiple of {}", what, m.size, m.hugepages ? "2 MiB (hugepages)" : "4 KiB");
  if (m.size < (2ull << 20)) fail("{}: {} is too small (at least 2 MiB)", what, format_size(m.size));
  if (m.size > (1ull << 46)) fail("{}: {} is too large", what, format_size(m.size));
}

MemoryConfig parse_memory_spec(const std::string& text) {
  const std::string flag = "--memory";
  MemoryConfig cfg;
  if (text.empty()) fail("{}: empty value", flag);
  auto parse_sz = [&](const std::string& v) -> uint64_t {
    try {
      return parse_size(v, 1ull << 20);  // bare numbers are MiB
    } catch (const Error& e) {
      fail("{}: {}", flag, e.what());
    }
  };
  if (text.find('=') == std::string::npos) {
    cfg.size = parse_sz(text);
  } else {
    bool have_size = false;
    for (const auto& [key, val] : split_kv(flag, text)) {
      if (key == "size") {
        cfg.size = parse_sz(val);
        have_size = true;
      } else if (key == "hugepages") {
        cfg.hugepages = parse_on_off(flag + " hugepages", val);
      } else if (key == "thp") {
        cfg.thp = parse_on_off(flag + " thp", val);
      } else if (key == "prealloc") {
        cfg.prealloc = parse_on_off(flag + " prealloc", val);
      } else {
        fail("{}: unknown key '{}' (size, hugepages, thp, prealloc)", flag, key);
      }
    }
    if (!have_size) fail("{}: size= missing", flag);
  }
  validate_memory(flag, cfg);
  return cfg;
}

namespace {

uint16_t parse_count(const std::string& flag, const std::string& key, const std::string& v) {
  if (v.empty() || v.size() > 5 || v.find_first_not_of("0123456789") != std::string::npos)
    fail("{}: {} must be a number, not '{}'", flag, key, v);
  return static_cast<uint16_t>(std::min<unsigned long>(std::stoul(v), 65535));
}

}  // namespace

DiskConfig parse_disk(const std::string& text) {
  const std::string flag = "--disk";
  DiskConfig d;
  for (auto& [k, v] : split_kv(flag, text)) {
    if (k == "path" || k == "file") d.path = v;
    else if (k == "format") d.format = v;
    else if (k == "readonly") d.read_only = parse_on_off(flag + " readonly", v);
    else if (k == "cache") {
      if (v == "none" || v == "directsync") d.direct = true;
      else if (v == "writeback" || v == "writethrough" || v == "default") d.direct = false;
      else fail("{}: cache must be none, writeback or writethrough, not '{}'", flag, v);
    } else if (k == "serial") d.serial = v;
    else if (k == "queues") d.queues = parse_count(flag, k, v);
    else if (k == "engine") d.engine = v;
    else fail("{}: unknown key '{}'", flag, k);
  }
  d.validate(flag);
  return d;
}

std::array<uint8_t, 6> parse_mac(const std::string& what, const std::string& text) {
  std::array<uint8_t, 6> m{};
  auto bad = [&] { fail("{}: bad mac '{}' (want xx:xx:xx:xx:xx:xx)", what, text); };
  if (text.size() != 17) bad();
  for (int i = 0; i < 6; ++i) {
    if (i < 5 && text[3 * i + 2] != ':') bad();
    const std::string byte = text.substr(3 * i, 2);
    if (byte.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) bad();
    m[i] = static_cast<uint8_t>(std::stoul(byte, nullptr, 16));
  }
  if (m[0] & 1) fail("{}: mac '{}' is a multicast address", what, text);
  return m;
}

std::string format_mac(const std::array<uint8_t, 6>& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

NetConfig parse_net(const std::string& text) {
  const std::string flag = "--net";
  NetConfig n;
  for (auto& [k, v] : split_kv(flag, text)) {
    if (k == "tap" || k == "ifname") n.tap = v;
    else if (k == "mac") n.mac = parse_mac(flag, v);
    else if (k == "queues") n.queues = parse_count(flag, k, v);
    else fail("{}: unknown key '{}'", flag, k);
  }
  n.validate(flag);
  return n;
}

ConsoleConfig parse_console(const std::string& text) {
  ConsoleConfig s;
  if (text == "stdio") s.kind = ConsoleConfig::Kind::Stdio;
  else if (text == "pty") s.kind = ConsoleConfig::Kind::Pty;
  else if (text.rfind("unix=", 0) == 0 && text.size() > 5) {
    s.kind = ConsoleConfig::Kind::Unix;
    s.path = text.substr(5);
  } else fail("--console: must be stdio, pty or unix=PATH, not '{}'", text);
  return s;
}

Transport parse_transport(const std::string& text) {
  if (text == "pci") return Transport::Pci;
  if (text == "mmio") return Transport::Mmio;
  fail("--transport: must be pci or mmio, not '{}'", text);
}

std::string format_serial(const SerialSpec& s) {
  switch (s.kind) {
    case SerialSpec::Kind::Stdio: return "stdio";
    case SerialSpec::Kind::None: return "none";
    case SerialSpec::Kind::Pty: return "pty";
    case SerialSpec::Kind::File: return "file=" + s.path;
    case SerialSpec::Kind::Unix: return "unix=" + s.path;
  }
  return "none";
}

namespace {

std::string size_text(uint64_t bytes) {
  constexpr uint64_t kK = 1024, kM = kK * 1024, kG = kM * 1024;
  if (bytes % kG == 0) return std::to_string(bytes / kG) + "G";
  if (bytes % kM == 0) return std::to_string(bytes / kM) + "M";
  return std::to_string(bytes / kK) + "K";
}

// Values inside a key=value,key=value flag must not contain the separators.
const std::string& plain(const std::string& v, const std::string& what) {
  if (v.find(',') != std::string::npos || v.find('=') != std::string::npos)
    fail("{}: '{}' contains ',' or '=', which vireo-vmm options cannot carry", what, v);
  return v;
}

}  // namespace

std::vector<std::string> to_flags(const VmConfig& c) {
  std::vector<std::string> a = {"--name", c.name, "--kernel", c.boot.kernel};
  if (c.arch != cpu::Arch::X86_64) a.insert(a.end(), {"--arch", cpu::arch_name(c.arch)});
  if (!c.boot.initrd.empty()) a.insert(a.end(), {"--initrd", c.boot.initrd});
  if (!c.boot.cmdline.empty()) a.insert(a.end(), {"--cmdline", c.boot.cmdline});
  const MemoryConfig def_mem;
  if (c.memory.hugepages || c.memory.thp != def_mem.thp || c.memory.prealloc) {
    std::string m = "size=" + size_text(c.memory.size);
    if (c.memory.hugepages) m += ",hugepages=on";
    if (c.memory.thp != def_mem.thp) m += c.memory.thp ? ",thp=on" : ",thp=off";
    if (c.memory.prealloc) m += ",prealloc=on";
    a.insert(a.end(), {"--memory", m});
  } else {
    a.insert(a.end(), {"--memory", size_text(c.memory.size)});
  }
  a.insert(a.end(), {"--cpus", std::to_string(c.cpus)});
  if (c.cpu.mode != cpu::CpuMode::HostModel) a.insert(a.end(), {"--cpu", cpu::format_cpu_spec(c.cpu)});
  if (!c.native) a.insert(a.end(), {"--native", "off"});
  a.insert(a.end(), {"--serial", format_serial(c.serial)});
  if (!c.api_socket.empty()) a.insert(a.end(), {"--api-socket", c.api_socket});
  if (!c.boot_log.empty()) a.insert(a.end(), {"--boot-log", c.boot_log});
  for (const DiskConfig& d : c.disks) {
    const std::string what = "disk " + d.path;
    std::string s = "path=" + plain(d.path, what);
    if (!d.format.empty()) s += ",format=" + d.format;
    if (d.read_only) s += ",readonly=on";
    if (d.direct) s += ",cache=none";
    if (!d.serial.empty()) s += ",serial=" + plain(d.serial, what);
    if (d.queues != 1) s += ",queues=" + std::to_string(d.queues);
    if (d.engine != "auto") s += ",engine=" + d.engine;
    a.insert(a.end(), {"--disk", s});
  }
  for (const NetConfig& n : c.nets) {
    std::string s = "tap=" + plain(n.tap, "interface " + n.tap);
    if (n.mac) s += ",mac=" + format_mac(*n.mac);
    if (n.queues != 1) s += ",queues=" + std::to_string(n.queues);
    a.insert(a.end(), {"--net", s});
  }
  if (c.console) {
    switch (c.console->kind) {
      case ConsoleConfig::Kind::Stdio: a.insert(a.end(), {"--console", "stdio"}); break;
      case ConsoleConfig::Kind::Pty: a.insert(a.end(), {"--console", "pty"}); break;
      case ConsoleConfig::Kind::Unix: a.insert(a.end(), {"--console", "unix=" + c.console->path}); break;
    }
  }
  if (c.rng) a.push_back("--rng");
  if (c.balloon) a.push_back("--balloon");
  if (c.transport != Transport::Pci) a.insert(a.end(), {"--transport", transport_name(c.transport)});
  return a;
}

}  // namespace vireo::config
