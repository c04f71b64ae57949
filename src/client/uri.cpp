#include "client/uri.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

#include "client/client.h"

namespace vireo::client {

std::string state_root() {
  const char* r = std::getenv("VIREO_ROOT");
  std::string s = r ? r : "";
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

std::string default_socket_path(bool readonly) {
  return state_root() + (readonly ? "/run/vireo/vireod-ro.sock" : "/run/vireo/vireod.sock");
}

namespace {

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::string unescape(const std::string& s, bool plus_is_space) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      o += static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      o += ' ';
    } else {
      o += s[i];
    }
  }
  return o;
}

const std::map<std::string, std::set<std::string>>& known_params() {
  static const std::map<std::string, std::set<std::string>> k = {
      {"unix", {"socket"}},
      {"ssh", {"keyfile", "no_verify", "known_hosts", "socket", "helper", "command", "no_tty"}},
      {"tls", {"pkipath", "no_verify"}},
      {"tcp", {}},
  };
  return k;
}

}  // namespace

Uri parse_uri(const std::string& uri) {
  Uri u;
  u.text = uri.empty() ? "vireo:///system" : uri;
  if (uri.empty()) return u;
  auto bad = [&](const std::string& why) {
    return ClientError(ClientError::kConnect, "invalid connection URI '" + uri + "': " + why);
  };
  if (uri.rfind("unix:", 0) == 0) {
    std::string rest = uri.rfind("unix://", 0) == 0 ? uri.substr(7) : uri.substr(5);
    if (rest.empty() || rest[0] != '/') throw bad("expected unix:///absolute/path");
    u.socket = rest;
    return u;
  }
  const auto sep = uri.find("://");
  const std::string scheme = sep == std::string::npos ? uri.substr(0, uri.find(':')) : uri.substr(0, sep);
  std::string rest = sep == std::string::npos ? "" : uri.substr(sep + 3);
  std::string query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest.erase(q);
  }
  if (auto h = rest.find('#'); h != std::string::npos) rest.erase(h);
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  const std::string path = slash == std::string::npos ? "" : rest.substr(slash);

  // libvirt's local QEMU URIs name the local daemon, so programs written for them run unchanged.
  if (scheme == "qemu" && sep != std::string::npos && authority.empty() && (path == "/system" || path == "/session"))
    return u;
  std::string kind;
  if (scheme == "vireo") kind = authority.empty() ? "unix" : "tls";
  else if (scheme == "vireo+unix" || scheme == "vireo+ssh" || scheme == "vireo+tls" || scheme == "vireo+tcp")
    kind = scheme.substr(6);
  if (kind.empty() || sep == std::string::npos)
    throw bad("unsupported scheme '" + scheme +
              "' (use vireo:///system, unix:///PATH, vireo+ssh://HOST/, vireo+tls://HOST/ or vireo+tcp://HOST/)");
  if (!(path.empty() || path == "/" || path == "/system" || path == "/session"))
    throw bad("unknown path '" + path + "' (expected /system)");
  const auto& allowed = known_params().at(kind);
  size_t pos = 0;
  while (!query.empty() && pos <= query.size()) {
    size_t amp = query.find_first_of("&;", pos);
    std::string item = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    pos = amp == std::string::npos ? query.size() + 1 : amp + 1;
    if (item.empty()) continue;
    auto eq = item.find('=');
    std::string key = unescape(item.substr(0, eq), true);
    std::string value = eq == std::string::npos ? "" : unescape(item.substr(eq + 1), true);
    if (!allowed.count(key)) throw bad("unknown parameter '" + key + "'");
    u.params[key] = value;
  }
  if (kind == "unix") {
    if (!authority.empty()) throw bad("a unix URI names no host");
    u.socket = u.param("socket");
    if (!u.socket.empty() && u.socket[0] != '/') throw bad("socket must be an absolute path");
    return u;
  }
  u.kind = kind == "ssh" ? Uri::Kind::Ssh : kind == "tls" ? Uri::Kind::Tls : Uri::Kind::Tcp;
  std::string hostport = authority;
  if (auto at = hostport.rfind('@'); at != std::string::npos) {
    std::string userinfo = hostport.substr(0, at);
    hostport.erase(0, at + 1);
    u.user = unescape(userinfo.substr(0, userinfo.find(':')), false);
  }
  std::string portstr;
  bool has_port = false;
  if (!hostport.empty() && hostport[0] == '[') {
    auto close = hostport.find(']');
    if (close == std::string::npos) throw bad("missing ']' in the host name");
    u.host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size() && hostport[close + 1] == ':') {
      has_port = true;
      portstr = hostport.substr(close + 2);
    }
  } else {
    auto colon = hostport.find(':');
    u.host = hostport.substr(0, colon);
    if (colon != std::string::npos) {
      has_port = true;
      portstr = hostport.substr(colon + 1);
    }
  }
  std::transform(u.host.begin(), u.host.end(), u.host.begin(), [](unsigned char c) { return std::tolower(c); });
  if (u.host.empty()) throw bad("missing host name");
  if (has_port && !portstr.empty()) {
    if (portstr.size() > 5 || !std::all_of(portstr.begin(), portstr.end(), ::isdigit)) throw bad("invalid port");
    u.port = std::stoi(portstr);
    if (u.port < 1 || u.port > 65535) throw bad("invalid port");
  }
  if (u.port == 0) u.port = u.kind == Uri::Kind::Tls ? kTlsPort : u.kind == Uri::Kind::Tcp ? kTcpPort : 0;
  if (u.kind != Uri::Kind::Ssh && !u.user.empty()) throw bad("a user name is only meaningful with vireo+ssh");
  u.socket = u.param("socket");
  return u;
}

}  // namespace vireo::client
