// vireod: the management daemon. JSON-RPC 2.0 over a unix socket (one request object per line, one reply
// per line), domain definitions under the state root, one vireo-vmm (under a monitor process) per running
// domain. See docs/management.md for methods, error codes and the on-disk layout.
#pragma once
#include <sys/types.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/fd.h"
#include "daemon/util.h"

namespace vireo::daemon {

// JSON-RPC error codes used by vireod (besides the standard -32700..-32603).
enum ErrorCode : int {
  kNoDomain = 1,          // "Domain not found: ..."
  kOperationInvalid = 2,  // "Requested operation is not valid: ..."
  kXmlError = 3,          // "XML error: ..."
  kOperationFailed = 4,   // "operation failed: ..."
  kAccessDenied = 5,      // "access denied: ..."
  kInternal = 6,          // "internal error: ..."
  kUnsupported = 7,       // "unsupported configuration: ..."
};

class RpcError : public std::runtime_error {
 public:
  RpcError(int code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

struct Options {
  std::string root;          // "" -> system paths
  std::string vmm;           // vireo-vmm binary
  std::string self_exe;      // this binary (runs the monitors)
  std::string group;         // extra group allowed to connect
  mode_t socket_mode = 0660;
  int start_timeout_ms = 30000;
  int stop_timeout_ms = 10000;
  bool autostart = true;
};

struct Dom {
  std::mutex op;  // serializes lifecycle operations (start/stop/undefine) on this domain
  std::mutex mu;  // protects everything below
  std::condition_variable cv;
  std::string name, uuid;
  std::string config_xml;  // persistent definition (normalized XML); empty when transient
  bool persistent = false;
  bool autostart = false;
  bool active = false;
  int id = -1;
  std::string state = "shut off", reason = "unknown";
  std::string live_xml;
  pid_t monitor_pid = 0, vmm_pid = 0;
  unsigned long long monitor_start = 0;
  uint64_t gen = 0;
  bool exited = false;
  bool destroying = false, shutdown_requested = false;
  std::string pending_state, pending_reason;  // outcome to show if an automatic restart fails
  std::vector<long long> restarts;  // monotonic ms of recent automatic restarts
};

class Daemon {
 public:
  explicit Daemon(Options opts);
  ~Daemon();
  // Loads definitions, reattaches running domains, listens, autostarts, serves until SIGTERM/SIGINT.
  int run();
  // The first step of run(): create the state root, take its lock, load definitions, reattach.
  void load();

  // One request object -> one reply object (public for tests and for the connection threads).
  nlohmann::json handle(const nlohmann::json& request);

 private:
  using DomPtr = std::shared_ptr<Dom>;

  void reattach(const std::string& name);
  void autostart_all();
  void serve_connection(UniqueFd fd);
  bool peer_allowed(int fd, std::string& why);

  nlohmann::json dispatch(const std::string& method, const nlohmann::json& params);
  DomPtr lookup(const std::string& key);
  nlohmann::json summary(const DomPtr& d);

  nlohmann::json define(const std::string& xml, bool validate, bool transient, std::string& name_out);
  void undefine(const DomPtr& d);
  void start_locked(const DomPtr& d, bool restart = false);
  void destroy_locked(const DomPtr& d);
  void finish_run(const DomPtr& d, uint64_t gen);
  void watch(DomPtr d, uint64_t gen, UniqueFd pidfd);
  nlohmann::json vmm_command(const DomPtr& d, const std::string& command, int timeout_ms = 10000);
  void save_run_state(const DomPtr& d);  // d->mu held
  void set_autostart(const DomPtr& d, bool on);
  void remove_if_transient_inactive(const DomPtr& d);
  int next_id();
  std::string base(const std::string& name) const { return paths_.run_domains_dir() + "/" + name; }

  Options opts_;
  Paths paths_;
  gid_t allowed_gid_ = static_cast<gid_t>(-1);
  std::mutex table_mu_;
  std::map<std::string, DomPtr> doms_;
  int next_id_ = 1;
  UniqueFd lock_fd_;
};

}  // namespace vireo::daemon
