#include "daemon/daemon.h"
#include "daemon/netdev.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include "client/wire.h"
#include "common/error.h"
#include "domain/domain.h"

extern char** environ;

namespace vireo::daemon {

using nlohmann::json;
using Lock = std::unique_lock<std::mutex>;

namespace {

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void log(const std::string& msg) { std::fprintf(stderr, "vireod: %s\n", msg.c_str()); }

[[noreturn]] void invalid(const std::string& what) {
  throw RpcError(kOperationInvalid, "Requested operation is not valid: " + what);
}
[[noreturn]] void failed(const std::string& what) { throw RpcError(kOperationFailed, "operation failed: " + what); }

std::string last_line(const std::string& s) {
  std::istringstream is(s);
  std::string line, last;
  while (std::getline(is, line))
    if (!line.empty()) last = line;
  return last;
}

// "exit N" / "signal N" from the monitor's .exit file.
struct ExitInfo {
  bool known = false;
  bool signaled = false;
  int code = 0;
};
ExitInfo read_exit(const std::string& path) {
  ExitInfo e;
  auto s = try_read_file(path);
  if (!s) return e;
  std::istringstream is(*s);
  std::string kind;
  int n = 0;
  if (is >> kind >> n) {
    e.known = true;
    e.signaled = kind == "signal";
    e.code = n;
  }
  return e;
}

std::string param_str(const json& p, const char* key) {
  if (!p.is_object() || !p.contains(key) || !p[key].is_string())
    throw RpcError(-32602, std::string("invalid params: missing string '") + key + "'");
  return p[key].get<std::string>();
}
bool param_bool(const json& p, const char* key) {
  return p.is_object() && p.contains(key) && p[key].is_boolean() && p[key].get<bool>();
}

}  // namespace

Daemon::Daemon(Options opts) : opts_(std::move(opts)), paths_(Paths::for_root(opts_.root)) {
  if (!opts_.group.empty()) {
    struct group* g = ::getgrnam(opts_.group.c_str());
    if (!g) fail("unknown group '{}'", opts_.group);
    allowed_gid_ = g->gr_gid;
  }
}

Daemon::~Daemon() = default;

int Daemon::next_id() {
  // Ids grow across daemon restarts (persisted) so a reattached domain's id is never handed out twice.
  Lock t(table_mu_);
  int id = next_id_++;
  try {
    atomic_write(paths_.state + "/next-id", std::to_string(next_id_) + "\n");
  } catch (const Error& e) {
    log(e.what());
  }
  return id;
}

// ----------------------------------------------------------------------------------------- startup

void Daemon::load() {
  paths_.create();
  lock_fd_ = UniqueFd(::open((paths_.run + "/vireod.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd_) throw_errno("open " + paths_.run + "/vireod.lock");
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) < 0) fail("another vireod is already running on {}", paths_.run);
  if (auto s = try_read_file(paths_.state + "/next-id")) {
    try {
      next_id_ = std::max(1, std::stoi(*s));
    } catch (...) {
    }
  }
  for (const auto& name : list_dir(paths_.domains_dir(), ".xml")) {
    const std::string path = paths_.domains_dir() + "/" + name + ".xml";
    try {
      auto r = domain::parse_domain_xml(read_file(path), {.generate_uuid = false});
      if (r.def.name != name) fail("{}: holds domain '{}', expected '{}'", path, r.def.name, name);
      auto d = std::make_shared<Dom>();
      d->name = name;
      d->uuid = r.def.uuid;
      d->config_xml = domain::write_domain_xml(r.def);
      d->persistent = true;
      struct stat st{};
      d->autostart = ::lstat((paths_.autostart_dir() + "/" + name + ".xml").c_str(), &st) == 0;
      doms_[name] = d;
    } catch (const std::exception& e) {
      log(std::string("skipping definition: ") + e.what());
    }
  }
  for (const auto& name : list_dir(paths_.run_domains_dir(), ".json")) reattach(name);
}

void Daemon::reattach(const std::string& name) {
  const std::string file = base(name) + ".json";
  json st;
  try {
    st = json::parse(read_file(file));
  } catch (const std::exception& e) {
    log("ignoring run state " + file + ": " + e.what());
    return;
  }
  pid_t mpid = 0;
  unsigned long long mstart = 0;
  try {
    mpid = st.value("monitor_pid", 0);
    mstart = st.value("monitor_start", 0ull);
    (void)st.value("id", -1);
    (void)st.value("vmm_pid", 0);
    (void)st.value("live_xml", std::string());
    (void)st.value("state", std::string());
    (void)st.value("reason", std::string());
    (void)st.value("uuid", std::string());
  } catch (const std::exception& e) {
    log("ignoring run state " + file + ": " + e.what());
    return;
  }
  DomPtr d;
  auto it = doms_.find(name);
  if (it != doms_.end()) {
    d = it->second;
  } else {
    d = std::make_shared<Dom>();
    d->name = name;
    d->uuid = st.value("uuid", "");
    d->persistent = false;
    doms_[name] = d;
  }
  const bool alive = mpid > 0 && process_start_time(mpid) == mstart &&
                     process_cmdline(mpid).find("--vmm-monitor") != std::string::npos;
  d->id = st.value("id", -1);
  d->live_xml = st.value("live_xml", "");
  d->monitor_pid = mpid;
  d->monitor_start = mstart;
  d->vmm_pid = st.value("vmm_pid", 0);
  d->gen = 1;
  next_id_ = std::max(next_id_, d->id + 1);
  UniqueFd pfd = alive ? pidfd_open(mpid) : UniqueFd();
  if (alive && pfd) {
    d->active = true;
    d->state = st.value("state", "running");
    d->reason = st.value("reason", "booted");
    try {
      json r = vmm_command(d, "query-status", 5000);
      std::string s = r.value("status", "");
      if (s == "paused") d->state = "paused";
      else if (s == "running") d->state = "running";
    } catch (const std::exception& e) {
      log("reattach " + name + ": control socket: " + e.what());
    }
    log("reattached domain '" + name + "' (monitor pid " + std::to_string(mpid) + ")");
    std::thread(&Daemon::watch, this, d, d->gen, std::move(pfd)).detach();
  } else {
    // The VMM ended while we were away: record how, as finish_run would have.
    d->active = true;  // so finish_run applies the outcome
    d->exited = true;
    log("domain '" + name + "' ended while vireod was not running");
    Lock op(d->op);
    finish_run(d, d->gen);
  }
}

void Daemon::autostart_all() {
  std::vector<DomPtr> todo;
  {
    Lock t(table_mu_);
    for (auto& [n, d] : doms_) {
      Lock l(d->mu);
      if (d->autostart && !d->active) todo.push_back(d);
    }
  }
  for (auto& d : todo) {
    try {
      Lock op(d->op);
      if (!d->active) start_locked(d);
      log("autostarted domain '" + d->name + "'");
    } catch (const std::exception& e) {
      log("autostart of '" + d->name + "' failed: " + e.what());
    }
  }
}

int Daemon::run() {
  load();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!sfd) throw_errno("signalfd");

  mode_t mode = opts_.socket_mode;
  UniqueFd listener = unix_listen(paths_.socket(), mode);
  if (allowed_gid_ != static_cast<gid_t>(-1) && ::chown(paths_.socket().c_str(), static_cast<uid_t>(-1), allowed_gid_) < 0)
    throw_errno("chown " + paths_.socket());
  log("listening on " + paths_.socket());
  if (opts_.autostart) std::thread([this] { autostart_all(); }).detach();

  for (;;) {
    pollfd p[2] = {{listener.get(), POLLIN, 0}, {sfd.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (p[1].revents) break;
    if (p[0].revents & POLLIN) {
      int c = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::thread(&Daemon::serve_connection, this, UniqueFd(c)).detach();
    }
  }
  ::unlink(paths_.socket().c_str());
  log("exiting; running domains keep running");
  return 0;
}

// ----------------------------------------------------------------------------------------- connections

bool Daemon::peer_allowed(int fd, std::string& why) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    why = "cannot read peer credentials";
    return false;
  }
  if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
  if (allowed_gid_ != static_cast<gid_t>(-1)) {
    if (cred.gid == allowed_gid_) return true;
    auto status = try_read_file("/proc/" + std::to_string(cred.pid) + "/status");
    if (status) {
      auto pos = status->find("\nGroups:");
      if (pos != std::string::npos) {
        std::istringstream is(status->substr(pos + 8, status->find('\n', pos + 1) - pos - 8));
        unsigned long g;
        while (is >> g)
          if (g == allowed_gid_) return true;
      }
    }
  }
  why = "access denied: uid " + std::to_string(cred.uid) + " is not root" +
        (opts_.group.empty() ? "" : " or in group '" + opts_.group + "'");
  return false;
}

void Daemon::serve_connection(UniqueFd fd) {
  client::LineChannel ch(std::move(fd));
  std::string why;
  if (!peer_allowed(ch.fd(), why)) {
    ch.write_line(json{{"jsonrpc", "2.0"}, {"id", nullptr}, {"error", {{"code", kAccessDenied}, {"message", why}}}}.dump());
    return;
  }
  for (;;) {
    auto line = ch.read_line(-1, 4 << 20);
    if (!line) return;
    if (line->empty()) continue;
    json req;
    try {
      req = json::parse(*line);
    } catch (const std::exception&) {
      ch.write_line(json{{"jsonrpc", "2.0"}, {"id", nullptr}, {"error", {{"code", -32700}, {"message", "parse error"}}}}.dump());
      continue;
    }
    // The console method turns this connection into a raw byte stream to the domain's serial console.
    if (req.is_object() && req.contains("method") && req["method"].is_string() && req["method"] == "console") {
      UniqueFd con;
      json reply;
      try {
        DomPtr d = lookup(param_str(req.value("params", json::object()), "domain"));
        {
          Lock l(d->mu);
          if (!d->active) invalid("domain is not running");
        }
        con = unix_connect(base(d->name) + ".con");
        if (!con) failed("cannot connect to the console of domain '" + d->name + "'");
        reply = {{"jsonrpc", "2.0"}, {"id", req.value("id", json())}, {"result", json::object()}};
      } catch (const RpcError& e) {
        reply = {{"jsonrpc", "2.0"}, {"id", req.value("id", json())}, {"error", {{"code", e.code()}, {"message", e.what()}}}};
      }
      ch.write_line(reply.dump(-1, ' ', false, json::error_handler_t::replace));
      if (!con) continue;
      std::string pending = ch.take_buffered();
      UniqueFd cfd = ch.release();
      if (!pending.empty()) write_all(con.get(), pending.data(), pending.size());
      pollfd p[2] = {{cfd.get(), POLLIN, 0}, {con.get(), POLLIN, 0}};
      char buf[16384];
      for (;;) {
        if (::poll(p, 2, -1) < 0) {
          if (errno == EINTR) continue;
          return;
        }
        for (int i = 0; i < 2; ++i) {
          if (!p[i].revents) continue;
          ssize_t n = ::read(p[i].fd, buf, sizeof buf);
          if (n <= 0 || !write_all(p[1 - i].fd, buf, static_cast<size_t>(n))) return;
        }
      }
    }
    json reply = handle(req);
    if (!reply.is_null() && !ch.write_line(reply.dump(-1, ' ', false, json::error_handler_t::replace))) return;
  }
}

json Daemon::handle(const json& req) {
  json id = req.is_object() && req.contains("id") ? req["id"] : json();
  auto err = [&](int code, const std::string& msg) {
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", msg}}}};
  };
  if (!req.is_object() || !req.contains("method") || !req["method"].is_string() || !req.contains("jsonrpc") ||
      req["jsonrpc"] != "2.0")
    return err(-32600, "invalid request");
  const json params = req.contains("params") ? req["params"] : json::object();
  static const std::set<std::string> kMethods = {
      "hello", "version", "list", "define", "create", "lookup", "domstate", "dumpxml", "info", "autostart",
      "undefine", "start", "destroy", "suspend", "resume", "shutdown", "reboot", "console"};
  if (!kMethods.count(req["method"].get<std::string>()))
    return err(-32601, "method not found: " + req["method"].get<std::string>());
  try {
    json result = dispatch(req["method"].get<std::string>(), params);
    if (!req.contains("id")) return json();  // notification
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"result", result}};
  } catch (const RpcError& e) {
    return err(e.code(), e.what());
  } catch (const Error& e) {
    return err(kOperationFailed, std::string("operation failed: ") + e.what());
  } catch (const std::exception& e) {
    return err(kInternal, std::string("internal error: ") + e.what());
  }
}

// ----------------------------------------------------------------------------------------- methods

Daemon::DomPtr Daemon::lookup(const std::string& key) {
  Lock t(table_mu_);
  auto it = doms_.find(key);
  if (it != doms_.end()) return it->second;
  const bool numeric = !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit) && key.size() < 9;
  const std::string uuid = domain::normalize_uuid(key);
  for (auto& [n, d] : doms_) {
    Lock l(d->mu);
    if (numeric && d->active && d->id == std::stoi(key)) return d;
    if (!uuid.empty() && d->uuid == uuid) return d;
  }
  if (!uuid.empty()) throw RpcError(kNoDomain, "Domain not found: no domain with matching uuid '" + key + "'");
  throw RpcError(kNoDomain, "Domain not found: no domain with matching name '" + key + "'");
}

json Daemon::summary(const DomPtr& d) {
  Lock l(d->mu);
  return json{{"name", d->name},           {"uuid", d->uuid},     {"id", d->active ? d->id : -1},
              {"state", d->state},         {"reason", d->reason}, {"active", d->active},
              {"persistent", d->persistent}, {"autostart", d->autostart}};
}

json Daemon::dispatch(const std::string& method, const json& p) {
  if (method == "hello" || method == "version") {
    return json{{"daemon", "vireod"}, {"version", "0.1.0"}, {"hypervisor", "vireo-vmm"}, {"hypervisor_version", "0.1.0"}};
  }
  if (method == "list") {
    std::vector<DomPtr> all;
    {
      Lock t(table_mu_);
      for (auto& [n, d] : doms_) all.push_back(d);
    }
    json out = json::array();
    for (auto& d : all) out.push_back(summary(d));
    return out;
  }
  if (method == "define" || method == "create") {
    std::string name;
    json r = define(param_str(p, "xml"), param_bool(p, "validate"), method == "create", name);
    if (method == "create") {
      DomPtr d = lookup(name);
      Lock op(d->op);
      try {
        start_locked(d);
      } catch (...) {
        remove_if_transient_inactive(d);
        throw;
      }
    }
    return r;
  }
  DomPtr d = lookup(param_str(p, "domain"));
  if (method == "lookup") return summary(d);
  if (method == "domstate") {
    json s = summary(d);
    bool ask;
    {
      Lock l(d->mu);
      ask = d->active && d->state == "running" && d->shutdown_requested;
    }
    if (ask) {
      // After a shutdown request the VMM knows whether the guest is on its way down.
      try {
        if (vmm_command(d, "query-status", 2000).value("status", "") == "shutting-down") {
          s["state"] = "in shutdown";
          s["reason"] = "user";
        }
      } catch (const std::exception&) {
      }
    }
    return s;
  }
  if (method == "dumpxml") {
    Lock l(d->mu);
    const bool inactive = param_bool(p, "inactive");
    const bool live = (d->active && !inactive) || d->config_xml.empty();
    std::string xml = live ? d->live_xml : d->config_xml;
    if (xml.empty()) xml = d->config_xml;
    // A running domain's XML carries its id, as libvirt's does.
    if (live && d->active && xml.rfind("<domain type='", 0) == 0) {
      const auto q = xml.find('\'', 14);
      if (q != std::string::npos) xml.insert(q + 1, " id='" + std::to_string(d->id) + "'");
    }
    return json{{"xml", xml}};
  }
  if (method == "info") {
    json s = summary(d);
    std::string xml;
    pid_t vmm = 0;
    {
      Lock l(d->mu);
      xml = d->active ? d->live_xml : d->config_xml;
      vmm = d->active ? d->vmm_pid : 0;
    }
    auto r = domain::parse_domain_xml(xml, {.generate_uuid = false});
    s["os_type"] = r.def.os.type;
    s["vcpus"] = r.def.active_vcpus();
    s["max_memory_kib"] = r.def.memory_kib;
    s["used_memory_kib"] = r.def.current_memory_kib;
    s["cpu_time_ns"] = vmm ? process_cpu_time_ns(vmm) : 0;
    return s;
  }
  if (method == "autostart") {
    set_autostart(d, param_bool(p, "enable"));
    return json::object();
  }
  Lock op(d->op);
  {
    // The domain may have been undefined (and replaced) while we waited for its lock.
    Lock t(table_mu_);
    auto it = doms_.find(d->name);
    if (it == doms_.end() || it->second != d)
      throw RpcError(kNoDomain, "Domain not found: no domain with matching name '" + d->name + "'");
  }
  if (method == "undefine") {
    undefine(d);
    return json::object();
  }
  if (method == "start") {
    start_locked(d);
    return summary(d);
  }
  if (method == "destroy") {
    destroy_locked(d);
    return json::object();
  }
  bool active;
  std::string state;
  {
    Lock l(d->mu);
    active = d->active;
    state = d->state;
  }
  if (!active) invalid("domain is not running");
  if (method == "suspend") {
    if (state == "paused") return json::object();
    vmm_command(d, "pause");
    Lock l(d->mu);
    d->state = "paused";
    d->reason = "user";
    save_run_state(d);
    return json::object();
  }
  if (method == "resume") {
    if (state != "paused") invalid("domain is not paused");
    vmm_command(d, "resume");
    Lock l(d->mu);
    d->state = "running";
    d->reason = "unpaused";
    save_run_state(d);
    return json::object();
  }
  if (method == "shutdown") {
    {
      Lock l(d->mu);
      d->shutdown_requested = true;
    }
    vmm_command(d, "shutdown");
    return json::object();
  }
  if (method == "reboot") {
    vmm_command(d, "reset");
    return json::object();
  }
  throw RpcError(-32601, "method not found: " + method);
}

json Daemon::define(const std::string& xml, bool validate, bool transient, std::string& name_out) {
  domain::ParseResult r;
  try {
    r = domain::parse_domain_xml(xml);
  } catch (const Error& e) {
    throw RpcError(kXmlError, std::string("XML error: ") + e.what());
  }
  if (validate && !r.unsupported.empty()) {
    std::string list;
    for (auto& u : r.unsupported) list += (list.empty() ? "" : ", ") + u;
    throw RpcError(kUnsupported, "unsupported configuration: elements not supported by Vireo: " + list);
  }
  const std::string normalized = domain::write_domain_xml(r.def);
  const std::string& name = r.def.name;
  name_out = name;
  Lock t(table_mu_);
  for (auto& [n, other] : doms_) {
    Lock l(other->mu);
    if (n != name && other->uuid == r.def.uuid)
      failed("domain '" + n + "' already exists with uuid " + r.def.uuid);
  }
  DomPtr d;
  auto it = doms_.find(name);
  if (it != doms_.end()) {
    d = it->second;
    Lock l(d->mu);
    if (d->uuid != r.def.uuid) failed("domain '" + name + "' already exists with uuid " + d->uuid);
    if (transient) failed("domain '" + name + "' already exists");  // create needs a new name
    atomic_write(paths_.domains_dir() + "/" + name + ".xml", normalized);
    d->config_xml = normalized;
    d->persistent = true;
  } else {
    d = std::make_shared<Dom>();
    d->name = name;
    d->uuid = r.def.uuid;
    if (transient) {
      d->live_xml = normalized;
    } else {
      atomic_write(paths_.domains_dir() + "/" + name + ".xml", normalized);
      d->config_xml = normalized;
      d->persistent = true;
    }
    doms_[name] = d;
  }
  json warnings = json::array();
  for (auto& u : r.unsupported) warnings.push_back(u);
  return json{{"name", name}, {"uuid", r.def.uuid}, {"unsupported", warnings}, {"notes", r.notes}};
}

void Daemon::undefine(const DomPtr& d) {
  Lock t(table_mu_);
  auto it = doms_.find(d->name);
  if (it == doms_.end() || it->second != d) throw RpcError(kNoDomain, "Domain not found: no domain with matching name '" + d->name + "'");
  Lock l(d->mu);
  if (!d->persistent) invalid("cannot undefine transient domain");
  remove_if_exists(paths_.domains_dir() + "/" + d->name + ".xml");
  remove_if_exists(paths_.autostart_dir() + "/" + d->name + ".xml");
  d->persistent = false;
  d->autostart = false;
  d->config_xml.clear();
  if (!d->active) {
    doms_.erase(it);
  } else {
    save_run_state(d);
  }
}

void Daemon::set_autostart(const DomPtr& d, bool on) {
  Lock t(table_mu_);
  Lock l(d->mu);
  if (!d->persistent) invalid("cannot set autostart for transient domain");
  const std::string link = paths_.autostart_dir() + "/" + d->name + ".xml";
  if (on) {
    const std::string tmp = link + ".tmp";
    ::unlink(tmp.c_str());
    if (::symlink(("../domains/" + d->name + ".xml").c_str(), tmp.c_str()) < 0) throw_errno("symlink " + tmp);
    if (::rename(tmp.c_str(), link.c_str()) < 0) throw_errno("rename " + link);
  } else {
    remove_if_exists(link);
  }
  d->autostart = on;
}

void Daemon::remove_if_transient_inactive(const DomPtr& d) {
  Lock t(table_mu_);
  Lock l(d->mu);
  if (d->persistent || d->active) return;
  auto it = doms_.find(d->name);
  if (it != doms_.end() && it->second == d) doms_.erase(it);
}

void Daemon::save_run_state(const DomPtr& d) {
  json st{{"name", d->name},
          {"uuid", d->uuid},
          {"id", d->id},
          {"state", d->state},
          {"reason", d->reason},
          {"monitor_pid", d->monitor_pid},
          {"monitor_start", d->monitor_start},
          {"vmm_pid", d->vmm_pid},
          {"persistent", d->persistent},
          {"live_xml", d->live_xml}};
  atomic_write(base(d->name) + ".json", st.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

// ----------------------------------------------------------------------------------------- lifecycle

void Daemon::start_locked(const DomPtr& d, bool restart) {
  std::string xml;
  {
    Lock l(d->mu);
    if (d->active && !restart) invalid("domain is already running");
    xml = d->persistent ? d->config_xml : d->live_xml;
  }
  domain::DomainDef def;
  try {
    def = domain::parse_domain_xml(xml, {.generate_uuid = false}).def;
  } catch (const Error& e) {
    throw RpcError(kXmlError, std::string("XML error: ") + e.what());
  }
  const std::string b = base(d->name);
  for (const char* ext : {".api", ".exit", ".vmmpid", ".con", ".err"}) ::unlink((b + ext).c_str());
  std::vector<std::string> args;
  try {
    args = domain::vmm_args(def, {b + ".api", "stdio"});
  } catch (const Error& e) {
    throw RpcError(kUnsupported, std::string("unsupported configuration: ") + e.what());
  }
  // Taps left by an earlier run of this domain (a monitor that was killed) go first; then the bridge
  // ports the monitor is to create (monitor.cpp).
  for (const std::string& p : delete_taps_in_file(b + ".taps")) log("domain '" + d->name + "': " + p);
  ::unlink((b + ".bridges").c_str());
  if (auto plan = domain::bridge_plan(def); !plan.empty()) {
    std::string text;
    for (const auto& p : plan)
      text += std::to_string(p.net_index) + " " + p.bridge + " " + p.tap + " " + p.mac + "\n";
    atomic_write(b + ".bridges", text);
  }
  if (opts_.vmm.empty() || ::access(opts_.vmm.c_str(), X_OK) < 0)
    failed("cannot run vireo-vmm '" + opts_.vmm + "': " + errno_message("access", errno).substr(8));

  std::vector<std::string> argv = {opts_.self_exe, "--vmm-monitor", paths_.run_domains_dir(), d->name, opts_.vmm};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t def_sigs, empty;
  sigemptyset(&empty);
  sigemptyset(&def_sigs);
  for (int s : {SIGCHLD, SIGPIPE, SIGTERM, SIGINT, SIGHUP}) sigaddset(&def_sigs, s);
  posix_spawnattr_setsigdefault(&attr, &def_sigs);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  const std::string mlog = b + ".monitor.log";
  posix_spawn_file_actions_addopen(&fa, 1, mlog.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, opts_.self_exe.c_str(), &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) failed(errno_message("spawn monitor " + opts_.self_exe, rc));
  UniqueFd pfd = pidfd_open(pid);
  const unsigned long long mstart = process_start_time(pid);

  // Wait until the VMM answers on its control socket, or the monitor ends (the VMM failed or finished).
  const long long deadline = now_ms() + opts_.start_timeout_ms;
  bool up = false, ended = false;
  pid_t vmm_pid = 0;
  while (!up && !ended) {
    pollfd pp{pfd.get(), POLLIN, 0};
    if (pfd && ::poll(&pp, 1, 20) > 0) {
      ended = true;
      break;
    }
    if (!pfd && process_start_time(pid) == 0) {
      ended = true;
      break;
    }
    if (!vmm_pid) {
      if (auto s = try_read_file(b + ".vmmpid")) vmm_pid = std::atoi(s->c_str());
    }
    if (vmm_pid) {
      UniqueFd c = unix_connect(b + ".api");
      if (c) {
        client::LineChannel ch(std::move(c));
        if (ch.write_line(R"({"id":0,"command":"query-status"})")) {
          auto line = ch.read_line(5000);
          if (line) up = true;
        }
      }
    }
    if (now_ms() > deadline) {
      ::kill(-pid, SIGKILL);
      if (vmm_pid) ::kill(vmm_pid, SIGKILL);
      failed("vireo-vmm did not open its control socket within " + std::to_string(opts_.start_timeout_ms / 1000) + " s");
    }
  }
  if (ended) {
    // Distinguish "could not start" (status 1 or 127: usage/config/exec failure) from a guest that ran
    // and already finished.
    for (int i = 0; i < 100 && !read_exit(b + ".exit").known; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ExitInfo e = read_exit(b + ".exit");
    if (!e.known || (!e.signaled && (e.code == 1 || e.code == 127))) {
      std::string why = last_line(try_read_file(b + ".err").value_or(""));
      if (why.empty()) why = last_line(try_read_file(mlog).value_or(""));
      if (why.empty()) why = e.known ? "exit status " + std::to_string(e.code) : "monitor ended";
      throw RpcError(kOperationFailed, "operation failed: vireo-vmm failed to start: " + why);
    }
  }
  if (!vmm_pid) {
    if (auto s = try_read_file(b + ".vmmpid")) vmm_pid = std::atoi(s->c_str());
  }
  const int id = next_id();
  uint64_t gen;
  {
    Lock l(d->mu);
    d->active = true;
    d->exited = false;
    d->destroying = false;
    d->shutdown_requested = false;
    d->id = id;
    d->state = "running";
    d->reason = "booted";
    d->live_xml = domain::write_domain_xml(def);
    d->monitor_pid = pid;
    d->monitor_start = mstart;
    d->vmm_pid = vmm_pid;
    gen = ++d->gen;
    save_run_state(d);
  }
  std::thread(&Daemon::watch, this, d, gen, std::move(pfd)).detach();
}

void Daemon::watch(DomPtr d, uint64_t gen, UniqueFd pidfd) {
  if (pidfd) {
    pollfd p{pidfd.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
  } else {
    pid_t pid;
    {
      Lock l(d->mu);
      pid = d->monitor_pid;
    }
    while (process_start_time(pid) != 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  {
    Lock l(d->mu);
    if (d->gen == gen) d->exited = true;
    d->cv.notify_all();
  }
  Lock op(d->op);
  try {
    finish_run(d, gen);
  } catch (const std::exception& e) {
    log("domain '" + d->name + "': " + e.what());
  }
}

void Daemon::finish_run(const DomPtr& d, uint64_t gen) {
  const std::string b = base(d->name);
  std::string action, state = "shut off", reason;
  bool restart = false;
  {
    Lock l(d->mu);
    if (d->gen != gen || !d->active) return;
    domain::DomainDef def;
    try {
      def = domain::parse_domain_xml(d->live_xml.empty() ? d->config_xml : d->live_xml, {.generate_uuid = false}).def;
    } catch (...) {
    }
    ExitInfo e = read_exit(b + ".exit");
    if (d->destroying) {
      reason = "destroyed";
    } else if (!e.known) {
      reason = "crashed";  // the monitor itself died: we cannot tell more
    } else if (e.signaled) {
      reason = "crashed";
      action = def.on_crash;
    } else if (e.code == 0) {
      reason = "shutdown";
      action = def.on_poweroff;
    } else if (e.code == 2) {
      reason = "shutdown";
      action = def.on_reboot;
    } else if (e.code == 3) {
      reason = "crashed";
      action = def.on_crash;
    } else if (e.code == 1 || e.code == 127) {
      reason = "failed";
    } else {
      reason = "shutdown";  // the guest ended itself through the debug-exit port
      action = def.on_poweroff;
    }
    if (action == "restart" || action == "rename-restart" || action == "coredump-restart") {
      const long long now = now_ms();
      std::erase_if(d->restarts, [&](long long t) { return now - t > 10000; });
      if (d->restarts.size() < 5) {
        d->restarts.push_back(now);
        restart = true;
      } else {
        log("domain '" + d->name + "': not restarting again (5 restarts in 10 s)");
      }
    } else if (action == "preserve" && reason == "crashed") {
      state = "crashed";
      reason = "panicked";
    }
    log("domain '" + d->name + "' stopped: " + state + " (" + reason + ")" + (e.known ? ", vmm " + std::string(e.signaled ? "signal " : "exit ") + std::to_string(e.code) : ""));
    if (restart) {
      // Stay listed as running (with the old id) until the new VMM is up or has failed.
      d->pending_state = state;
      d->pending_reason = reason;
    } else {
      d->active = false;
      d->id = -1;
      d->state = state;
      d->reason = reason;
      d->monitor_pid = d->vmm_pid = 0;
      d->destroying = false;
      if (d->persistent) d->live_xml.clear();
    }
  }
  for (const char* ext : {".json", ".api", ".vmmpid", ".con", ".exit", ".bridges"}) ::unlink((b + ext).c_str());
  // The monitor deletes the taps it made when the VMM ends; if it was killed, they are still listed.
  for (const std::string& p : delete_taps_in_file(b + ".taps")) log("domain '" + d->name + "': " + p);
  if (restart) {
    try {
      start_locked(d, true);
      log("domain '" + d->name + "' restarted");
      return;
    } catch (const std::exception& e) {
      log("domain '" + d->name + "': restart failed: " + e.what());
      Lock l(d->mu);
      d->active = false;
      d->id = -1;
      d->state = d->pending_state;
      d->reason = d->pending_reason;
      d->monitor_pid = d->vmm_pid = 0;
      d->destroying = false;
      if (d->persistent) d->live_xml.clear();
    }
  }
  remove_if_transient_inactive(d);
}

void Daemon::destroy_locked(const DomPtr& d) {
  uint64_t gen;
  pid_t vmm, mon;
  {
    Lock l(d->mu);
    if (!d->active) invalid("domain is not running");
    d->destroying = true;
    gen = d->gen;
    vmm = d->vmm_pid;
    mon = d->monitor_pid;
    if (!vmm) {
      if (auto s = try_read_file(base(d->name) + ".vmmpid")) vmm = d->vmm_pid = std::atoi(s->c_str());
    }
  }
  if (vmm > 0) ::kill(vmm, SIGTERM);
  {
    Lock l(d->mu);
    if (!d->cv.wait_for(l, std::chrono::milliseconds(opts_.stop_timeout_ms), [&] { return d->exited || d->gen != gen; })) {
      if (vmm > 0) ::kill(vmm, SIGKILL);
      if (mon > 0) ::kill(-mon, SIGKILL);
      d->cv.wait_for(l, std::chrono::seconds(10), [&] { return d->exited || d->gen != gen; });
    }
  }
  {
    Lock l(d->mu);
    d->destroying = true;
    if (!d->exited && d->gen == gen) {
      // Should not happen (SIGKILL is final); record it as destroyed anyway.
      log("domain '" + d->name + "': monitor did not end after SIGKILL");
    }
  }
  finish_run(d, gen);
}

json Daemon::vmm_command(const DomPtr& d, const std::string& command, int timeout_ms) {
  UniqueFd c = unix_connect(base(d->name) + ".api");
  if (!c) failed(errno_message("connect to the control socket of domain '" + d->name + "'", errno));
  client::LineChannel ch(std::move(c));
  if (!ch.write_line(json{{"id", 1}, {"command", command}}.dump())) failed("write to the control socket of domain '" + d->name + "'");
  auto line = ch.read_line(timeout_ms);
  if (!line) failed("no reply from vireo-vmm to '" + command + "'");
  json r;
  try {
    r = json::parse(*line);
  } catch (const std::exception&) {
    failed("bad reply from vireo-vmm: " + *line);
  }
  if (r.contains("error")) {
    const std::string cls = r["error"].value("class", "");
    const std::string desc = r["error"].value("desc", "");
    if (cls == "InvalidState") invalid(desc);
    failed("vireo-vmm: " + desc);
  }
  return r.value("return", json::object());
}

}  // namespace vireo::daemon
