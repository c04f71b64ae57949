#include "daemon/daemon.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include "client/wire.h"
#include "common/error.h"
#include "daemon/domain_driver.h"
#include "daemon/host_driver.h"
#include "daemon/interface_driver.h"
#include "daemon/network_driver.h"
#include "daemon/storage_driver.h"

namespace vireo::daemon {

using nlohmann::json;

void log(const std::string& msg) { std::fprintf(stderr, "vireod: %s\n", msg.c_str()); }

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void set_autostart_link(const std::string& dir, const std::string& name, const std::string& target, bool on) {
  const std::string link = dir + "/" + name + ".xml";
  if (on) {
    const std::string tmp = link + ".tmp";
    ::unlink(tmp.c_str());
    if (::symlink(target.c_str(), tmp.c_str()) < 0) throw_errno("symlink " + tmp);
    if (::rename(tmp.c_str(), link.c_str()) < 0) throw_errno("rename " + link);
  } else {
    remove_if_exists(link);
  }
}

Daemon::Daemon(Options opts) {
  host_.opts = std::move(opts);
  host_.paths = Paths::for_root(host_.opts.root);
  if (!host_.opts.group.empty()) {
    struct group* g = ::getgrnam(host_.opts.group.c_str());
    if (!g) fail("unknown group '{}'", host_.opts.group);
    allowed_gid_ = g->gr_gid;
  }
  // Order matters for load and autostart: what domains use (networks, pools) comes first.
  auto networks = std::make_unique<NetworkDriver>(host_);
  host_.networks = networks.get();
  drivers_.push_back(std::move(networks));
  auto storage = std::make_unique<StorageDriver>(host_);
  host_.storage = storage.get();
  drivers_.push_back(std::move(storage));
  auto interfaces = std::make_unique<InterfaceDriver>(host_);
  host_.interfaces = interfaces.get();
  drivers_.push_back(std::move(interfaces));
  auto domains = std::make_unique<DomainDriver>(host_);
  host_.domains = domains.get();
  drivers_.push_back(std::move(domains));
  drivers_.push_back(std::make_unique<HostDriver>(host_));  // host info and domain statistics (read-only)

  table_.add("hello", Access::kReadOnly, [](const json&, Call&) {
    return json{{"daemon", "vireod"}, {"version", "0.1.0"}, {"hypervisor", "vireo-vmm"}, {"hypervisor_version", "0.1.0"}};
  });
  table_.add("version", Access::kReadOnly, [this](const json& p, Call& c) { return table_.find("hello")->fn(p, c); });
  for (auto& d : drivers_) d->register_methods(table_);
}

Daemon::~Daemon() = default;

void Daemon::define_defaults() {
  host_.networks->define_default_if_missing();
  host_.storage->define_default_if_missing();
}

void Daemon::load() {
  host_.paths.create();
  lock_fd_ = UniqueFd(::open((host_.paths.run + "/vireod.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd_) throw_errno("open " + host_.paths.run + "/vireod.lock");
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) < 0) fail("another vireod is already running on {}", host_.paths.run);
  for (auto& d : drivers_) d->load();
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

  // Networks and pools come up before clients can connect (domains need them); domains autostart afterwards.
  if (host_.opts.autostart)
    for (auto& d : drivers_)
      if (!d->autostart_in_background()) d->autostart();
  Listeners listeners(host_.paths, host_.opts.socket_mode, allowed_gid_, host_.opts.listen);
  for (size_t i = 0; i < listeners.size(); ++i) log("listening on " + listeners.where(i));
  if (host_.opts.autostart)
    std::thread([this] {
      for (auto& d : drivers_)
        if (d->autostart_in_background()) d->autostart();
    }).detach();

  const auto serve = [this](UniqueFd fd, ConnInfo info) { serve_connection(std::move(fd), std::move(info)); };
  for (;;) {
    std::vector<pollfd> p{{sfd.get(), POLLIN, 0}};
    for (size_t i = 0; i < listeners.size(); ++i) p.push_back({listeners.fd(i), POLLIN, 0});
    if (::poll(p.data(), p.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if (p[0].revents) break;
    for (size_t i = 0; i < listeners.size(); ++i)
      if (p[i + 1].revents & POLLIN) listeners.accept_on(i, serve);
  }
  log("exiting; running domains keep running");
  return 0;
}

void Daemon::serve_connection(UniqueFd fd, ConnInfo info) {
  client::LineChannel ch(std::move(fd));
  if (info.kind == ConnInfo::Kind::UnixRw) {
    std::string why;
    if (!unix_peer_allowed(ch.fd(), allowed_gid_, host_.opts.group, why, info.peer)) {
      log("refused connection from " + info.peer + ": " + why);
      ch.write_line(json{{"jsonrpc", "2.0"}, {"id", nullptr}, {"error", {{"code", kAccessDenied}, {"message", why}}}}.dump());
      return;
    }
  }
  bool read_only = info.read_only;
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
    // A client may give up write access for the rest of the connection (openReadOnly over TLS or ssh).
    if (req.is_object() && req.value("method", json()) == "hello" && req.contains("params") &&
        req["params"].is_object() && req["params"].value("readonly", false))
      read_only = true;
    Call call;
    call.read_only = read_only;
    call.peer = info.peer;
    json reply = handle(req, call);
    if (!reply.is_null() && !ch.write_line(reply.dump(-1, ' ', false, json::error_handler_t::replace))) return;
    if (!call.stream) continue;
    // The method switched this connection to a raw byte stream (console, volume upload/download).
    UniqueFd other = std::move(call.stream);
    std::string pending = ch.take_buffered();
    UniqueFd cfd = ch.release();
    if (!pending.empty()) write_all(other.get(), pending.data(), pending.size());
    pollfd p[2] = {{cfd.get(), POLLIN, 0}, {other.get(), POLLIN, 0}};
    char buf[65536];
    for (;;) {
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      for (int i = 0; i < 2; ++i) {
        if (!p[i].revents) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          // Half-close so the far side sees the end of the data (a volume upload ends this way).
          ::shutdown(p[1 - i].fd, SHUT_WR);
          return;
        }
        if (!write_all(p[1 - i].fd, buf, static_cast<size_t>(n))) return;
      }
    }
  }
}

json Daemon::handle(const json& req, Call& call) {
  json id = req.is_object() && req.contains("id") ? req["id"] : json();
  auto err = [&](int code, const std::string& msg) {
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", msg}}}};
  };
  if (!req.is_object() || !req.contains("method") || !req["method"].is_string() || !req.contains("jsonrpc") ||
      req["jsonrpc"] != "2.0")
    return err(-32600, "invalid request");
  const std::string method = req["method"].get<std::string>();
  const MethodTable::Entry* m = table_.find(method);
  if (!m) return err(-32601, "method not found: " + method);
  if (call.read_only && m->access != Access::kReadOnly) {
    log("refused '" + method + "' from " + (call.peer.empty() ? "a client" : call.peer) + ": read-only connection");
    return err(kAccessDenied, "access denied: '" + method + "' is not allowed on a read-only connection");
  }
  const json params = req.contains("params") ? req["params"] : json::object();
  try {
    json result = m->fn(params, call);
    if (!req.contains("id")) return json();  // notification
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"result", result}};
  } catch (const RpcError& e) {
    call.stream.reset();
    return err(e.code(), e.what());
  } catch (const Error& e) {
    call.stream.reset();
    return err(kOperationFailed, std::string("operation failed: ") + e.what());
  } catch (const std::exception& e) {
    call.stream.reset();
    return err(kInternal, std::string("internal error: ") + e.what());
  }
}

}  // namespace vireo::daemon
