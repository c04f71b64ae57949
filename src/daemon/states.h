// Object states and reasons as enums (libvirt's numbering), with the words virsh prints. Run-state files
// and the RPC carry the words; the drivers work with the enums.
#pragma once
#include <optional>
#include <string>

namespace vireo::daemon {

// virDomainState.
enum class DomState { kNoState = 0, kRunning = 1, kBlocked = 2, kPaused = 3, kShutdown = 4, kShutoff = 5, kCrashed = 6 };

// The reasons vireod reports (one enum across states; libvirt has one enum per state, these are the
// words that matter here).
enum class DomReason { kUnknown, kBooted, kUnpaused, kUser, kShutdown, kDestroyed, kCrashed, kFailed, kPanicked, kDaemon };

const char* to_string(DomState s);   // "running", "paused", "in shutdown", "shut off", "crashed", ...
const char* to_string(DomReason r);  // "booted", "user", ...
std::optional<DomState> dom_state_from(const std::string& word);
std::optional<DomReason> dom_reason_from(const std::string& word);

// virStoragePoolState.
enum class PoolState { kInactive = 0, kBuilding = 1, kRunning = 2, kDegraded = 3, kInaccessible = 4 };
const char* to_string(PoolState s);  // "inactive", "building", "running", "degraded", "inaccessible"

}  // namespace vireo::daemon
