#include "vmm/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/error.h"

namespace vireo::vmm {

using nlohmann::json;

json error_reply(const json& id, const std::string& cls, const std::string& desc) {
  json r = {{"error", {{"class", cls}, {"desc", desc}}}};
  if (!id.is_null()) r["id"] = id;
  return r;
}

json ok_reply(const json& id, const json& ret) {
  json r = {{"return", ret}};
  if (!id.is_null()) r["id"] = id;
  return r;
}

// ---------------------------------------------------------------------------------------------------------

ControlServer::ControlServer(EventLoop& loop, const std::string& path, CommandHandler& handler)
    : loop_(loop), path_(path), handler_(handler) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) fail("control socket {}: path too long", path);
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) fail("control socket {}: exists and is not a socket", path);
    ::unlink(path.c_str());
  }
  listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_) throw_errno("control socket: socket");
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    throw_errno("control socket: bind " + path);
  if (::listen(listen_.get(), 16) < 0) throw_errno("control socket: listen " + path);
  loop_.add(listen_.get(), EPOLLIN, [this](uint32_t) {
    try {
      on_accept();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vireo-vmm: control socket: %s\n", e.what());  // keep serving the others
    }
  });
}

ControlServer::~ControlServer() {
  loop_.remove(listen_.get());
  for (auto& [fd, c] : clients_) loop_.remove(fd);
  clients_.clear();
  ::unlink(path_.c_str());
}

void ControlServer::on_accept() {
  for (;;) {
    UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c) return;
    const int fd = c.get();
    auto client = std::make_unique<Client>();
    client->fd = std::move(c);
    clients_[fd] = std::move(client);
    loop_.add(fd, EPOLLIN | EPOLLRDHUP, [this, fd](uint32_t ev) {
      try {
        on_client(fd, ev);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "vireo-vmm: control socket: %s\n", e.what());
        close_client(fd);
      }
    });
  }
}

void ControlServer::close_client(int fd) {
  loop_.remove(fd);
  clients_.erase(fd);
}

void ControlServer::send_line(int fd, const std::string& line) {
  // Replies are small; wait (bounded) for a slow reader rather than dropping part of a reply.
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 1000) > 0) continue;
    }
    return;  // client gone or stuck: give up on this reply
  }
}

void ControlServer::on_client(int fd, uint32_t events) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  bool closed = false;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > (1u << 20)) {  // a line longer than 1 MiB: not a client of ours
        close_client(fd);
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (n < 0 && errno != EAGAIN)) closed = true;
    break;
  }
  size_t pos;
  while ((pos = c.in.find('\n')) != std::string::npos) {
    std::string line = c.in.substr(0, pos);
    c.in.erase(0, pos + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    CommandResult r;
    try {
      r = handler_.handle(line);
    } catch (const std::exception& e) {
      r.reply = error_reply(nullptr, "Internal", e.what());
    }
    send_line(fd, r.reply.dump() + "\n");
    if (r.after) r.after();
  }
  if (closed || (events & (EPOLLHUP | EPOLLERR))) close_client(fd);
}

}  // namespace vireo::vmm
