#include "client/transport.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "client/client.h"
#include "client/tls.h"

extern char** environ;

namespace vireo::client {

UniqueFd unix_connect_or_throw(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path)
    throw ClientError(ClientError::kConnect, "Failed to connect socket to '" + path + "': path too long");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
    throw ClientError(ClientError::kConnect, "Failed to connect socket to '" + path + "': " + std::strerror(errno));
  return fd;
}

std::string shell_quote(const std::string& s) {
  if (s.empty()) return "''";
  bool safe = true;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || std::strchr("@%+=:,./-_", c))) safe = false;
  if (safe) return s;
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\"'\"'") : std::string(1, c);
  return o + "'";
}

std::vector<std::string> ssh_argv(const Uri& u, bool readonly) {
  std::vector<std::string> a{u.param("command").empty() ? "ssh" : u.param("command")};
  if (u.port) a.insert(a.end(), {"-p", std::to_string(u.port)});
  if (!u.user.empty()) a.insert(a.end(), {"-l", u.user});
  if (!u.param("keyfile").empty()) a.insert(a.end(), {"-i", u.param("keyfile")});
  a.insert(a.end(), {"-T", "-e", "none"});
  if (u.flag("no_verify")) a.insert(a.end(), {"-o", "StrictHostKeyChecking=no"});
  if (!u.param("known_hosts").empty()) a.insert(a.end(), {"-o", "UserKnownHostsFile=" + u.param("known_hosts")});
  if (u.flag("no_tty")) a.insert(a.end(), {"-o", "BatchMode=yes"});
  std::vector<std::string> remote{u.param("helper").empty() ? "vireo" : u.param("helper"), "ssh-helper"};
  if (readonly) remote.push_back("--readonly");
  if (!u.socket.empty()) remote.insert(remote.end(), {"--socket", u.socket});
  std::string cmd;
  for (const auto& r : remote) cmd += (cmd.empty() ? "" : " ") + shell_quote(r);
  a.insert(a.end(), {"--", u.host, cmd});
  return a;
}

std::vector<std::string> client_pki_files(const Uri& u) {
  const std::string dir = u.param("pkipath");
  if (!dir.empty()) return {dir + "/cacert.pem", dir + "/clientcert.pem", dir + "/clientkey.pem"};
  const std::string root = state_root();
  if (::geteuid() != 0 && root.empty()) {
    if (const char* home = std::getenv("HOME")) {
      const std::string h = std::string(home) + "/.pki/vireo";
      if (::access((h + "/clientcert.pem").c_str(), F_OK) == 0)
        return {h + "/cacert.pem", h + "/clientcert.pem", h + "/clientkey.pem"};
    }
  }
  return {root + "/etc/pki/CA/cacert.pem", root + "/etc/pki/vireo/clientcert.pem",
          root + "/etc/pki/vireo/private/clientkey.pem"};
}

namespace {

class FdTransport : public Transport {
 public:
  explicit FdTransport(UniqueFd fd) { fd_ = std::move(fd); }
};

class SshTransport : public Transport {
 public:
  explicit SshTransport(const Uri& u, bool readonly) : host_(u.host) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
      throw ClientError(ClientError::kConnect, std::string("socketpair: ") + std::strerror(errno));
    UniqueFd mine(sv[0]), theirs(sv[1]);
    int ep[2];
    if (::pipe2(ep, O_CLOEXEC) < 0) throw ClientError(ClientError::kConnect, std::string("pipe: ") + std::strerror(errno));
    UniqueFd err_r(ep[0]), err_w(ep[1]);
    auto argv_s = ssh_argv(u, readonly);
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, theirs.get(), 0);
    posix_spawn_file_actions_adddup2(&fa, theirs.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
    int rc = ::posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw ClientError(ClientError::kConnect, "cannot run " + argv_s[0] + ": " + std::strerror(rc));
    ::fcntl(err_r.get(), F_SETFL, O_NONBLOCK);
    err_ = std::move(err_r);
    fd_ = std::move(mine);
  }
  ~SshTransport() override {
    if (pid_ > 0 && !wait_exit(5000)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string failure_detail() override {
    const bool exited = wait_exit(5000);
    std::string all;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(err_.get(), buf, sizeof buf);
      if (n <= 0) break;
      all.append(buf, static_cast<size_t>(n));
    }
    std::string last;
    size_t pos = 0;
    while (pos < all.size()) {
      size_t nl = all.find('\n', pos);
      std::string line = all.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) last = line;
      pos = nl == std::string::npos ? all.size() : nl + 1;
    }
    if (last.empty() && exited && WIFEXITED(status_)) last = "ssh exited with status " + std::to_string(WEXITSTATUS(status_));
    return last.empty() ? "" : "cannot reach vireod over ssh on '" + host_ + "': " + last;
  }

 private:
  bool wait_exit(int timeout_ms) {
    if (pid_ <= 0) return true;
    for (int waited = 0;; waited += 20) {
      pid_t r = ::waitpid(pid_, &status_, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) {
        pid_ = -1;
        return true;
      }
      if (waited >= timeout_ms) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::string host_;
  pid_t pid_ = -1;
  int status_ = 0;
  UniqueFd err_;
};

UniqueFd tcp_connect(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  const std::string where = "'" + host + ":" + std::to_string(port) + "'";
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) throw ClientError(ClientError::kConnect, "unable to resolve " + where + ": " + ::gai_strerror(rc));
  int last = 0;
  UniqueFd fd;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd s(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!s) {
      last = errno;
      continue;
    }
    if (::connect(s.get(), ai->ai_addr, ai->ai_addrlen) == 0) {
      fd = std::move(s);
      break;
    }
    last = errno;
  }
  ::freeaddrinfo(res);
  if (!fd)
    throw ClientError(ClientError::kConnect, "unable to connect to server at " + where + ": " + std::strerror(last));
  return fd;
}

class TlsTransport : public Transport {
 public:
  explicit TlsTransport(const Uri& u) {
    auto files = client_pki_files(u);
    std::shared_ptr<tls::Credentials> creds;
    try {
      creds = std::make_shared<tls::Credentials>(tls::Files{files[0], files[1], files[2]});
      auto sock = tcp_connect(u.host, u.port);
      session_ = tls::Session::client(std::move(sock), creds, u.host, !u.flag("no_verify"));
    } catch (const ClientError&) {
      throw;
    } catch (const std::exception& e) {
      throw ClientError(ClientError::kConnect, e.what());
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
      throw ClientError(ClientError::kConnect, std::string("socketpair: ") + std::strerror(errno));
    fd_ = UniqueFd(sv[0]);
    pump_ = std::thread([this, plain = UniqueFd(sv[1])]() mutable {
      session_->pump(std::move(plain));
      done_ = true;
    });
  }
  ~TlsTransport() override {
    // The connection closed its end first: the pump sees EOF, says goodbye and returns. If someone still
    // holds the stream (a console), cut the TCP connection instead of waiting forever.
    fd_.reset();
    for (int i = 0; i < 100 && !done_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!done_) session_->abort();
    if (pump_.joinable()) pump_.join();
  }

 private:
  std::unique_ptr<tls::Session> session_;
  std::thread pump_;
  std::atomic<bool> done_{false};
};

}  // namespace

std::unique_ptr<Transport> open_transport(const Uri& u, bool readonly) {
  switch (u.kind) {
    case Uri::Kind::Unix:
      return std::make_unique<FdTransport>(unix_connect_or_throw(u.socket.empty() ? default_socket_path(readonly) : u.socket));
    case Uri::Kind::Ssh:
      return std::make_unique<SshTransport>(u, readonly);
    case Uri::Kind::Tls:
      return std::make_unique<TlsTransport>(u);
    case Uri::Kind::Tcp:
      return std::make_unique<FdTransport>(tcp_connect(u.host, u.port));
  }
  return nullptr;
}

}  // namespace vireo::client
