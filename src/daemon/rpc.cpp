#include "daemon/rpc.h"

namespace vireo::daemon {

using nlohmann::json;

void invalid(const std::string& what) { throw RpcError(kOperationInvalid, "Requested operation is not valid: " + what); }
void failed(const std::string& what) { throw RpcError(kOperationFailed, "operation failed: " + what); }
void xml_error(const std::string& what) { throw RpcError(kXmlError, "XML error: " + what); }
void bad_arg(const std::string& what) { throw RpcError(kInvalidArg, "invalid argument: " + what); }

std::string param_str(const json& p, const char* key) {
  if (!p.is_object() || !p.contains(key) || !p[key].is_string())
    throw RpcError(-32602, std::string("invalid params: missing string '") + key + "'");
  return p[key].get<std::string>();
}

std::string param_str_or(const json& p, const char* key, const std::string& dflt) {
  if (!p.is_object() || !p.contains(key) || p[key].is_null()) return dflt;
  if (!p[key].is_string()) throw RpcError(-32602, std::string("invalid params: '") + key + "' must be a string");
  return p[key].get<std::string>();
}

bool param_bool(const json& p, const char* key) {
  return p.is_object() && p.contains(key) && p[key].is_boolean() && p[key].get<bool>();
}

uint64_t param_u64(const json& p, const char* key, uint64_t dflt) {
  if (!p.is_object() || !p.contains(key) || p[key].is_null()) return dflt;
  if (!p[key].is_number_unsigned() && !(p[key].is_number_integer() && p[key].get<long long>() >= 0))
    throw RpcError(-32602, std::string("invalid params: '") + key + "' must be a non-negative integer");
  return p[key].get<uint64_t>();
}

void MethodTable::add(const std::string& name, Access access, Handler fn) {
  if (!methods_.emplace(name, Entry{access, std::move(fn)}).second)
    throw std::logic_error("RPC method registered twice: " + name);
}

const MethodTable::Entry* MethodTable::find(const std::string& name) const {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : &it->second;
}

std::vector<std::string> MethodTable::names() const {
  std::vector<std::string> out;
  for (auto& [n, e] : methods_) out.push_back(n);
  return out;
}

}  // namespace vireo::daemon
