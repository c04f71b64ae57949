// vireod's RPC layer: error codes, the error type every driver throws, parameter helpers and the method
// table the connection loop dispatches through (one entry per JSON-RPC method, registered by the drivers).
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/fd.h"

namespace vireo::daemon {

// JSON-RPC error codes used by vireod (besides the standard -32700..-32603). docs/management.md.
enum ErrorCode : int {
  kNoDomain = 1,          // "Domain not found: ..."
  kOperationInvalid = 2,  // "Requested operation is not valid: ..."
  kXmlError = 3,          // "XML error: ..."
  kOperationFailed = 4,   // "operation failed: ..."
  kAccessDenied = 5,      // "access denied: ..."
  kInternal = 6,          // "internal error: ..."
  kUnsupported = 7,       // "unsupported configuration: ..."
  kNoNetwork = 8,         // "Network not found: ..."
  kNoPool = 9,            // "Storage pool not found: ..."
  kNoVolume = 10,         // "Storage volume not found: ..."
  kNoInterface = 11,      // "Interface not found: ..."
  kInvalidArg = 12,       // "invalid argument: ..."
};

class RpcError : public std::runtime_error {
 public:
  RpcError(int code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

[[noreturn]] void invalid(const std::string& what);   // kOperationInvalid, "Requested operation is not valid: "
[[noreturn]] void failed(const std::string& what);    // kOperationFailed, "operation failed: "
[[noreturn]] void xml_error(const std::string& what); // kXmlError, "XML error: "
[[noreturn]] void bad_arg(const std::string& what);   // kInvalidArg, "invalid argument: "

std::string param_str(const nlohmann::json& p, const char* key);  // required string (-32602 otherwise)
std::string param_str_or(const nlohmann::json& p, const char* key, const std::string& dflt);
bool param_bool(const nlohmann::json& p, const char* key);        // absent -> false
uint64_t param_u64(const nlohmann::json& p, const char* key, uint64_t dflt);

// Per-call context. A handler that turns the connection into a raw byte stream (console, volume
// upload/download) sets `stream`: after the reply is written, the connection loop pumps bytes between
// the client and that fd until either side closes.
struct Call {
  bool read_only = false;  // the connection may only call methods marked kReadOnly
  std::string peer;        // who is calling, for the log ("uid 1000 pid 42", "tls 'CN=x' from ...")
  UniqueFd stream;
};

enum class Access { kReadOnly, kReadWrite };

using Handler = std::function<nlohmann::json(const nlohmann::json& params, Call& call)>;

class MethodTable {
 public:
  // Registers `name`; a duplicate name is a programming error (throws std::logic_error).
  void add(const std::string& name, Access access, Handler fn);
  struct Entry {
    Access access;
    Handler fn;
  };
  const Entry* find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, Entry> methods_;
};

}  // namespace vireo::daemon
