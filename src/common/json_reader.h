// vireo/common: strict, bounds-checked reading of JSON objects that come from outside the process (config
// files, snapshot and migration state). Every accessor checks presence, type and range and throws
// vireo::Error with a one-line message naming the full key path ("vm.json: memory.size: expected an unsigned
// number"); finish() rejects keys nobody asked for, so typos and foreign data do not pass silently.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"

namespace vireo {

class JsonReader {
 public:
  // `path` names the object in messages: "vm.json", "vm.json: disks[0]", "state: serial0".
  JsonReader(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail("{}: expected an object", path_);
  }

  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const std::string& path() const { return path_; }
  std::string key_path(const std::string& key) const {
    return path_.find(':') == std::string::npos ? path_ + ": " + key : path_ + "." + key;
  }

  // Raw member (marked as used); throws if absent.
  const nlohmann::json& at(const std::string& key) {
    used_.insert(key);
    if (!j_.contains(key)) fail("{}: missing", key_path(key));
    return j_.at(key);
  }
  // Sub-object reader (throws if absent or not an object).
  JsonReader object(const std::string& key) { return JsonReader(at(key), key_path(key)); }
  // Array member (throws if absent, not an array, or longer than max_items).
  const nlohmann::json& array(const std::string& key, size_t max_items) {
    const auto& a = at(key);
    if (!a.is_array()) fail("{}: expected an array", key_path(key));
    if (a.size() > max_items) fail("{}: {} items, at most {} allowed", key_path(key), a.size(), max_items);
    return a;
  }

  uint64_t u64(const std::string& key, uint64_t min = 0, uint64_t max = std::numeric_limits<uint64_t>::max()) {
    const auto& v = at(key);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      fail("{}: expected an unsigned number", key_path(key));
    const uint64_t n = v.get<uint64_t>();
    if (n < min || n > max) fail("{}: {} is out of range ({}..{})", key_path(key), n, min, max);
    return n;
  }
  template <typename T>
  T uint(const std::string& key) {
    return static_cast<T>(u64(key, 0, std::numeric_limits<T>::max()));
  }
  int64_t i64(const std::string& key) {
    const auto& v = at(key);
    if (!v.is_number_integer()) fail("{}: expected an integer", key_path(key));
    return v.get<int64_t>();
  }
  bool boolean(const std::string& key) {
    const auto& v = at(key);
    if (!v.is_boolean()) fail("{}: expected true or false", key_path(key));
    return v.get<bool>();
  }
  std::string str(const std::string& key, size_t max_len = 4096) {
    const auto& v = at(key);
    if (!v.is_string()) fail("{}: expected a string", key_path(key));
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > max_len) fail("{}: longer than {} bytes", key_path(key), max_len);
    return s;
  }
  // Binary blob (CBOR byte string). `size` exact when given.
  const std::vector<uint8_t>& bytes(const std::string& key, std::optional<size_t> size = std::nullopt) {
    const auto& v = at(key);
    if (!v.is_binary()) fail("{}: expected a byte string", key_path(key));
    const auto& b = v.get_binary();
    if (size && b.size() != *size) fail("{}: {} bytes, expected {}", key_path(key), b.size(), *size);
    return b;
  }

  // Optional forms: leave `out` untouched when the key is absent (or null).
  void opt(const std::string& key, std::string& out) {
    if (has(key)) out = str(key);
    else used_.insert(key);
  }
  void opt(const std::string& key, bool& out) {
    if (has(key)) out = boolean(key);
    else used_.insert(key);
  }
  template <typename T>
  void opt_uint(const std::string& key, T& out) {
    if (has(key)) out = uint<T>(key);
    else used_.insert(key);
  }

  // Marks an absent or null member as handled.
  void skip(const std::string& key) { used_.insert(key); }

  // Throws on the first member that no accessor read.
  void finish() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!used_.count(it.key())) fail("{}: unknown key", key_path(it.key()));
  }

 private:
  const nlohmann::json& j_;
  std::string path_;
  std::set<std::string> used_;
};

}  // namespace vireo
