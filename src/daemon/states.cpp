#include "daemon/states.h"

#include <iterator>

namespace vireo::daemon {

namespace {
constexpr const char* kDomStates[] = {"no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed"};
constexpr const char* kDomReasons[] = {"unknown", "booted", "unpaused", "user", "shutdown", "destroyed",
                                       "crashed", "failed", "panicked", "daemon"};
constexpr const char* kPoolStates[] = {"inactive", "building", "running", "degraded", "inaccessible"};
}  // namespace

const char* to_string(DomState s) { return kDomStates[static_cast<int>(s)]; }
const char* to_string(DomReason r) { return kDomReasons[static_cast<int>(r)]; }
const char* to_string(PoolState s) { return kPoolStates[static_cast<int>(s)]; }

std::optional<DomState> dom_state_from(const std::string& w) {
  for (size_t i = 0; i < std::size(kDomStates); ++i)
    if (w == kDomStates[i]) return static_cast<DomState>(i);
  return std::nullopt;
}

std::optional<DomReason> dom_reason_from(const std::string& w) {
  for (size_t i = 0; i < std::size(kDomReasons); ++i)
    if (w == kDomReasons[i]) return static_cast<DomReason>(i);
  return std::nullopt;
}

}  // namespace vireo::daemon
