// Domain XML: parse + validate + defaults (parse_domain_xml) and the normalized writer (write_domain_xml).
#include <pugixml.hpp>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>
#include <string_view>

#include "common/error.h"
#include "domain/domain.h"

namespace vireo::domain {

namespace {

using pugi::xml_node;
using Names = std::initializer_list<std::string_view>;

constexpr unsigned kPrintFlags = pugi::format_raw | pugi::format_attribute_single_quote;

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string text_of(xml_node n) { return trim(n.text().get()); }

bool in(Names names, std::string_view s) { return std::find(names.begin(), names.end(), s) != names.end(); }

std::string serialize(xml_node n) {
  std::ostringstream os;
  n.print(os, "", kPrintFlags);
  return os.str();
}

std::string attr(xml_node n, const char* name) { return n.attribute(name).value(); }

unsigned parse_uint(const std::string& s, const std::string& what, unsigned min, unsigned max) {
  if (s.empty()) fail("{}: missing value", what);
  uint64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) fail("{}: invalid value '{}'", what, s);
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > 0xffffffffull) fail("{}: value '{}' is out of range ({}..{})", what, s, min, max);
  }
  if (v < min || v > max) fail("{}: value '{}' is out of range ({}..{})", what, s, min, max);
  return static_cast<unsigned>(v);
}

void check_enum(const std::string& value, Names allowed, const std::string& what) {
  if (!in(allowed, value)) {
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    fail("{}: unsupported value '{}' (expected one of: {})", what, value, list);
  }
}

bool valid_mac(const std::string& mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < 17; ++i) {
    if (i % 3 == 2) {
      if (mac[i] != ':') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(mac[i]))) {
      return false;
    }
  }
  // A multicast address cannot be a NIC's address.
  const int first = std::stoi(mac.substr(0, 2), nullptr, 16);
  return (first & 1) == 0;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string random_mac() {
  const std::string u = generate_uuid();  // 122 random bits; take three bytes from the tail
  return "52:54:00:" + u.substr(24, 2) + ":" + u.substr(26, 2) + ":" + u.substr(28, 2);
}

class Parser {
 public:
  explicit Parser(ParseResult& r) : r_(r) {}

  // Collects what the model does not know at `n`: attributes outside `attrs` and child elements outside
  // `children`. Unknown children are reported as "<path>/<name>" unless listed in `quiet` (kept, accepted).
  Extras extras(xml_node n, Names attrs, Names children, const std::string& path, Names quiet = {}) {
    Extras e;
    for (auto a : n.attributes())
      if (!in(attrs, a.name())) e.attrs.emplace_back(a.name(), a.value());
    for (auto c : n.children()) {
      if (c.type() != pugi::node_element || in(children, c.name())) continue;
      e.children.push_back(serialize(c));
      if (!in(quiet, c.name())) report(path.empty() ? c.name() : path + "/" + c.name());
    }
    return e;
  }

  void report(const std::string& what) {
    if (std::find(r_.unsupported.begin(), r_.unsupported.end(), what) == r_.unsupported.end())
      r_.unsupported.push_back(what);
  }

  // The single child `name` of `n` (or an empty node); two of them is an error.
  static xml_node single(xml_node n, const char* name, const std::string& path) {
    xml_node first = n.child(name);
    if (first && first.next_sibling(name)) fail("{}: duplicate <{}>", path, name);
    return first;
  }

  ParseResult& r_;
};

void parse_os(Parser& p, xml_node n, Os& os) {
  os.extras = p.extras(n, {}, {"type", "kernel", "initrd", "cmdline", "loader", "nvram", "boot"}, "os");
  if (xml_node t = Parser::single(n, "type", "os")) {
    os.type = text_of(t);
    if (os.type.empty()) os.type = "hvm";
    if (os.type != "hvm") fail("os/type: unsupported OS type '{}' (expected hvm)", os.type);
    os.arch = attr(t, "arch");
    os.machine = attr(t, "machine");
    for (auto a : t.attributes())
      if (std::string_view(a.name()) != "arch" && std::string_view(a.name()) != "machine")
        fail("os/type: unknown attribute '{}'", a.name());
  }
  if (os.arch.empty()) os.arch = "x86_64";
  // i686 runs as QEMU runs it on an x86_64 KVM host: the same machine with a CPU without long mode.
  if (os.arch != "x86_64" && os.arch != "i686")
    fail("os/type: unsupported arch '{}' (expected x86_64 or i686)", os.arch);
  if (xml_node k = Parser::single(n, "kernel", "os")) os.kernel = text_of(k);
  if (xml_node k = Parser::single(n, "initrd", "os")) os.initrd = text_of(k);
  if (xml_node k = Parser::single(n, "cmdline", "os")) os.cmdline = k.text().get();
  if (xml_node l = Parser::single(n, "loader", "os")) {
    os.loader = text_of(l);
    for (auto a : l.attributes()) os.loader_attrs.emplace_back(a.name(), a.value());
  }
  if (xml_node l = Parser::single(n, "nvram", "os")) {
    os.nvram = text_of(l);
    for (auto a : l.attributes()) os.nvram_attrs.emplace_back(a.name(), a.value());
  }
  for (xml_node b : n.children("boot")) {
    std::string dev = attr(b, "dev");
    if (dev.empty()) fail("os/boot: missing attribute 'dev'");
    check_enum(dev, {"hd", "cdrom", "fd", "network"}, "os/boot dev");
    os.boot.push_back(dev);
  }
  if (!os.kernel.empty() && os.kernel.find('\n') != std::string::npos) fail("os/kernel: invalid path");
}

void parse_cpu(Parser& p, xml_node n, Cpu& cpu, unsigned vcpus) {
  cpu.present = true;
  cpu.extras = p.extras(n, {"mode", "match", "check", "migratable"}, {"model", "vendor", "topology", "feature"}, "cpu",
                        {"cache", "numa"});
  cpu.mode = attr(n, "mode");
  cpu.match = attr(n, "match");
  cpu.check = attr(n, "check");
  cpu.migratable = attr(n, "migratable");
  if (xml_node m = Parser::single(n, "model", "cpu")) {
    cpu.model = text_of(m);
    cpu.model_fallback = attr(m, "fallback");
    cpu.model_vendor_id = attr(m, "vendor_id");
    if (!cpu.model_fallback.empty()) check_enum(cpu.model_fallback, {"allow", "forbid"}, "cpu/model fallback");
  }
  if (xml_node v = Parser::single(n, "vendor", "cpu")) cpu.vendor = text_of(v);
  if (cpu.mode.empty()) cpu.mode = "custom";
  check_enum(cpu.mode, {"custom", "host-model", "host-passthrough", "maximum"}, "cpu mode");
  if (!cpu.match.empty()) check_enum(cpu.match, {"minimum", "exact", "strict"}, "cpu match");
  if (!cpu.check.empty()) check_enum(cpu.check, {"none", "partial", "full"}, "cpu check");
  if (cpu.mode == "custom" && cpu.model.empty() && n.child("feature") == xml_node() && !n.child("topology"))
    fail("cpu: mode 'custom' needs a <model>");
  if (xml_node t = Parser::single(n, "topology", "cpu")) {
    auto part = [&](const char* name) -> unsigned {
      std::string v = attr(t, name);
      return v.empty() ? 1 : parse_uint(v, std::string("cpu/topology ") + name, 1, 4096);
    };
    cpu.sockets = part("sockets");
    cpu.dies = part("dies");
    cpu.clusters = part("clusters");
    cpu.cores = part("cores");
    cpu.threads = part("threads");
    const uint64_t total = uint64_t{cpu.sockets} * cpu.dies * cpu.clusters * cpu.cores * cpu.threads;
    if (total != vcpus)
      fail("cpu/topology: sockets*dies*clusters*cores*threads is {} but vcpu is {}", total, vcpus);
  }
  std::set<std::string> seen;
  for (xml_node f : n.children("feature")) {
    CpuFeature cf{attr(f, "policy"), attr(f, "name")};
    if (cf.name.empty()) fail("cpu/feature: missing attribute 'name'");
    if (cf.policy.empty()) cf.policy = "require";
    check_enum(cf.policy, {"force", "require", "optional", "disable", "forbid"}, "cpu/feature '" + cf.name + "' policy");
    if (!seen.insert(cf.name).second) fail("cpu/feature: duplicate feature '{}'", cf.name);
    cpu.features.push_back(cf);
  }
}

void parse_disk(Parser& p, xml_node n, Disk& d, size_t index) {
  const std::string where = "devices/disk[" + std::to_string(index) + "]";
  d.extras = p.extras(n, {"type", "device"}, {"driver", "source", "target", "readonly", "shareable", "serial"},
                      "devices/disk", {"address", "alias"});
  d.type = attr(n, "type");
  if (d.type.empty()) d.type = "file";
  d.device = attr(n, "device");
  if (d.device.empty()) d.device = "disk";
  check_enum(d.device, {"disk", "cdrom", "floppy", "lun"}, where + " device");
  if (xml_node drv = Parser::single(n, "driver", where)) {
    for (auto a : drv.attributes()) {
      std::string_view k = a.name();
      if (k == "name") d.driver_name = a.value();
      else if (k == "type") d.driver_type = a.value();
      else if (k == "cache") d.cache = a.value();
      else if (k == "io") d.io = a.value();
      else if (k == "discard") d.discard = a.value();
      else d.driver_extra.emplace_back(a.name(), a.value());
    }
  }
  if (d.driver_name.empty()) d.driver_name = "qemu";
  if (d.driver_type.empty()) d.driver_type = "raw";
  check_enum(d.driver_type, {"raw", "qcow2"}, where + " driver type");
  if (!d.cache.empty())
    check_enum(d.cache, {"default", "none", "writethrough", "writeback", "directsync", "unsafe"}, where + " driver cache");
  if (!d.io.empty()) check_enum(d.io, {"threads", "native", "io_uring"}, where + " driver io");
  if (!d.discard.empty()) check_enum(d.discard, {"ignore", "unmap"}, where + " driver discard");
  // vireo-vmm has no io= or discard= setting and no cache='unsafe': kept in the XML, reported, and not
  // passed on (cache='unsafe' runs as writeback).
  if (!d.io.empty()) p.report("devices/disk driver io='" + d.io + "'");
  if (d.discard == "unmap") p.report("devices/disk driver discard='unmap'");
  if (d.cache == "unsafe") p.report("devices/disk driver cache='unsafe'");
  if (xml_node s = Parser::single(n, "source", where); s && d.type == "volume") {
    d.source_pool = attr(s, "pool");
    d.source_volume = attr(s, "volume");
    if (d.source_pool.empty() || d.source_volume.empty()) fail("{}: type 'volume' needs <source pool='...' volume='...'>", where);
  } else if (s) {
    d.source = attr(s, d.type == "block" ? "dev" : "file");
    if (d.source.empty() && d.device != "cdrom")
      fail("{}: <source> needs attribute '{}'", where, d.type == "block" ? "dev" : "file");
  } else if (d.device != "cdrom" && d.device != "floppy") {
    fail("{}: missing <source>", where);
  }
  xml_node t = Parser::single(n, "target", where);
  if (!t || attr(t, "dev").empty()) fail("{}: missing <target dev='...'>", where);
  d.target_dev = attr(t, "dev");
  d.target_bus = attr(t, "bus");
  if (d.target_bus.empty()) {
    const std::string& dev = d.target_dev;
    if (dev.rfind("vd", 0) == 0) d.target_bus = "virtio";
    else if (dev.rfind("sd", 0) == 0) d.target_bus = "scsi";
    else if (dev.rfind("hd", 0) == 0) d.target_bus = "ide";
    else if (dev.rfind("fd", 0) == 0) d.target_bus = "fdc";
    else fail("{}: cannot infer the bus of target '{}'; set <target bus='virtio'>", where, dev);
  }
  d.readonly = static_cast<bool>(n.child("readonly")) || d.device == "cdrom";
  d.shareable = static_cast<bool>(n.child("shareable"));
  if (xml_node s = Parser::single(n, "serial", where)) d.serial = text_of(s);
}

void parse_interface(Parser& p, xml_node n, Interface& i, size_t index) {
  const std::string where = "devices/interface[" + std::to_string(index) + "]";
  i.extras = p.extras(n, {"type"}, {"mac", "source", "target", "model", "vlan", "virtualport"}, "devices/interface", {"address", "alias"});
  if (xml_node v = Parser::single(n, "vlan", where)) i.vlan_xml = serialize(v);
  if (xml_node v = Parser::single(n, "virtualport", where)) i.virtualport_xml = serialize(v);
  i.type = attr(n, "type");
  if (xml_node m = Parser::single(n, "mac", where)) {
    i.mac = lower(attr(m, "address"));
    if (!valid_mac(i.mac)) fail("{}: invalid mac address '{}'", where, attr(m, "address"));
  } else {
    i.mac = random_mac();
  }
  xml_node s = Parser::single(n, "source", where);
  if (i.type == "bridge") {
    i.source = attr(s, "bridge");
    if (i.source.empty()) fail("{}: type 'bridge' needs <source bridge='...'>", where);
  } else if (i.type == "network") {
    i.source = attr(s, "network");
    if (i.source.empty()) fail("{}: type 'network' needs <source network='...'>", where);
    i.portgroup = attr(s, "portgroup");
  }
  if (xml_node t = Parser::single(n, "target", where)) i.target_dev = attr(t, "dev");
  if (i.type == "ethernet" && i.target_dev.empty()) fail("{}: type 'ethernet' needs <target dev='tapN'>", where);
  if (xml_node m = Parser::single(n, "model", where)) i.model = attr(m, "type");
  if (i.model.empty()) i.model = "virtio";
}

void parse_chardev(Parser& p, xml_node n, CharDev& c, const std::string& kind) {
  c.kind = kind;
  c.extras = p.extras(n, {"type"}, {"source", "target"}, "devices/" + kind, {"alias", "address", "log", "protocol"});
  c.type = attr(n, "type");
  if (c.type.empty()) c.type = "pty";
  if (xml_node s = Parser::single(n, "source", "devices/" + kind)) {
    c.source_path = attr(s, "path");
    c.source_mode = attr(s, "mode");
  }
  if ((c.type == "file" || c.type == "unix") && c.source_path.empty())
    fail("devices/{}: type '{}' needs <source path='...'>", kind, c.type);
  if (c.type == "unix") {
    if (c.source_mode.empty()) c.source_mode = "bind";
    check_enum(c.source_mode, {"bind", "connect"}, "devices/" + kind + " source mode");
  }
  if (c.type == "pty") c.source_path.clear();  // a live pty path is runtime state, not configuration
  if (xml_node t = Parser::single(n, "target", "devices/" + kind)) {
    c.target_type = attr(t, "type");
    std::string port = attr(t, "port");
    if (!port.empty()) c.target_port = parse_uint(port, "devices/" + kind + "/target port", 0, 3);
    for (xml_node ch : t.children())
      if (ch.type() == pugi::node_element) c.target_children.push_back(serialize(ch));
  }
  if (kind == "console" && c.target_type.empty()) c.target_type = "serial";
  if (kind == "console") check_enum(c.target_type, {"serial", "virtio"}, "devices/console/target type");
  if (!c.target_port) c.target_port = 0;
}

void parse_devices(Parser& p, xml_node n, Devices& d) {
  std::set<std::string> targets;
  size_t disk_i = 0, if_i = 0;
  for (xml_node c : n.children()) {
    if (c.type() != pugi::node_element) continue;
    std::string_view name = c.name();
    if (name == "emulator") {
      d.emulator = text_of(c);
      p.r_.notes.push_back("devices/emulator '" + d.emulator + "' is ignored: vireod always runs vireo-vmm");
    } else if (name == "disk") {
      std::string type = attr(c, "type");
      if (!type.empty() && type != "file" && type != "block" && type != "volume") {
        d.extras.children.push_back(serialize(c));
        p.report("devices/disk type='" + type + "'");
        continue;
      }
      Disk disk;
      parse_disk(p, c, disk, disk_i++);
      if (!targets.insert(disk.target_dev).second)
        fail("devices/disk: duplicate target dev '{}'", disk.target_dev);
      d.disks.push_back(std::move(disk));
    } else if (name == "controller") {
      d.controllers.push_back(serialize(c));
    } else if (name == "interface") {
      std::string type = attr(c, "type");
      if (type != "bridge" && type != "network" && type != "ethernet") {
        if (type.empty()) fail("devices/interface: missing attribute 'type'");
        d.extras.children.push_back(serialize(c));
        p.report("devices/interface type='" + type + "'");
        continue;
      }
      Interface i;
      parse_interface(p, c, i, if_i++);
      d.interfaces.push_back(std::move(i));
    } else if (name == "serial" || name == "console") {
      std::string type = attr(c, "type");
      if (!type.empty() && !in({"pty", "file", "unix", "stdio", "null"}, type)) {
        d.extras.children.push_back(serialize(c));
        p.report("devices/" + std::string(name) + " type='" + type + "'");
        continue;
      }
      CharDev cd;
      parse_chardev(p, c, cd, std::string(name));
      (name == "serial" ? d.serials : d.consoles).push_back(std::move(cd));
    } else if (name == "memballoon") {
      if (d.memballoon.present) fail("devices: duplicate <memballoon>");
      d.memballoon.present = true;
      d.memballoon.model = attr(c, "model");
      if (d.memballoon.model.empty()) fail("devices/memballoon: missing attribute 'model'");
      check_enum(d.memballoon.model, {"virtio", "none"}, "devices/memballoon model");
      d.memballoon.extras = p.extras(c, {"model"}, {}, "devices/memballoon", {"address", "alias", "stats"});
    } else if (name == "rng") {
      Rng rng;
      rng.model = attr(c, "model");
      if (rng.model.empty()) fail("devices/rng: missing attribute 'model'");
      check_enum(rng.model, {"virtio"}, "devices/rng model");
      rng.extras = p.extras(c, {"model"}, {"backend"}, "devices/rng", {"address", "alias", "rate"});
      if (xml_node b = Parser::single(c, "backend", "devices/rng")) {
        rng.backend_model = attr(b, "model");
        if (rng.backend_model.empty()) rng.backend_model = "random";
        if (rng.backend_model != "random") {
          // egd/builtin backends: keep the whole device verbatim, report it.
          d.extras.children.push_back(serialize(c));
          p.report("devices/rng/backend model='" + rng.backend_model + "'");
          continue;
        }
        rng.backend = text_of(b);
      }
      if (rng.backend.empty()) rng.backend = "/dev/urandom";
      d.rngs.push_back(std::move(rng));
    } else {
      d.extras.children.push_back(serialize(c));
      p.report("devices/" + std::string(name));
    }
  }
  for (auto a : n.attributes()) d.extras.attrs.emplace_back(a.name(), a.value());
  // libvirt pairs the first serial port with a console; do the same so `vireo console` has a target.
  if (!d.serials.empty() && d.consoles.empty()) {
    CharDev con = d.serials.front();
    con.kind = "console";
    con.target_type = "serial";
    con.extras = {};
    con.target_children.clear();
    d.consoles.push_back(con);
  }
}

}  // namespace

ParseResult parse_domain_xml(const std::string& xml, const ParseOptions& opts) {
  ParseResult r;
  DomainDef& d = r.def;
  pugi::xml_document doc;
  pugi::xml_parse_result res = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!res) {
    const auto off = static_cast<size_t>(std::max<ptrdiff_t>(0, res.offset));
    const auto line = 1 + std::count(xml.begin(), xml.begin() + static_cast<ptrdiff_t>(std::min(off, xml.size())), '\n');
    fail("invalid XML at line {}: {}", line, lower(res.description()));
  }
  xml_node root = doc.document_element();
  if (!root) fail("invalid XML: no root element");
  if (std::string_view(root.name()) != "domain") fail("expected root element <domain>, found <{}>", root.name());
  Parser p(r);

  d.type = attr(root, "type");
  if (d.type.empty()) fail("domain: missing attribute 'type'");
  if (d.type != "kvm" && d.type != "qemu") fail("domain: unsupported type '{}' (expected kvm or qemu)", d.type);
  d.extras = p.extras(root, {"type", "id"},
                      {"name", "uuid", "title", "description", "memory", "currentMemory", "maxMemory", "memoryBacking",
                       "vcpu", "os", "features", "cpu", "clock", "on_poweroff", "on_reboot", "on_crash", "devices"},
                      "", {"metadata"});

  xml_node name = Parser::single(root, "name", "domain");
  if (!name) fail("domain: missing <name>");
  d.name = text_of(name);
  if (!valid_domain_name(d.name)) fail("name: invalid domain name '{}'", d.name);

  if (xml_node u = Parser::single(root, "uuid", "domain")) {
    d.uuid = normalize_uuid(text_of(u));
    if (d.uuid.empty()) fail("uuid: malformed uuid '{}'", text_of(u));
  } else if (opts.generate_uuid) {
    d.uuid = generate_uuid();
  }
  if (xml_node t = Parser::single(root, "title", "domain")) {
    d.title = text_of(t);
    if (d.title.find('\n') != std::string::npos) fail("title: must not contain newlines");
  }
  if (xml_node t = Parser::single(root, "description", "domain")) d.description = t.text().get();

  xml_node mem = Parser::single(root, "memory", "domain");
  if (!mem) fail("domain: missing <memory>");
  d.memory_kib = parse_memory_kib(text_of(mem), attr(mem, "unit"), "memory");
  if (d.memory_kib == 0) fail("memory: must be greater than zero");
  if (xml_node c = Parser::single(root, "currentMemory", "domain")) {
    d.current_memory_kib = parse_memory_kib(text_of(c), attr(c, "unit"), "currentMemory");
    if (d.current_memory_kib == 0) fail("currentMemory: must be greater than zero");
  }
  if (d.current_memory_kib == 0 || d.current_memory_kib > d.memory_kib) d.current_memory_kib = d.memory_kib;
  if (xml_node m = Parser::single(root, "maxMemory", "domain")) {
    d.max_memory_kib = parse_memory_kib(text_of(m), attr(m, "unit"), "maxMemory");
    std::string slots = attr(m, "slots");
    if (!slots.empty()) d.max_memory_slots = parse_uint(slots, "maxMemory slots", 0, 255);
    if (d.max_memory_kib < d.memory_kib) fail("maxMemory: must not be less than <memory>");
  }
  if (xml_node mb = Parser::single(root, "memoryBacking", "domain")) {
    d.memory_backing_extras = p.extras(mb, {}, {"hugepages"}, "memoryBacking");
    if (xml_node h = mb.child("hugepages")) {
      d.hugepages = true;
      if (h.first_child()) {
        // <page size=...> selections: keep verbatim, report.
        d.memory_backing_extras.children.insert(d.memory_backing_extras.children.begin(), serialize(h));
        d.hugepages = false;
        p.report("memoryBacking/hugepages/page");
      }
    }
  }

  if (xml_node v = Parser::single(root, "vcpu", "domain")) {
    d.vcpus = parse_uint(text_of(v), "vcpu", 1, config::kMaxVcpus);
    std::string cur = attr(v, "current");
    if (!cur.empty()) {
      d.vcpu_current = parse_uint(cur, "vcpu current", 1, d.vcpus);
      if (d.vcpu_current == d.vcpus) d.vcpu_current = 0;
    }
    d.vcpu_placement = attr(v, "placement");
    if (d.vcpu_placement.empty()) d.vcpu_placement = "static";
    check_enum(d.vcpu_placement, {"static", "auto"}, "vcpu placement");
    for (auto a : v.attributes()) {
      std::string_view k = a.name();
      if (k != "current" && k != "placement") {
        d.extras.attrs.emplace_back(std::string("vcpu:") + a.name(), a.value());
        p.report("vcpu@" + std::string(k));
      }
    }
  }

  if (xml_node os = Parser::single(root, "os", "domain")) parse_os(p, os, d.os);
  else d.os.arch = "x86_64";

  if (xml_node f = Parser::single(root, "features", "domain")) {
    d.features_extras = p.extras(f, {}, {"acpi", "apic"}, "features");
    d.acpi = static_cast<bool>(f.child("acpi"));
    d.apic = static_cast<bool>(f.child("apic"));
  }
  if (xml_node c = Parser::single(root, "cpu", "domain")) parse_cpu(p, c, d.cpu, d.vcpus);
  if (xml_node c = Parser::single(root, "clock", "domain")) {
    d.clock_offset = attr(c, "offset");
    if (d.clock_offset.empty()) d.clock_offset = "utc";
    check_enum(d.clock_offset, {"utc", "localtime", "timezone", "variable", "absolute"}, "clock offset");
    d.clock_extras = p.extras(c, {"offset"}, {}, "clock", {"timer"});
  }
  auto action = [&](const char* el, std::string& out, Names allowed) {
    if (xml_node a = Parser::single(root, el, "domain")) {
      out = text_of(a);
      check_enum(out, allowed, el);
    }
  };
  action("on_poweroff", d.on_poweroff, {"destroy", "restart", "preserve", "rename-restart"});
  action("on_reboot", d.on_reboot, {"destroy", "restart", "preserve", "rename-restart"});
  action("on_crash", d.on_crash,
         {"destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart"});
  if (xml_node dev = Parser::single(root, "devices", "domain")) parse_devices(p, dev, d.devices);
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// Writer

namespace {

void add_extras(xml_node n, const Extras& e) {
  for (const auto& [k, v] : e.attrs) n.append_attribute(k.c_str()) = v.c_str();
  for (const auto& c : e.children) n.append_buffer(c.data(), c.size());
}

xml_node text_child(xml_node parent, const char* name, const std::string& text) {
  xml_node n = parent.append_child(name);
  n.text() = text.c_str();
  return n;
}

void write_chardev(xml_node devs, const CharDev& c) {
  xml_node n = devs.append_child(c.kind.c_str());
  n.append_attribute("type") = c.type.c_str();
  for (const auto& [k, v] : c.extras.attrs) n.append_attribute(k.c_str()) = v.c_str();
  if (!c.source_path.empty()) {
    xml_node s = n.append_child("source");
    if (!c.source_mode.empty()) s.append_attribute("mode") = c.source_mode.c_str();
    s.append_attribute("path") = c.source_path.c_str();
  }
  xml_node t = n.append_child("target");
  if (!c.target_type.empty()) t.append_attribute("type") = c.target_type.c_str();
  t.append_attribute("port") = *c.target_port;
  for (const auto& ch : c.target_children) t.append_buffer(ch.data(), ch.size());
  for (const auto& ch : c.extras.children) n.append_buffer(ch.data(), ch.size());
}

}  // namespace

std::string write_domain_xml(const DomainDef& d) {
  pugi::xml_document doc;
  xml_node root = doc.append_child("domain");
  root.append_attribute("type") = d.type.c_str();
  for (const auto& [k, v] : d.extras.attrs)
    if (k.rfind("vcpu:", 0) != 0) root.append_attribute(k.c_str()) = v.c_str();
  text_child(root, "name", d.name);
  if (!d.uuid.empty()) text_child(root, "uuid", d.uuid);
  if (!d.title.empty()) text_child(root, "title", d.title);
  if (!d.description.empty()) text_child(root, "description", d.description);
  if (d.max_memory_kib) {
    xml_node m = text_child(root, "maxMemory", std::to_string(d.max_memory_kib));
    m.append_attribute("slots") = d.max_memory_slots;
    m.append_attribute("unit") = "KiB";
  }
  text_child(root, "memory", std::to_string(d.memory_kib)).prepend_attribute("unit") = "KiB";
  text_child(root, "currentMemory", std::to_string(d.current_memory_kib)).prepend_attribute("unit") = "KiB";
  if (d.hugepages || !d.memory_backing_extras.empty()) {
    xml_node mb = root.append_child("memoryBacking");
    if (d.hugepages) mb.append_child("hugepages");
    add_extras(mb, d.memory_backing_extras);
  }
  {
    xml_node v = text_child(root, "vcpu", std::to_string(d.vcpus));
    v.prepend_attribute("placement") = d.vcpu_placement.c_str();
    if (d.vcpu_current) v.append_attribute("current") = d.vcpu_current;
    for (const auto& [k, val] : d.extras.attrs)
      if (k.rfind("vcpu:", 0) == 0) v.append_attribute(k.substr(5).c_str()) = val.c_str();
  }
  {
    xml_node os = root.append_child("os");
    xml_node t = text_child(os, "type", d.os.type);
    t.prepend_attribute("arch") = d.os.arch.c_str();
    if (!d.os.machine.empty()) t.append_attribute("machine") = d.os.machine.c_str();
    if (!d.os.loader.empty() || !d.os.loader_attrs.empty()) {
      xml_node l = text_child(os, "loader", d.os.loader);
      for (const auto& [k, v] : d.os.loader_attrs) l.append_attribute(k.c_str()) = v.c_str();
    }
    if (!d.os.nvram.empty() || !d.os.nvram_attrs.empty()) {
      xml_node l = text_child(os, "nvram", d.os.nvram);
      for (const auto& [k, v] : d.os.nvram_attrs) l.append_attribute(k.c_str()) = v.c_str();
    }
    if (!d.os.kernel.empty()) text_child(os, "kernel", d.os.kernel);
    if (!d.os.initrd.empty()) text_child(os, "initrd", d.os.initrd);
    if (!d.os.cmdline.empty()) text_child(os, "cmdline", d.os.cmdline);
    for (const auto& b : d.os.boot) os.append_child("boot").append_attribute("dev") = b.c_str();
    add_extras(os, d.os.extras);
  }
  if (d.acpi || d.apic || !d.features_extras.empty()) {
    xml_node f = root.append_child("features");
    if (d.acpi) f.append_child("acpi");
    if (d.apic) f.append_child("apic");
    add_extras(f, d.features_extras);
  }
  if (d.cpu.present) {
    const Cpu& c = d.cpu;
    xml_node n = root.append_child("cpu");
    n.append_attribute("mode") = c.mode.c_str();
    if (!c.match.empty()) n.append_attribute("match") = c.match.c_str();
    if (!c.check.empty()) n.append_attribute("check") = c.check.c_str();
    if (!c.migratable.empty()) n.append_attribute("migratable") = c.migratable.c_str();
    if (!c.model.empty()) {
      xml_node m = text_child(n, "model", c.model);
      if (!c.model_fallback.empty()) m.append_attribute("fallback") = c.model_fallback.c_str();
      if (!c.model_vendor_id.empty()) m.append_attribute("vendor_id") = c.model_vendor_id.c_str();
    }
    if (!c.vendor.empty()) text_child(n, "vendor", c.vendor);
    if (c.sockets) {
      xml_node t = n.append_child("topology");
      t.append_attribute("sockets") = c.sockets;
      t.append_attribute("dies") = c.dies;
      if (c.clusters != 1) t.append_attribute("clusters") = c.clusters;
      t.append_attribute("cores") = c.cores;
      t.append_attribute("threads") = c.threads;
    }
    for (const auto& f : c.features) {
      xml_node fe = n.append_child("feature");
      fe.append_attribute("policy") = f.policy.c_str();
      fe.append_attribute("name") = f.name.c_str();
    }
    add_extras(n, c.extras);
  }
  if (!d.clock_offset.empty()) {
    xml_node c = root.append_child("clock");
    c.append_attribute("offset") = d.clock_offset.c_str();
    add_extras(c, d.clock_extras);
  }
  text_child(root, "on_poweroff", d.on_poweroff);
  text_child(root, "on_reboot", d.on_reboot);
  text_child(root, "on_crash", d.on_crash);

  xml_node devs = root.append_child("devices");
  const Devices& dv = d.devices;
  if (!dv.emulator.empty()) text_child(devs, "emulator", dv.emulator);
  for (const Disk& k : dv.disks) {
    xml_node n = devs.append_child("disk");
    n.append_attribute("type") = k.type.c_str();
    n.append_attribute("device") = k.device.c_str();
    for (const auto& [a, v] : k.extras.attrs) n.append_attribute(a.c_str()) = v.c_str();
    xml_node drv = n.append_child("driver");
    drv.append_attribute("name") = k.driver_name.c_str();
    drv.append_attribute("type") = k.driver_type.c_str();
    if (!k.cache.empty()) drv.append_attribute("cache") = k.cache.c_str();
    if (!k.io.empty()) drv.append_attribute("io") = k.io.c_str();
    if (!k.discard.empty()) drv.append_attribute("discard") = k.discard.c_str();
    for (const auto& [a, v] : k.driver_extra) drv.append_attribute(a.c_str()) = v.c_str();
    if (k.type == "volume") {
      xml_node src = n.append_child("source");
      src.append_attribute("pool") = k.source_pool.c_str();
      src.append_attribute("volume") = k.source_volume.c_str();
    } else if (!k.source.empty()) {
      n.append_child("source").append_attribute(k.type == "block" ? "dev" : "file") = k.source.c_str();
    }
    xml_node t = n.append_child("target");
    t.append_attribute("dev") = k.target_dev.c_str();
    t.append_attribute("bus") = k.target_bus.c_str();
    if (k.readonly) n.append_child("readonly");
    if (k.shareable) n.append_child("shareable");
    if (!k.serial.empty()) text_child(n, "serial", k.serial);
    for (const auto& c : k.extras.children) n.append_buffer(c.data(), c.size());
  }
  for (const auto& c : dv.controllers) devs.append_buffer(c.data(), c.size());
  for (const Interface& i : dv.interfaces) {
    xml_node n = devs.append_child("interface");
    n.append_attribute("type") = i.type.c_str();
    for (const auto& [a, v] : i.extras.attrs) n.append_attribute(a.c_str()) = v.c_str();
    n.append_child("mac").append_attribute("address") = i.mac.c_str();
    if (i.type == "bridge") n.append_child("source").append_attribute("bridge") = i.source.c_str();
    if (i.type == "network") {
      xml_node src = n.append_child("source");
      src.append_attribute("network") = i.source.c_str();
      if (!i.portgroup.empty()) src.append_attribute("portgroup") = i.portgroup.c_str();
    }
    if (!i.target_dev.empty()) n.append_child("target").append_attribute("dev") = i.target_dev.c_str();
    n.append_child("model").append_attribute("type") = i.model.c_str();
    if (!i.virtualport_xml.empty()) n.append_buffer(i.virtualport_xml.data(), i.virtualport_xml.size());
    if (!i.vlan_xml.empty()) n.append_buffer(i.vlan_xml.data(), i.vlan_xml.size());
    for (const auto& c : i.extras.children) n.append_buffer(c.data(), c.size());
  }
  for (const CharDev& c : dv.serials) write_chardev(devs, c);
  for (const CharDev& c : dv.consoles) write_chardev(devs, c);
  for (const auto& c : dv.extras.children) devs.append_buffer(c.data(), c.size());
  for (const auto& [a, v] : dv.extras.attrs) devs.append_attribute(a.c_str()) = v.c_str();
  if (dv.memballoon.present) {
    xml_node n = devs.append_child("memballoon");
    n.append_attribute("model") = dv.memballoon.model.c_str();
    add_extras(n, dv.memballoon.extras);
  }
  for (const Rng& r : dv.rngs) {
    xml_node n = devs.append_child("rng");
    n.append_attribute("model") = r.model.c_str();
    for (const auto& [a, v] : r.extras.attrs) n.append_attribute(a.c_str()) = v.c_str();
    text_child(n, "backend", r.backend).prepend_attribute("model") = r.backend_model.c_str();
    for (const auto& c : r.extras.children) n.append_buffer(c.data(), c.size());
  }
  add_extras(root, Extras{{}, d.extras.children});

  std::ostringstream os;
  doc.save(os, "  ", pugi::format_indent | pugi::format_no_declaration | pugi::format_attribute_single_quote);
  // libvirt writes empty elements as <x a='1'/>; pugixml puts a space before "/>". Attribute values cannot
  // produce " />" + newline (pugixml escapes newlines in attributes), so this only touches tag ends.
  std::string out = os.str();
  std::string res;
  res.reserve(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out.compare(i, 4, " />\n") == 0) {
      res += "/>\n";
      i += 3;
    } else {
      res += out[i];
    }
  }
  return res;
}

}  // namespace vireo::domain
