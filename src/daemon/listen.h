// vireod's listening sockets and who may do what on each (docs/remote.md):
//   <run>/vireod.sock     read-write; root, vireod's uid or the configured group (SO_PEERCRED)
//   <run>/vireod-ro.sock  read-only: queries only, for anyone the socket's mode lets in (default 0777)
//   TLS (listen_tls / --listen, port 16514)  x509 both ways; client DN checked against tls_allowed_dn_list
//   TCP (listen_tcp, port 16509)             only with auth_tcp = "none": explicitly insecure
// Sockets passed by systemd (LISTEN_FDS, FileDescriptorName= vireod | vireod-ro | vireod-tls | vireod-tcp)
// are used instead of creating those. Refusals are logged and told to the client as one JSON-RPC error.
#pragma once
#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/fd.h"
#include "daemon/config.h"
#include "daemon/util.h"

namespace vireo::tls {
class Credentials;
}

namespace vireo::daemon {

struct ConnInfo {
  enum class Kind { UnixRw, UnixRo, Tls, Tcp };
  Kind kind = Kind::UnixRw;
  bool read_only = false;
  std::string peer;  // for the log: "tls 'C=GB,...,CN=x' from 127.0.0.1:4711"
};

class Listeners {
 public:
  // Adopts systemd's sockets, then creates the rest (rw and ro unix sockets always; TLS/TCP as configured).
  // rw_group: chown the rw socket to it (-1: leave).
  Listeners(const Paths& paths, mode_t rw_mode, gid_t rw_group, const ListenConfig& lc);
  ~Listeners();  // removes the unix sockets it created (systemd's stay)
  Listeners(const Listeners&) = delete;
  Listeners& operator=(const Listeners&) = delete;

  size_t size() const { return ls_.size(); }
  int fd(size_t i) const { return ls_[i].fd.get(); }
  const std::string& where(size_t i) const { return ls_[i].where; }
  // Accepts one connection on listener i and hands it (after TLS and the DN check, on a thread of its own)
  // to `serve`.
  void accept_on(size_t i, const std::function<void(UniqueFd, ConnInfo)>& serve);

 private:
  struct L {
    UniqueFd fd;
    ConnInfo::Kind kind;
    std::string where;
    std::string unlink_path;  // a unix socket we created
  };
  void serve_tls(UniqueFd sock, std::string addr, const std::function<void(UniqueFd, ConnInfo)>& serve);
  std::vector<L> ls_;
  std::shared_ptr<tls::Credentials> creds_;
  std::vector<std::string> allowed_dn_;
};

// sd_listen_fds(3) by hand: the fds systemd passed us, with their FileDescriptorName=; clears LISTEN_*.
std::vector<std::pair<int, std::string>> systemd_listen_fds();

// Does a unix socket peer pass vireod's read-write rule? `why` says why not.
bool unix_peer_allowed(int fd, gid_t group, const std::string& group_name, std::string& why, std::string& who);

}  // namespace vireo::daemon
