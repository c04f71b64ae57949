// vireod: the management daemon. JSON-RPC 2.0 over a unix socket (one request object per line, one reply
// per line) dispatched through a method table that the drivers fill: one driver per object kind
// (domain_driver, network_driver, storage_driver, interface_driver). See docs/management.md.
#pragma once
#include <sys/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/fd.h"
#include "daemon/host.h"
#include "daemon/listen.h"
#include "daemon/rpc.h"

namespace vireo::daemon {

class Daemon {
 public:
  explicit Daemon(Options opts);
  ~Daemon();
  // Loads definitions, reattaches running domains, listens, autostarts, serves until SIGTERM/SIGINT.
  int run();
  // The first step of run(): create the state root, take its lock, let every driver load.
  void load();
  // What a fresh install has (libvirt's packaging does the same): the network "default" (NAT,
  // 192.168.122.0/24, DHCP, autostart) and the pool "default" (<var/lib>/vireo/images, autostart), each
  // defined unless an object of that name exists. Call after load().
  void define_defaults();

  // One request object -> one reply object (null for a notification). Public for tests and for the
  // connection threads; `call` carries the connection's rights and takes a stream switch.
  nlohmann::json handle(const nlohmann::json& request, Call& call);
  nlohmann::json handle(const nlohmann::json& request) {
    Call c;
    return handle(request, c);
  }
  const MethodTable& methods() const { return table_; }

 private:
  void serve_connection(UniqueFd fd, ConnInfo info);

  Host host_;
  std::vector<std::unique_ptr<Driver>> drivers_;  // in load/autostart order
  MethodTable table_;
  gid_t allowed_gid_ = static_cast<gid_t>(-1);
  UniqueFd lock_fd_;
};

}  // namespace vireo::daemon
