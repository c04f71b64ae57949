#include "daemon/listen.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/tls.h"
#include "common/error.h"
#include "daemon/host.h"
#include "daemon/rpc.h"

namespace vireo::daemon {

using nlohmann::json;

std::vector<std::pair<int, std::string>> systemd_listen_fds() {
  std::vector<std::pair<int, std::string>> out;
  const char* pid = std::getenv("LISTEN_PID");
  const char* n = std::getenv("LISTEN_FDS");
  if (pid && n && std::strtol(pid, nullptr, 10) == ::getpid()) {
    const int count = std::atoi(n);
    std::vector<std::string> names;
    if (const char* fdnames = std::getenv("LISTEN_FDNAMES")) {
      std::istringstream is(fdnames);
      std::string name;
      while (std::getline(is, name, ':')) names.push_back(name);
    }
    for (int i = 0; i < count; ++i) {
      const int fd = 3 + i;
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      out.emplace_back(fd, i < static_cast<int>(names.size()) ? names[i] : "vireod");
    }
  }
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return out;
}

bool unix_peer_allowed(int fd, gid_t group, const std::string& group_name, std::string& why, std::string& who) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    why = "access denied: cannot read peer credentials";
    who = "unknown peer";
    return false;
  }
  who = "uid " + std::to_string(cred.uid) + " pid " + std::to_string(cred.pid);
  if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
  if (group != static_cast<gid_t>(-1)) {
    if (cred.gid == group) return true;
    auto status = try_read_file("/proc/" + std::to_string(cred.pid) + "/status");
    if (status) {
      auto pos = status->find("\nGroups:");
      if (pos != std::string::npos) {
        std::istringstream is(status->substr(pos + 8, status->find('\n', pos + 1) - pos - 8));
        unsigned long g;
        while (is >> g)
          if (g == group) return true;
      }
    }
  }
  why = "access denied: uid " + std::to_string(cred.uid) + " is not root" +
        (group_name.empty() ? "" : " or in group '" + group_name + "'");
  return false;
}

namespace {

UniqueFd tcp_listen(const std::string& addr, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  hints.ai_family = addr.empty() ? AF_INET6 : AF_UNSPEC;
  addrinfo* res = nullptr;
  const std::string where = (addr.empty() ? "*" : addr) + ":" + std::to_string(port);
  int rc = ::getaddrinfo(addr.empty() ? nullptr : addr.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) fail("listen on {}: {}", where, ::gai_strerror(rc));
  UniqueFd fd(::socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol));
  if (!fd) {
    ::freeaddrinfo(res);
    throw_errno("socket for " + where);
  }
  int one = 1, zero = 0;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (res->ai_family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  const int b = ::bind(fd.get(), res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  if (b < 0) throw_errno("bind " + where);
  if (::listen(fd.get(), 64) < 0) throw_errno("listen " + where);
  return fd;
}

std::string peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "?";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  std::string h = host;
  if (h.rfind("::ffff:", 0) == 0) h = h.substr(7);
  return h + ":" + serv;
}

std::string error_line(int code, const std::string& msg) {
  return json{{"jsonrpc", "2.0"}, {"id", nullptr}, {"error", {{"code", code}, {"message", msg}}}}.dump() + "\n";
}

}  // namespace

Listeners::Listeners(const Paths& paths, mode_t rw_mode, gid_t rw_group, const ListenConfig& lc)
    : allowed_dn_(lc.allowed_dn) {
  bool have[4] = {false, false, false, false};
  for (auto& [fd, name] : systemd_listen_fds()) {
    ConnInfo::Kind k;
    if (name == "vireod" || name == "vireod.socket") k = ConnInfo::Kind::UnixRw;
    else if (name == "vireod-ro" || name == "vireod-ro.socket") k = ConnInfo::Kind::UnixRo;
    else if (name == "vireod-tls" || name == "vireod-tls.socket") k = ConnInfo::Kind::Tls;
    else if (name == "vireod-tcp" || name == "vireod-tcp.socket") k = ConnInfo::Kind::Tcp;
    else fail("systemd passed a socket named '{}' (expected vireod, vireod-ro, vireod-tls or vireod-tcp)", name);
    have[static_cast<int>(k)] = true;
    ls_.push_back({UniqueFd(fd), k, "systemd socket '" + name + "'", ""});
  }
  if (!have[0]) {
    UniqueFd fd = unix_listen(paths.socket(), rw_mode);
    if (rw_group != static_cast<gid_t>(-1) && ::chown(paths.socket().c_str(), static_cast<uid_t>(-1), rw_group) < 0)
      throw_errno("chown " + paths.socket());
    ls_.push_back({std::move(fd), ConnInfo::Kind::UnixRw, paths.socket(), paths.socket()});
  }
  const std::string ro = paths.run + "/vireod-ro.sock";
  if (!have[1]) ls_.push_back({unix_listen(ro, lc.ro_socket_mode), ConnInfo::Kind::UnixRo, ro, ro});
  if (lc.tls && !have[2]) {
    ls_.push_back({tcp_listen(lc.addr, lc.tls_port), ConnInfo::Kind::Tls,
                   "TLS " + (lc.addr.empty() ? std::string("*") : lc.addr) + ":" + std::to_string(lc.tls_port), ""});
  }
  if (lc.tcp && !have[3]) {
    ls_.push_back({tcp_listen(lc.addr, lc.tcp_port), ConnInfo::Kind::Tcp,
                   "TCP " + (lc.addr.empty() ? std::string("*") : lc.addr) + ":" + std::to_string(lc.tcp_port), ""});
  }
  bool any_tls = false, any_tcp = false;
  for (auto& l : ls_) {
    any_tls |= l.kind == ConnInfo::Kind::Tls;
    any_tcp |= l.kind == ConnInfo::Kind::Tcp;
  }
  if (any_tls) {
    // Load the credentials once, up front: a missing or bad certificate stops the daemon with its name.
    creds_ = std::make_shared<tls::Credentials>(tls::Files{lc.ca_file, lc.cert_file, lc.key_file});
  }
  if (any_tcp) log("warning: plain TCP connections (auth_tcp = \"none\") are neither authenticated nor encrypted");
}

Listeners::~Listeners() {
  for (auto& l : ls_)
    if (!l.unlink_path.empty()) ::unlink(l.unlink_path.c_str());
}

void Listeners::accept_on(size_t i, const std::function<void(UniqueFd, ConnInfo)>& serve) {
  L& l = ls_[i];
  int c = ::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) return;
  UniqueFd fd(c);
  ConnInfo info;
  info.kind = l.kind;
  switch (l.kind) {
    case ConnInfo::Kind::UnixRw:
      info.peer = "unix";
      std::thread(serve, std::move(fd), info).detach();
      break;
    case ConnInfo::Kind::UnixRo:
      info.read_only = true;
      info.peer = "unix (read-only socket)";
      std::thread(serve, std::move(fd), info).detach();
      break;
    case ConnInfo::Kind::Tcp:
      info.peer = "tcp " + peer_address(fd.get());
      std::thread(serve, std::move(fd), info).detach();
      break;
    case ConnInfo::Kind::Tls: {
      std::string addr = peer_address(fd.get());
      std::thread([this, serve, addr, f = std::move(fd)]() mutable { serve_tls(std::move(f), addr, serve); }).detach();
      break;
    }
  }
}

void Listeners::serve_tls(UniqueFd sock, std::string addr, const std::function<void(UniqueFd, ConnInfo)>& serve) {
  std::shared_ptr<tls::Session> s;
  try {
    s = tls::Session::server(std::move(sock), creds_);
  } catch (const std::exception& e) {
    log("refused TLS connection from " + addr + ": " + e.what());
    return;
  }
  std::string why = s->verify_client();
  if (why.empty() && !allowed_dn_.empty() && !tls::dn_allowed(s->peer_dn(), allowed_dn_))
    why = "client certificate DN '" + s->peer_dn() + "' is not in tls_allowed_dn_list";
  if (!why.empty()) {
    log("refused TLS connection from " + addr + (s->peer_dn().empty() ? "" : " ('" + s->peer_dn() + "')") + ": " + why);
    const std::string line = error_line(kAccessDenied, "access denied: " + why);
    s->write_all(line.data(), line.size());
    s->finish();
    return;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    log(std::string("TLS connection from ") + addr + ": socketpair: " + std::strerror(errno));
    return;
  }
  ConnInfo info;
  info.kind = ConnInfo::Kind::Tls;
  info.peer = "tls '" + s->peer_dn() + "' from " + addr;
  std::thread([s, plain = UniqueFd(sv[1])]() mutable { s->pump(std::move(plain)); }).detach();
  serve(UniqueFd(sv[0]), info);
}

}  // namespace vireo::daemon
