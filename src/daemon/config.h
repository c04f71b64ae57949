// vireod.conf: the daemon's settings file (<root>/etc/vireo/vireod.conf; libvirtd.conf's syntax and, where
// they mean the same, its setting names). `key = value` per line; values are integers, "strings" or
// [ "lists", "of strings" ] (may span lines); # starts a comment. Unknown settings and wrong types are
// errors naming the file and line. Command-line flags override the file.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace vireo::daemon {

struct ListenConfig {
  bool tls = false;                  // listen_tls
  bool tcp = false;                  // listen_tcp (needs auth_tcp = "none": plain TCP is unauthenticated)
  std::string addr;                  // listen_addr ("" = every address)
  int tls_port = 16514, tcp_port = 16509;
  std::string ca_file, cert_file, key_file;  // "" = libvirt's layout under the root (see paths below)
  std::vector<std::string> allowed_dn;       // tls_allowed_dn_list (fnmatch patterns); empty = any CA-signed client
  unsigned ro_socket_mode = 0777;            // unix_sock_ro_perms
};

struct FileConfig {
  ListenConfig listen;
  std::optional<std::string> group, vmm;      // unix_sock_group, vmm
  std::optional<unsigned> rw_socket_mode;      // unix_sock_rw_perms
  std::optional<int> start_timeout, stop_timeout;  // seconds
  std::optional<bool> autostart;
};

// Parses the text of a vireod.conf (`name` is used in error messages: "NAME:LINE: problem").
FileConfig parse_config(const std::string& text, const std::string& name);
// Reads and parses a file; a missing file gives the defaults when `must_exist` is false.
FileConfig load_config(const std::string& path, bool must_exist);

// The default file and certificate locations for a state root ("" = the system's).
std::string default_config_path(const std::string& root);
void fill_default_pki(ListenConfig& c, const std::string& root);

}  // namespace vireo::daemon
