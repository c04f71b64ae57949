// vireo/client: the C++ client library for vireod (the `vireo` CLI is built on it; vireo.h wraps it for C).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "client/transport.h"
#include "client/uri.h"
#include "client/wire.h"
#include "common/error.h"
#include "common/fd.h"

namespace vireo::client {

// An error reported by vireod (code: see docs/management.md) or a connection failure (code kConnect).
class ClientError : public vireo::Error {
 public:
  static constexpr int kConnect = -1;
  ClientError(int code, const std::string& msg) : vireo::Error(msg), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

struct DomainSummary {
  std::string name, uuid;
  int id = -1;              // -1 when not running
  std::string state;        // libvirt words: "running", "paused", "in shutdown", "shut off", "crashed"
  std::string reason;       // libvirt reason words: "booted", "user", "destroyed", "shutdown", "crashed", ...
  bool active = false, persistent = false, autostart = false;
};

struct DomainInfo : DomainSummary {
  std::string os_type;
  unsigned vcpus = 0;
  uint64_t cpu_time_ns = 0, max_memory_kib = 0, used_memory_kib = 0;
};

struct DefineResult {
  std::string name, uuid;
  std::vector<std::string> unsupported;  // elements kept but not implemented
  std::vector<std::string> notes;
};

// The local socket a unix URI names ("" and vireo:///system: the default socket, uri.h); throws for others.
std::string socket_from_uri(const std::string& uri);

class Connection {
 public:
  // Connects (any URI of uri.h) and says hello; throws ClientError. A read-only connection may only query
  // (locally it goes to the read-only socket).
  explicit Connection(const std::string& uri = "", bool readonly = false);
  ~Connection();
  const Uri& uri() const { return uri_; }
  bool readonly() const { return readonly_; }

  nlohmann::json call(const std::string& method, const nlohmann::json& params = nlohmann::json::object());

  nlohmann::json version();
  std::vector<DomainSummary> list();  // every domain, virsh's order (running by id, then by name)
  DomainSummary lookup(const std::string& domain);  // by name, id or uuid
  DomainSummary domstate(const std::string& domain);  // like lookup, but asks a running VMM when it matters
  DefineResult define(const std::string& xml, bool validate = false);
  DefineResult create(const std::string& xml, bool validate = false);  // transient, started
  void undefine(const std::string& domain);
  void start(const std::string& domain);
  void shutdown(const std::string& domain);
  void reboot(const std::string& domain);
  void destroy(const std::string& domain);
  void suspend(const std::string& domain);
  void resume(const std::string& domain);
  std::string dumpxml(const std::string& domain, bool inactive = false);
  DomainInfo info(const std::string& domain);
  void set_autostart(const std::string& domain, bool enable);
  // A new connection switched to the domain's serial console: a raw byte stream. Bytes the daemon sent
  // right after the reply are returned in `first`. Close it before this Connection.
  UniqueFd open_console(const std::string& domain, std::string& first);

 private:
  Uri uri_;
  bool readonly_ = false;
  std::vector<std::unique_ptr<Transport>> transports_;  // the main one first, then consoles'
  std::mutex mu_;
  LineChannel ch_;
  uint64_t next_id_ = 1;
};

DomainSummary summary_from_json(const nlohmann::json& j);

}  // namespace vireo::client
