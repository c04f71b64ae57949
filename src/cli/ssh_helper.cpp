#include "cli/ssh_helper.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "client/client.h"

namespace vireo::cli {

namespace {
bool write_all(int fd, const char* p, size_t n) {
  while (n) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}
}  // namespace

int ssh_helper_main(int argc, char** argv) {
  bool readonly = false;
  std::string socket;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--readonly") {
      readonly = true;
    } else if (a == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else {
      std::fprintf(stderr, "vireo ssh-helper: unexpected argument '%s' (usage: vireo ssh-helper [--readonly] [--socket PATH])\n", a.c_str());
      return 2;
    }
  }
  if (socket.empty()) socket = client::default_socket_path(readonly);
  UniqueFd s;
  try {
    s = client::unix_connect_or_throw(socket);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vireo ssh-helper: %s\n", e.what());
    return 1;
  }
  char buf[65536];
  bool in_open = true;
  for (;;) {
    pollfd p[2] = {{in_open ? 0 : -1, POLLIN, 0}, {s.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[1].revents) {
      ssize_t n = ::read(s.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return 0;  // the daemon hung up
      if (!write_all(1, buf, static_cast<size_t>(n))) return 1;
    }
    if (p[0].revents) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        in_open = false;  // the client is done: let the daemon finish and hang up
        ::shutdown(s.get(), SHUT_WR);
        continue;
      }
      if (!write_all(s.get(), buf, static_cast<size_t>(n))) return 1;
    }
  }
}

}  // namespace vireo::cli
