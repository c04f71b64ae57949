#include "block/secret.h"

#include <map>
#include <mutex>

#include "common/error.h"

namespace vireo::block {

namespace {
std::mutex g_mu;
std::map<std::string, std::string>& table() {
  static std::map<std::string, std::string> t;
  return t;
}
}  // namespace

void add_secret(const std::string& id, std::string data) {
  std::lock_guard<std::mutex> g(g_mu);
  if (!table().emplace(id, std::move(data)).second)
    fail("attempt to add duplicate property '{}' to object (type 'container')", id);
}

std::string lookup_secret(const std::string& id) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = table().find(id);
  if (it == table().end()) fail("No secret with id '{}'", id);
  return it->second;
}

bool has_secret(const std::string& id) {
  std::lock_guard<std::mutex> g(g_mu);
  return table().count(id) != 0;
}

void clear_secrets() {
  std::lock_guard<std::mutex> g(g_mu);
  table().clear();
}

}  // namespace vireo::block
