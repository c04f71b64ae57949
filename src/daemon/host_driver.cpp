#include "daemon/host_driver.h"

#include <dirent.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <pugixml.hpp>
#include <set>
#include <sstream>

#include "daemon/domain_driver.h"
#include "daemon/netdev.h"
#include "daemon/rpc.h"
#include "daemon/states.h"

namespace vireo::daemon {

using nlohmann::json;

namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

std::string read_trim(const std::string& path) {
  auto s = try_read_file(path);
  return s ? trim(*s) : "";
}

std::vector<std::string> dir_entries(const std::string& path, const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) == 0 && n.size() > prefix.size() &&
        std::all_of(n.begin() + static_cast<long>(prefix.size()), n.end(), ::isdigit))
      out.push_back(n);
  }
  ::closedir(d);
  return out;
}

std::string xml_string(const pugi::xml_document& doc) {
  std::ostringstream ss;
  doc.save(ss, "  ", pugi::format_indent | pugi::format_no_declaration | pugi::format_attribute_single_quote);
  // libvirt writes empty elements as <x/>, pugixml as <x />.
  std::string out = ss.str();
  for (size_t p = out.find(" />"); p != std::string::npos; p = out.find(" />", p)) out.erase(p, 1);
  return out;
}

struct Running {
  DomPtr d;
  pid_t vmm = 0;
  domain::DomainDef def;
  bool active = false;
  std::string state, reason;
};

Running snapshot(Host& h, const json& p, bool inactive_ok) {
  Running r;
  r.d = h.domains->lookup(param_str(p, "domain"));
  std::lock_guard<std::mutex> l(r.d->mu);
  r.active = r.d->active;
  r.vmm = r.d->active ? r.d->vmm_pid : 0;
  r.def = (param_bool(p, "inactive") && r.d->config) ? *r.d->config : r.d->current();
  r.state = to_string(r.d->state);
  r.reason = to_string(r.d->reason);
  if (!inactive_ok && !r.active) invalid("domain is not running");
  return r;
}

// The host-side name of each interface: <target dev> when fixed, else the taps vireod created in order.
std::vector<std::string> interface_names(Host& h, const Running& r) {
  std::vector<std::string> taps;
  if (r.active) taps = read_taps_file(h.paths.run_domains_dir() + "/" + r.d->name + ".taps");
  size_t next = 0;
  std::vector<std::string> out;
  for (const auto& i : r.def.devices.interfaces) {
    if (!i.target_dev.empty() && i.target_dev.find('%') == std::string::npos) out.push_back(i.target_dev);
    else if (r.active && i.type != "ethernet" && next < taps.size()) out.push_back(taps[next++]);
    else out.push_back("");
  }
  return out;
}

struct ThreadStat {
  int tid = 0;
  std::string comm;
  char state = '?';
  int cpu = -1;
  uint64_t time_ns = 0;
};

std::vector<ThreadStat> vcpu_threads(pid_t pid) {
  std::vector<ThreadStat> out;
  const std::string task = "/proc/" + std::to_string(pid) + "/task";
  const long hz = ::sysconf(_SC_CLK_TCK);
  for (const auto& tid : dir_entries(task, "")) {
    ThreadStat t;
    t.tid = std::stoi(tid);
    t.comm = read_trim(task + "/" + tid + "/comm");
    if (t.comm.rfind("vcpu", 0) != 0) continue;
    auto st = try_read_file(task + "/" + tid + "/stat");
    if (!st) continue;
    auto rp = st->rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream is(st->substr(rp + 2));
    std::vector<std::string> f;
    std::string w;
    while (is >> w) f.push_back(w);
    if (f.size() < 37) continue;
    t.state = f[0][0];
    t.time_ns = (std::stoull(f[11]) + std::stoull(f[12])) * (1000000000ull / static_cast<uint64_t>(hz > 0 ? hz : 100));
    t.cpu = std::stoi(f[36]);  // field 39: the CPU it last ran on
    out.push_back(t);
  }
  std::sort(out.begin(), out.end(), [](const ThreadStat& a, const ThreadStat& b) {
    return std::stoi(a.comm.substr(4)) < std::stoi(b.comm.substr(4));
  });
  return out;
}

uint64_t read_u64(const std::string& path) {
  auto s = read_trim(path);
  try {
    return s.empty() ? 0 : std::stoull(s);
  } catch (...) {
    return 0;
  }
}

// A tap's counters seen from the guest: what the tap transmits the guest receives (libvirt swaps them too).
json tap_stats(const std::string& dev) {
  const std::string s = "/sys/class/net/" + dev + "/statistics/";
  return json{{"rx_bytes", read_u64(s + "tx_bytes")},   {"rx_packets", read_u64(s + "tx_packets")},
              {"rx_errs", read_u64(s + "tx_errors")},   {"rx_drop", read_u64(s + "tx_dropped")},
              {"tx_bytes", read_u64(s + "rx_bytes")},   {"tx_packets", read_u64(s + "rx_packets")},
              {"tx_errs", read_u64(s + "rx_errors")},   {"tx_drop", read_u64(s + "rx_dropped")}};
}

std::string host_uuid() {
  std::string u = read_trim("/sys/class/dmi/id/product_uuid");
  if (!u.empty()) {
    std::transform(u.begin(), u.end(), u.begin(), ::tolower);
    return u;
  }
  std::string m = read_trim("/etc/machine-id");  // 32 hex digits
  if (m.size() == 32)
    return m.substr(0, 8) + "-" + m.substr(8, 4) + "-" + m.substr(12, 4) + "-" + m.substr(16, 4) + "-" + m.substr(20);
  return "";
}

}  // namespace

int reason_number(const std::string& state, const std::string& reason) {
  static const std::map<std::string, std::vector<std::string>> words = {
      {"running", {"unknown", "booted", "migrated", "restored", "from snapshot", "unpaused", "migration canceled",
                   "save canceled", "event wakeup", "crashed", "post-copy", "post-copy failed"}},
      {"paused", {"unknown", "user", "migrating", "saving", "dumping", "I/O error", "watchdog", "from snapshot",
                  "shutting down", "creating snapshot", "crashed", "starting up", "post-copy", "post-copy failed"}},
      {"in shutdown", {"unknown", "user"}},
      {"shut off", {"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot", "daemon"}},
      {"crashed", {"unknown", "panicked"}}};
  auto it = words.find(state);
  if (it == words.end()) return 0;
  auto w = std::find(it->second.begin(), it->second.end(), reason);
  return w == it->second.end() ? 0 : static_cast<int>(w - it->second.begin());
}

json node_info(const std::string& proc, const std::string& sys) {
  json n;
  std::string model = "x86_64";
#if defined(__aarch64__)
  model = "aarch64";
#endif
  n["model"] = model;
  unsigned cpus = 0, mhz = 0;
  std::set<std::pair<int, int>> cores;  // (package, core)
  std::set<int> packages;
  if (auto ci = try_read_file(proc + "/cpuinfo")) {
    std::istringstream is(*ci);
    std::string line;
    while (std::getline(is, line)) {
      if (line.rfind("processor", 0) == 0) ++cpus;
      if (line.rfind("cpu MHz", 0) == 0 && mhz == 0) {
        auto c = line.find(':');
        if (c != std::string::npos) mhz = static_cast<unsigned>(std::stod(line.substr(c + 1)));
      }
    }
  }
  for (const auto& c : dir_entries(sys + "/devices/system/cpu", "cpu")) {
    const std::string t = sys + "/devices/system/cpu/" + c + "/topology/";
    const std::string pkg = read_trim(t + "physical_package_id"), core = read_trim(t + "core_id");
    if (pkg.empty() || core.empty()) continue;
    packages.insert(std::stoi(pkg));
    cores.insert({std::stoi(pkg), std::stoi(core)});
  }
  const unsigned nodes = std::max<size_t>(1, dir_entries(sys + "/devices/system/node", "node").size());
  const unsigned sockets_total = std::max<size_t>(1, packages.size());
  const unsigned cores_per_socket = std::max<unsigned>(1, static_cast<unsigned>(cores.size()) / sockets_total);
  if (cpus == 0) cpus = static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN));
  const unsigned threads = std::max<unsigned>(1, cpus / (sockets_total * cores_per_socket));
  n["cpus"] = cpus;
  n["mhz"] = mhz;
  n["nodes"] = nodes;
  n["sockets"] = std::max<unsigned>(1, sockets_total / nodes);  // libvirt: sockets per NUMA node
  n["cores"] = cores_per_socket;
  n["threads"] = threads;
  uint64_t kib = 0;
  if (auto mi = try_read_file(proc + "/meminfo")) {
    std::istringstream is(*mi);
    std::string key;
    uint64_t v;
    while (is >> key >> v) {
      if (key == "MemTotal:") {
        kib = v;
        break;
      }
      is.ignore(256, '\n');
    }
  }
  n["memory_kib"] = kib;
  return n;
}

std::string sysinfo_xml(const std::string& dmi) {
  pugi::xml_document doc;
  auto root = doc.append_child("sysinfo");
  root.append_attribute("type") = "smbios";
  auto section = [&](const char* name, const std::vector<std::pair<const char*, const char*>>& entries) {
    pugi::xml_node s;
    for (auto [entry, file] : entries) {
      std::string v = read_trim(dmi + "/" + file);
      if (v.empty()) continue;
      if (!s) s = root.append_child(name);
      auto e = s.append_child("entry");
      e.append_attribute("name") = entry;
      e.text() = v.c_str();
    }
  };
  section("bios", {{"vendor", "bios_vendor"}, {"version", "bios_version"}, {"date", "bios_date"}, {"release", "bios_release"}});
  section("system", {{"manufacturer", "sys_vendor"}, {"product", "product_name"}, {"version", "product_version"},
                     {"serial", "product_serial"}, {"uuid", "product_uuid"}, {"sku", "product_sku"},
                     {"family", "product_family"}});
  section("baseBoard", {{"manufacturer", "board_vendor"}, {"product", "board_name"}, {"version", "board_version"},
                        {"serial", "board_serial"}, {"asset", "board_asset_tag"}});
  section("chassis", {{"manufacturer", "chassis_vendor"}, {"version", "chassis_version"},
                      {"serial", "chassis_serial"}, {"asset", "chassis_asset_tag"}});
  return xml_string(doc);
}

std::string capabilities_xml(const json& node, const std::string& uuid, const std::string& vmm) {
  pugi::xml_document doc;
  auto caps = doc.append_child("capabilities");
  auto host = caps.append_child("host");
  if (!uuid.empty()) host.append_child("uuid").text() = uuid.c_str();
  auto cpu = host.append_child("cpu");
  cpu.append_child("arch").text() = node.value("model", "x86_64").c_str();
  auto topo = cpu.append_child("topology");
  topo.append_attribute("sockets") = node.value("sockets", 1u);
  topo.append_attribute("dies") = 1;
  topo.append_attribute("cores") = node.value("cores", 1u);
  topo.append_attribute("threads") = node.value("threads", 1u);
  host.append_child("power_management");
  auto mig = host.append_child("migration_features");
  mig.append_child("live");
  auto topology = host.append_child("topology");
  auto cells = topology.append_child("cells");
  cells.append_attribute("num") = node.value("nodes", 1u);
  auto sec = host.append_child("secmodel");
  sec.append_child("model").text() = "none";
  sec.append_child("doi").text() = "0";
  auto guest = caps.append_child("guest");
  guest.append_child("os_type").text() = "hvm";
  auto arch = guest.append_child("arch");
  arch.append_attribute("name") = node.value("model", "x86_64").c_str();
  arch.append_child("wordsize").text() = "64";
  arch.append_child("emulator").text() = vmm.c_str();
  arch.append_child("machine").text() = "pc";
  arch.append_child("domain").append_attribute("type") = "kvm";
  auto feats = guest.append_child("features");
  auto acpi = feats.append_child("acpi");
  acpi.append_attribute("default") = "on";
  acpi.append_attribute("toggle") = "yes";
  auto apic = feats.append_child("apic");
  apic.append_attribute("default") = "on";
  apic.append_attribute("toggle") = "no";
  return xml_string(doc);
}

void HostDriver::register_methods(MethodTable& t) {
  using A = Access;
  t.add("hostname", A::kReadOnly, [](const json&, Call&) {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return json{{"hostname", buf}};
  });
  t.add("nodeinfo", A::kReadOnly, [](const json&, Call&) { return node_info("/proc", "/sys"); });
  t.add("sysinfo", A::kReadOnly, [](const json&, Call&) { return json{{"xml", sysinfo_xml("/sys/class/dmi/id")}}; });
  t.add("capabilities", A::kReadOnly, [this](const json&, Call&) {
    return json{{"xml", capabilities_xml(node_info("/proc", "/sys"), host_uuid(), h_.opts.vmm)}};
  });
  t.add("domiflist", A::kReadOnly, [this](const json& p, Call&) {
    Running r = snapshot(h_, p, true);
    auto names = interface_names(h_, r);
    json out = json::array();
    for (size_t i = 0; i < r.def.devices.interfaces.size(); ++i) {
      const auto& f = r.def.devices.interfaces[i];
      out.push_back({{"interface", names[i]}, {"type", f.type}, {"source", f.source}, {"model", f.model}, {"mac", f.mac}});
    }
    return out;
  });
  t.add("domblklist", A::kReadOnly, [this](const json& p, Call&) {
    Running r = snapshot(h_, p, true);
    json out = json::array();
    for (const auto& d : r.def.devices.disks)
      out.push_back({{"type", d.type}, {"device", d.device}, {"target", d.target_dev}, {"source", d.source}});
    return out;
  });
  t.add("vcpuinfo", A::kReadOnly, [this](const json& p, Call&) {
    Running r = snapshot(h_, p, false);
    const long ncpu = ::sysconf(_SC_NPROCESSORS_CONF);
    json out = json::array();
    unsigned n = 0;
    for (const auto& th : vcpu_threads(r.vmm)) {
      cpu_set_t set;
      CPU_ZERO(&set);
      std::string affinity;
      if (::sched_getaffinity(th.tid, sizeof set, &set) == 0)
        for (long c = 0; c < ncpu; ++c) affinity += CPU_ISSET(c, &set) ? 'y' : '-';
      out.push_back({{"vcpu", n++}, {"cpu", th.cpu}, {"state", th.state == 'Z' || th.state == 'X' ? "offline" : "running"},
                     {"time_ns", th.time_ns}, {"affinity", affinity}});
    }
    return out;
  });
  t.add("domifstat", A::kReadOnly, [this](const json& p, Call&) {
    Running r = snapshot(h_, p, false);
    const std::string dev = param_str(p, "interface");
    auto names = interface_names(h_, r);
    for (size_t i = 0; i < names.size(); ++i)
      if (!names[i].empty() && (names[i] == dev || r.def.devices.interfaces[i].mac == dev)) return tap_stats(names[i]);
    bad_arg("'" + dev + "' is not a known interface");
  });
  t.add("domblkstat", A::kReadOnly, [this](const json& p, Call&) -> json {
    Running r = snapshot(h_, p, false);
    const std::string dev = param_str_or(p, "device", "");
    bool known = dev.empty();
    for (const auto& d : r.def.devices.disks) known |= d.target_dev == dev || d.source == dev;
    if (!known) bad_arg("invalid path: " + dev);
    // vireo-vmm's control socket has no per-disk counters yet (docs/remote.md, "Not done").
    throw RpcError(-32601, "this function is not supported by the connection driver: virDomainBlockStats");
  });
  t.add("domifaddr", A::kReadOnly, [this](const json& p, Call&) {
    Running r = snapshot(h_, p, false);
    const std::string source = param_str_or(p, "source", "lease");
    if (source != "arp" && source != "lease" && source != "agent")
      bad_arg("unknown data source '" + source + "' (lease, agent or arp)");
    if (source != "arp")
      throw RpcError(-32601, "this function is not supported by the connection driver: virDomainInterfaceAddresses "
                             "(source '" + source + "'; use --source arp)");
    auto names = interface_names(h_, r);
    // The host's neighbour table (IPv4), as libvirt's arp source reads it.
    std::vector<std::pair<std::string, std::string>> arp;  // (mac, ip)
    if (auto t = try_read_file("/proc/net/arp")) {
      std::istringstream is(*t);
      std::string line;
      std::getline(is, line);  // header
      while (std::getline(is, line)) {
        std::istringstream ls(line);
        std::string ip, hw, flags, mac;
        if (!(ls >> ip >> hw >> flags >> mac)) continue;
        if (flags == "0x0") continue;  // incomplete entry
        std::transform(mac.begin(), mac.end(), mac.begin(), ::tolower);
        arp.emplace_back(mac, ip);
      }
    }
    json out = json::array();
    for (size_t i = 0; i < r.def.devices.interfaces.size(); ++i) {
      std::string mac = r.def.devices.interfaces[i].mac;
      std::transform(mac.begin(), mac.end(), mac.begin(), ::tolower);
      for (const auto& [m, ip] : arp)
        if (m == mac)
          out.push_back({{"name", names[i]}, {"mac", mac}, {"protocol", "ipv4"}, {"address", ip}, {"prefix", 0}});
    }
    return out;
  });
  t.add("domstats", A::kReadOnly, [this](const json& p, Call&) {
    Running r = snapshot(h_, p, true);
    json s = json::array();
    auto add = [&](const std::string& k, const json& v) { s.push_back(json::array({k, v})); };
    add("state.state", dom_state_from(r.state) ? static_cast<int>(*dom_state_from(r.state)) : 0);
    add("state.reason", reason_number(r.state, r.reason));
    if (r.active) {
      const uint64_t total = process_cpu_time_ns(r.vmm);
      add("cpu.time", total);
      add("balloon.current", r.def.current_memory_kib);
      add("balloon.maximum", r.def.memory_kib);
      auto threads = vcpu_threads(r.vmm);
      add("vcpu.current", r.def.active_vcpus());
      add("vcpu.maximum", r.def.vcpus);
      for (size_t i = 0; i < threads.size(); ++i) {
        add("vcpu." + std::to_string(i) + ".state", 1);
        add("vcpu." + std::to_string(i) + ".time", threads[i].time_ns);
      }
      auto names = interface_names(h_, r);
      add("net.count", names.size());
      for (size_t i = 0; i < names.size(); ++i) {
        const std::string k = "net." + std::to_string(i) + ".";
        add(k + "name", names[i].empty() ? "-" : names[i]);
        if (names[i].empty()) continue;
        json st = tap_stats(names[i]);
        for (auto [f, key] : {std::pair<const char*, const char*>{"rx_bytes", "rx.bytes"}, {"rx_packets", "rx.pkts"},
                              {"rx_errs", "rx.errs"}, {"rx_drop", "rx.drop"}, {"tx_bytes", "tx.bytes"},
                              {"tx_packets", "tx.pkts"}, {"tx_errs", "tx.errs"}, {"tx_drop", "tx.drop"}})
          add(k + key, st[f]);
      }
      add("block.count", r.def.devices.disks.size());
      for (size_t i = 0; i < r.def.devices.disks.size(); ++i) {
        add("block." + std::to_string(i) + ".name", r.def.devices.disks[i].target_dev);
        add("block." + std::to_string(i) + ".path", r.def.devices.disks[i].source);
      }
    }
    return json{{"name", r.d->name}, {"stats", s}};
  });
}

}  // namespace vireo::daemon
