// Domain lifecycle: start (monitor + vireo-vmm), watch, exit mapping and on_* actions, destroy, reattach
// after a daemon restart, the VMM control socket.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "client/wire.h"
#include "common/error.h"
#include "daemon/domain_devices.h"
#include "daemon/domain_driver.h"
#include "daemon/netdev.h"

extern char** environ;

namespace vireo::daemon {

using nlohmann::json;
using Lock = std::unique_lock<std::mutex>;

namespace {

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

// A monitor started by this vireod is its child: collect its exit so it does not stay a zombie (one left
// by an earlier vireod is not ours; waitpid then fails with ECHILD, which is fine).
void reap(pid_t pid) {
  if (pid > 0) (void)::waitpid(pid, nullptr, WNOHANG);
}

}  // namespace

void DomainDriver::reap_monitor(const DomPtr& d) {
  pid_t pid;
  {
    Lock l(d->mu);
    pid = d->monitor_pid;
  }
  reap(pid);
}

int DomainDriver::next_id() {
  // Ids grow across daemon restarts (persisted) so a reattached domain's id is never handed out twice.
  Lock t(table_mu_);
  int id = next_id_++;
  try {
    atomic_write(h_.paths.state + "/next-id", std::to_string(next_id_) + "\n");
  } catch (const Error& e) {
    log(e.what());
  }
  return id;
}

void DomainDriver::save_run_state(const DomPtr& d) {
  json st{{"name", d->name},
          {"uuid", d->uuid},
          {"id", d->id},
          {"state", to_string(d->state)},
          {"reason", to_string(d->reason)},
          {"monitor_pid", d->monitor_pid},
          {"monitor_start", d->monitor_start},
          {"vmm_pid", d->vmm_pid},
          {"persistent", d->persistent()},
          {"live_xml", d->live ? domain::write_domain_xml(*d->live) : std::string()}};
  atomic_write(base(d->name) + ".json", st.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

void DomainDriver::reattach(const std::string& name) {
  const std::string file = base(name) + ".json";
  json st;
  pid_t mpid = 0;
  unsigned long long mstart = 0;
  std::optional<domain::DomainDef> live;
  try {
    st = json::parse(read_file(file));
    mpid = st.value("monitor_pid", 0);
    mstart = st.value("monitor_start", 0ull);
    (void)st.value("id", -1);
    (void)st.value("vmm_pid", 0);
    (void)st.value("state", std::string());
    (void)st.value("reason", std::string());
    (void)st.value("uuid", std::string());
    const std::string lx = st.value("live_xml", std::string());
    if (!lx.empty()) live = domain::parse_domain_xml(lx, {.generate_uuid = false}).def;
  } catch (const std::exception& e) {
    log("ignoring run state " + file + ": " + e.what());
    return;
  }
  DomPtr d;
  auto it = doms_.find(name);
  if (it != doms_.end()) {
    d = it->second;
  } else {
    if (!live) {
      log("ignoring run state " + file + ": a transient domain without its definition");
      return;
    }
    d = std::make_shared<Dom>();
    d->name = name;
    d->uuid = st.value("uuid", "");
    doms_[name] = d;
  }
  const bool alive = mpid > 0 && process_start_time(mpid) == mstart &&
                     process_cmdline(mpid).find("--vmm-monitor") != std::string::npos;
  d->id = st.value("id", -1);
  d->live = live;
  d->monitor_pid = mpid;
  d->monitor_start = mstart;
  d->vmm_pid = st.value("vmm_pid", 0);
  d->gen = 1;
  next_id_ = std::max(next_id_, d->id + 1);
  UniqueFd pfd = alive ? pidfd_open(mpid) : UniqueFd();
  if (alive && pfd) {
    d->active = true;
    d->state = dom_state_from(st.value("state", "")).value_or(DomState::kRunning);
    d->reason = dom_reason_from(st.value("reason", "")).value_or(DomReason::kBooted);
    try {
      json r = vmm_command(d, "query-status", 5000);
      std::string s = r.value("status", "");
      if (s == "paused") d->state = DomState::kPaused;
      else if (s == "running") d->state = DomState::kRunning;
    } catch (const std::exception& e) {
      log("reattach " + name + ": control socket: " + e.what());
    }
    log("reattached domain '" + name + "' (monitor pid " + std::to_string(mpid) + ")");
    std::thread(&DomainDriver::watch, this, d, d->gen, std::move(pfd)).detach();
  } else {
    // The VMM ended while we were away: record how, as finish_run would have.
    d->active = true;  // so finish_run applies the outcome
    d->exited = true;
    log("domain '" + name + "' ended while vireod was not running");
    Lock op(d->op);
    finish_run(d, d->gen);
  }
}

void DomainDriver::start_locked(const DomPtr& d, bool restart) {
  domain::DomainDef def;
  {
    Lock l(d->mu);
    if (d->active && !restart) invalid("domain is already running");
    def = d->persistent() ? *d->config : *d->live;
  }
  const std::string b = base(d->name);
  for (const char* ext : {".api", ".exit", ".vmmpid", ".con", ".err"}) ::unlink((b + ext).c_str());
  // Networks, pools and volumes named by the definition become host resources (bridge ports, paths).
  StartPlan plan = resolve_devices(h_, def);
  std::vector<std::string> args;
  try {
    args = domain::vmm_args(plan.def, {b + ".api", "stdio"});
  } catch (const Error& e) {
    throw RpcError(kUnsupported, std::string("unsupported configuration: ") + e.what());
  }
  // Taps left by an earlier run of this domain (a monitor that was killed) go first; then the bridge
  // ports the monitor is to create (monitor.cpp).
  for (const std::string& p : delete_taps_in_file(b + ".taps")) log("domain '" + d->name + "': " + p);
  ::unlink((b + ".bridges").c_str());
  if (!plan.ports.empty()) atomic_write(b + ".bridges", format_port_plan(plan.ports));
  if (h_.opts.vmm.empty() || ::access(h_.opts.vmm.c_str(), X_OK) < 0)
    failed("cannot run vireo-vmm '" + h_.opts.vmm + "': " + errno_message("access", errno).substr(8));

  std::vector<std::string> argv = {h_.opts.self_exe, "--vmm-monitor", h_.paths.run_domains_dir(), d->name, h_.opts.vmm};
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
  int rc = ::posix_spawn(&pid, h_.opts.self_exe.c_str(), &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) failed(errno_message("spawn monitor " + h_.opts.self_exe, rc));
  UniqueFd pfd = pidfd_open(pid);
  const unsigned long long mstart = process_start_time(pid);

  // Wait until the VMM answers on its control socket, or the monitor ends (the VMM failed or finished).
  const long long deadline = now_ms() + h_.opts.start_timeout_ms;
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
      release_devices(h_, plan);
      failed("vireo-vmm did not open its control socket within " + std::to_string(h_.opts.start_timeout_ms / 1000) + " s");
    }
  }
  if (ended) {
    // Distinguish "could not start" (status 1 or 127: usage/config/exec failure) from a guest that ran
    // and already finished.
    for (int i = 0; i < 100 && !read_exit(b + ".exit").known; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ExitInfo e = read_exit(b + ".exit");
    reap(pid);
    if (!e.known || (!e.signaled && (e.code == 1 || e.code == 127))) {
      std::string why = last_line(try_read_file(b + ".err").value_or(""));
      if (why.empty()) why = last_line(try_read_file(mlog).value_or(""));
      if (why.empty()) why = e.known ? "exit status " + std::to_string(e.code) : "monitor ended";
      release_devices(h_, plan);
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
    d->state = DomState::kRunning;
    d->reason = DomReason::kBooted;
    d->live = def;
    d->monitor_pid = pid;
    d->monitor_start = mstart;
    d->vmm_pid = vmm_pid;
    gen = ++d->gen;
    save_run_state(d);
  }
  std::thread(&DomainDriver::watch, this, d, gen, std::move(pfd)).detach();
}

void DomainDriver::watch(DomPtr d, uint64_t gen, UniqueFd pidfd) {
  if (pidfd) {
    pollfd p{pidfd.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    reap_monitor(d);
  } else {
    pid_t pid;
    {
      Lock l(d->mu);
      pid = d->monitor_pid;
    }
    while (process_start_time(pid) != 0) {
      reap(pid);  // our own child would otherwise stay a zombie with a /proc entry
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
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

void DomainDriver::finish_run(const DomPtr& d, uint64_t gen) {
  const std::string b = base(d->name);
  std::string action;
  DomState state = DomState::kShutoff;
  DomReason reason = DomReason::kUnknown;
  bool restart = false;
  std::optional<domain::DomainDef> ran;
  {
    Lock l(d->mu);
    if (d->gen != gen || !d->active) return;
    ran = d->live ? d->live : d->config;
    const domain::DomainDef def = ran ? *ran : domain::DomainDef{};
    ExitInfo e = read_exit(b + ".exit");
    if (d->destroying) {
      reason = DomReason::kDestroyed;
    } else if (!e.known) {
      reason = DomReason::kCrashed;  // the monitor itself died: we cannot tell more
    } else if (e.signaled) {
      reason = DomReason::kCrashed;
      action = def.on_crash;
    } else if (e.code == 0) {
      reason = DomReason::kShutdown;
      action = def.on_poweroff;
    } else if (e.code == 2) {
      reason = DomReason::kShutdown;
      action = def.on_reboot;
    } else if (e.code == 3) {
      reason = DomReason::kCrashed;
      action = def.on_crash;
    } else if (e.code == 1 || e.code == 127) {
      reason = DomReason::kFailed;
    } else {
      reason = DomReason::kShutdown;  // the guest ended itself through the debug-exit port
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
    } else if (action == "preserve" && reason == DomReason::kCrashed) {
      state = DomState::kCrashed;
      reason = DomReason::kPanicked;
    }
    log("domain '" + d->name + "' stopped: " + to_string(state) + " (" + to_string(reason) + ")" +
        (e.known ? ", vmm " + std::string(e.signaled ? "signal " : "exit ") + std::to_string(e.code) : ""));
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
      if (d->persistent()) d->live.reset();
    }
  }
  for (const char* ext : {".json", ".api", ".vmmpid", ".con", ".exit", ".bridges"}) ::unlink((b + ext).c_str());
  // The monitor deletes the taps it made when the VMM ends; if it was killed, they are still listed.
  for (const std::string& p : delete_taps_in_file(b + ".taps")) log("domain '" + d->name + "': " + p);
  if (ran) release_devices_of(h_, *ran);
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
      if (d->persistent()) d->live.reset();
    }
  }
  remove_if_transient_inactive(d);
}

void DomainDriver::destroy_locked(const DomPtr& d) {
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
    if (!d->cv.wait_for(l, std::chrono::milliseconds(h_.opts.stop_timeout_ms), [&] { return d->exited || d->gen != gen; })) {
      if (vmm > 0) ::kill(vmm, SIGKILL);
      if (mon > 0) ::kill(-mon, SIGKILL);
      d->cv.wait_for(l, std::chrono::seconds(10), [&] { return d->exited || d->gen != gen; });
    }
    d->destroying = true;
    if (!d->exited && d->gen == gen) log("domain '" + d->name + "': monitor did not end after SIGKILL");
  }
  finish_run(d, gen);
}

json DomainDriver::vmm_command(const DomPtr& d, const std::string& command, int timeout_ms) {
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
