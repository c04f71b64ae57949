// vireod helpers: state-root layout, atomic file writes, small process/socket utilities.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"

namespace vireo::daemon {

// Where vireod keeps things. With a root DIR everything lives under DIR (DIR/etc/vireo, DIR/var/lib/vireo,
// DIR/run/vireo); without one, the system locations.
struct Paths {
  std::string config;     // definitions: <config>/domains/NAME.xml, autostart links: <config>/autostart/
  std::string state;      // persistent state (next domain id)
  std::string run;        // socket, per-running-domain state files, VMM sockets and logs
  std::string socket() const { return run + "/vireod.sock"; }
  std::string domains_dir() const { return config + "/domains"; }
  std::string autostart_dir() const { return config + "/autostart"; }
  std::string run_domains_dir() const { return run + "/domains"; }
  static Paths for_root(const std::string& root);  // root "" -> system paths
  void create() const;                             // mkdir -p all, mode 0700 for run dirs
};

// Write `data` to `path` atomically: temp file in the same folder, fsync, rename, fsync the folder.
void atomic_write(const std::string& path, const std::string& data, mode_t mode = 0600);
std::string read_file(const std::string& path);                 // throws Error naming the path
std::optional<std::string> try_read_file(const std::string& path);  // nullopt if missing/unreadable
void mkdirs(const std::string& path, mode_t mode);
void remove_if_exists(const std::string& path);
std::vector<std::string> list_dir(const std::string& path, const std::string& suffix);  // names sans suffix

// Process identity: the start time (clock ticks since boot, /proc/PID/stat field 22) or 0 if gone.
unsigned long long process_start_time(pid_t pid);
std::string process_cmdline(pid_t pid);  // NULs replaced by spaces; "" if gone
UniqueFd pidfd_open(pid_t pid);          // invalid fd if the process is gone
// CPU time (user+system) of a process in nanoseconds; 0 if gone.
uint64_t process_cpu_time_ns(pid_t pid);

// Unix stream sockets.
UniqueFd unix_listen(const std::string& path, mode_t mode);
UniqueFd unix_connect(const std::string& path);  // invalid fd on failure (errno set)
bool write_all(int fd, const void* data, size_t n);

}  // namespace vireo::daemon
