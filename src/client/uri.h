// vireo/client: connection URIs (the grammar the CLI, the C/C++ library and the Python binding share;
// tests/data/uris.json pins it for both implementations). See docs/remote.md.
//   (none) | vireo:///system | vireo+unix:///system[?socket=PATH] | unix:///PATH      the local vireod
//   vireo+ssh://[USER@]HOST[:PORT]/[system][?keyfile=&no_verify=&known_hosts=&socket=&helper=&command=&no_tty=]
//   vireo+tls://HOST[:PORT]/[?pkipath=DIR&no_verify=1]    (vireo://HOST/ too)
//   vireo+tcp://HOST[:PORT]/                             (only where vireod is configured insecure)
#pragma once
#include <map>
#include <string>

namespace vireo::client {

constexpr int kTlsPort = 16514;
constexpr int kTcpPort = 16509;

struct Uri {
  enum class Kind { Unix, Ssh, Tls, Tcp };
  Kind kind = Kind::Unix;
  std::string text;    // what getURI()/`vireo uri` report
  std::string socket;  // unix: the path ("" = default); ssh: the remote daemon's socket ("" = its default)
  std::string host, user;
  int port = 0;        // tls/tcp: always set (defaults above); ssh: 0 = ssh's default
  std::map<std::string, std::string> params;

  bool flag(const std::string& name) const {
    auto it = params.find(name);
    return it != params.end() && !it->second.empty() && it->second != "0";
  }
  std::string param(const std::string& name) const {
    auto it = params.find(name);
    return it == params.end() ? "" : it->second;
  }
};

// Throws ClientError(kConnect, "invalid connection URI '...': why").
Uri parse_uri(const std::string& uri);

// "" or "/srv/x" from $VIREO_ROOT (no trailing slash).
std::string state_root();
// <root>/run/vireo/vireod.sock, or vireod-ro.sock for read-only connections.
std::string default_socket_path(bool readonly = false);

}  // namespace vireo::client
