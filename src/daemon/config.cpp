#include "daemon/config.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <variant>

#include "common/error.h"

namespace vireo::daemon {

namespace {

using Value = std::variant<long long, std::string, std::vector<std::string>>;

class Parser {
 public:
  Parser(const std::string& text, const std::string& name) : t_(text), name_(name) {}

  template <typename F>
  void each(F&& f) {
    for (;;) {
      skip_space(true);
      if (i_ >= t_.size()) return;
      const int line = line_;
      std::string key;
      while (i_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[i_])) || t_[i_] == '_')) key += t_[i_++];
      if (key.empty()) error(line, std::string("expected a setting name, found '") + t_[i_] + "'");
      skip_space(false);
      if (i_ >= t_.size() || t_[i_] != '=') error(line, "expected '=' after '" + key + "'");
      ++i_;
      skip_space(false);
      Value v = value(line);
      skip_space(false);
      if (i_ < t_.size() && t_[i_] != '\n') error(line_, "unexpected text after the value of '" + key + "'");
      f(key, v, line);
    }
  }

  [[noreturn]] void error(int line, const std::string& what) const {
    throw Error(name_ + ":" + std::to_string(line) + ": " + what);
  }

 private:
  void skip_space(bool newlines) {
    while (i_ < t_.size()) {
      char c = t_[i_];
      if (c == '#') {
        while (i_ < t_.size() && t_[i_] != '\n') ++i_;
      } else if (c == '\n' && newlines) {
        ++line_;
        ++i_;
      } else if (c == ' ' || c == '\t' || c == '\r') {
        ++i_;
      } else {
        return;
      }
    }
  }

  std::string string(int line) {
    ++i_;  // opening quote
    std::string s;
    while (i_ < t_.size() && t_[i_] != '"') {
      if (t_[i_] == '\n') error(line, "unterminated string");
      if (t_[i_] == '\\' && i_ + 1 < t_.size()) ++i_;
      s += t_[i_++];
    }
    if (i_ >= t_.size()) error(line, "unterminated string");
    ++i_;
    return s;
  }

  Value value(int line) {
    if (i_ >= t_.size()) error(line, "missing value");
    char c = t_[i_];
    if (c == '"') return string(line);
    if (c == '[') {
      ++i_;
      std::vector<std::string> list;
      for (;;) {
        skip_space(true);
        if (i_ >= t_.size()) error(line, "unterminated list");
        if (t_[i_] == ']') {
          ++i_;
          return list;
        }
        if (t_[i_] != '"') error(line_, "list items must be \"strings\"");
        list.push_back(string(line_));
        skip_space(true);
        if (i_ < t_.size() && t_[i_] == ',') ++i_;
        else if (i_ < t_.size() && t_[i_] != ']') error(line_, "expected ',' or ']' in the list");
      }
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      std::string num;
      num += t_[i_++];
      while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) num += t_[i_++];
      try {
        return std::stoll(num);
      } catch (...) {
        error(line, "invalid number '" + num + "'");
      }
    }
    error(line, std::string("unexpected '") + c + "' (values are numbers, \"strings\" or [lists])");
  }

  const std::string& t_;
  std::string name_;
  size_t i_ = 0;
  int line_ = 1;
};

}  // namespace

FileConfig parse_config(const std::string& text, const std::string& name) {
  FileConfig c;
  Parser p(text, name);
  bool auth_tcp_none = false;
  int tcp_line = 0;
  p.each([&](const std::string& key, const Value& v, int line) {
    auto as_int = [&]() -> long long {
      if (auto* n = std::get_if<long long>(&v)) return *n;
      if (auto* s = std::get_if<std::string>(&v)) {  // libvirt writes ports as strings: accept both
        try {
          size_t used = 0;
          long long n = std::stoll(*s, &used, 10);
          if (used == s->size()) return n;
        } catch (...) {
        }
      }
      p.error(line, "'" + key + "' must be a number");
    };
    auto as_bool = [&]() {
      long long n = as_int();
      if (n != 0 && n != 1) p.error(line, "'" + key + "' must be 0 or 1");
      return n == 1;
    };
    auto as_str = [&]() -> std::string {
      if (auto* s = std::get_if<std::string>(&v)) return *s;
      p.error(line, "'" + key + "' must be a \"string\"");
    };
    auto as_port = [&]() {
      long long n = as_int();
      if (n < 1 || n > 65535) p.error(line, "'" + key + "' must be a port number (1-65535)");
      return static_cast<int>(n);
    };
    auto as_mode = [&]() {
      std::string s = as_str();
      char* end = nullptr;
      unsigned long m = std::strtoul(s.c_str(), &end, 8);
      if (s.empty() || *end || m > 0777) p.error(line, "'" + key + "' must be an octal mode like \"0660\"");
      return static_cast<unsigned>(m);
    };
    if (key == "listen_tls") c.listen.tls = as_bool();
    else if (key == "listen_tcp") {
      c.listen.tcp = as_bool();
      tcp_line = line;
    } else if (key == "listen_addr") c.listen.addr = as_str();
    else if (key == "tls_port") c.listen.tls_port = as_port();
    else if (key == "tcp_port") c.listen.tcp_port = as_port();
    else if (key == "auth_tcp") {
      std::string a = as_str();
      if (a != "none" && a != "sasl") p.error(line, "auth_tcp must be \"none\" or \"sasl\"");
      auth_tcp_none = a == "none";
    } else if (key == "auth_tls") {
      if (as_str() != "none") p.error(line, "auth_tls must be \"none\" (the client certificate is the credential)");
    } else if (key == "ca_file") c.listen.ca_file = as_str();
    else if (key == "cert_file") c.listen.cert_file = as_str();
    else if (key == "key_file") c.listen.key_file = as_str();
    else if (key == "tls_allowed_dn_list") {
      auto* l = std::get_if<std::vector<std::string>>(&v);
      if (!l) p.error(line, "tls_allowed_dn_list must be a [\"list\", \"of patterns\"]");
      c.listen.allowed_dn = *l;
    } else if (key == "unix_sock_group") c.group = as_str();
    else if (key == "unix_sock_rw_perms") c.rw_socket_mode = as_mode();
    else if (key == "unix_sock_ro_perms") c.listen.ro_socket_mode = as_mode();
    else if (key == "vmm") c.vmm = as_str();
    else if (key == "start_timeout" || key == "stop_timeout") {
      long long n = as_int();
      if (n <= 0 || n > 3600) p.error(line, "'" + key + "' must be 1..3600 seconds");
      (key == "start_timeout" ? c.start_timeout : c.stop_timeout) = static_cast<int>(n);
    } else if (key == "autostart") c.autostart = as_bool();
    else p.error(line, "unknown setting '" + key + "'");
  });
  if (c.listen.tcp && !auth_tcp_none)
    p.error(tcp_line, "listen_tcp = 1 also needs auth_tcp = \"none\": plain TCP is neither authenticated nor "
                      "encrypted, so it must be asked for explicitly (use listen_tls for remote access)");
  return c;
}

FileConfig load_config(const std::string& path, bool must_exist) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (!must_exist && errno == ENOENT) return FileConfig{};
    throw Error("cannot read " + path + ": " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_config(ss.str(), path);
}

std::string default_config_path(const std::string& root) {
  std::string r = root;
  while (!r.empty() && r.back() == '/') r.pop_back();
  return r + "/etc/vireo/vireod.conf";
}

void fill_default_pki(ListenConfig& c, const std::string& root) {
  std::string r = root;
  while (!r.empty() && r.back() == '/') r.pop_back();
  if (c.ca_file.empty()) c.ca_file = r + "/etc/pki/CA/cacert.pem";
  if (c.cert_file.empty()) c.cert_file = r + "/etc/pki/vireo/servercert.pem";
  if (c.key_file.empty()) c.key_file = r + "/etc/pki/vireo/private/serverkey.pem";
}

}  // namespace vireo::daemon
