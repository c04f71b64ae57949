// Memory units, uuids and names for domain definitions.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <limits>
#include <random>

#include "common/error.h"
#include "domain/domain.h"

namespace vireo::domain {

namespace {

struct Unit {
  const char* name;
  uint64_t bytes;
};

constexpr uint64_t kKi = 1024, kK = 1000;
const std::array<Unit, 20> kUnits = {{
    {"b", 1},
    {"bytes", 1},
    {"KB", kK},
    {"k", kKi},
    {"KiB", kKi},
    {"MB", kK * kK},
    {"M", kKi * kKi},
    {"MiB", kKi * kKi},
    {"GB", kK * kK * kK},
    {"G", kKi * kKi * kKi},
    {"GiB", kKi * kKi * kKi},
    {"TB", kK * kK * kK * kK},
    {"T", kKi * kKi * kKi * kKi},
    {"TiB", kKi * kKi * kKi * kKi},
    {"PB", kK * kK * kK * kK * kK},
    {"P", kKi * kKi * kKi * kKi * kKi},
    {"PiB", kKi * kKi * kKi * kKi * kKi},
    {"EB", kK * kK * kK * kK * kK * kK},
    {"E", kKi * kKi * kKi * kKi * kKi * kKi},
    {"EiB", kKi * kKi * kKi * kKi * kKi * kKi},
}};

}  // namespace

uint64_t parse_memory_kib(const std::string& value, const std::string& unit, const std::string& element) {
  uint64_t mult = 0;
  if (unit.empty()) {
    mult = kKi;
  } else {
    for (const auto& u : kUnits) {
      // libvirt matches unit names case-insensitively except that "b"/"bytes" and the 1000-based ones are
      // spelled as listed; accept the listed spellings and the lower-case single letters (k, m, g, t, p, e).
      if (unit == u.name) mult = u.bytes;
    }
    if (mult == 0 && unit.size() == 1) {
      const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
      for (const auto& u : kUnits)
        if (u.name[0] == c && u.name[1] == '\0') mult = u.bytes;
      if (c == 'K') mult = kKi;
      if (c == 'B') mult = 1;
    }
    if (mult == 0) fail("{}: unknown unit '{}'", element, unit);
  }
  std::string v = value;
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.erase(v.begin());
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  if (v.empty()) fail("{}: missing value", element);
  uint64_t n = 0;
  for (char c : v) {
    if (!std::isdigit(static_cast<unsigned char>(c))) fail("{}: invalid value '{}'", element, value);
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (n > (std::numeric_limits<uint64_t>::max() - d) / 10) fail("{}: value '{}' is too large", element, value);
    n = n * 10 + d;
  }
  if (n > std::numeric_limits<uint64_t>::max() / mult) fail("{}: value '{}' {} is too large", element, value, unit);
  const uint64_t bytes = n * mult;
  return bytes / kKi + (bytes % kKi ? 1 : 0);
}

std::string generate_uuid() {
  std::array<unsigned char, 16> b{};
  bool ok = false;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ok = ::read(fd, b.data(), b.size()) == static_cast<ssize_t>(b.size());
    ::close(fd);
  }
  if (!ok) {
    std::random_device rd;
    for (auto& x : b) x = static_cast<unsigned char>(rd());
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string s;
  static const char* hex = "0123456789abcdef";
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += hex[b[i] >> 4];
    s += hex[b[i] & 15];
  }
  return s;
}

std::string normalize_uuid(const std::string& text) {
  std::string digits;
  for (char c : text) {
    if (c == '-') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return "";
    digits += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (digits.size() != 32) return "";
  // Dashes, when present, must be in the 8-4-4-4-12 places.
  if (text.size() != 32) {
    if (text.size() != 36) return "";
    for (size_t i : {8u, 13u, 18u, 23u})
      if (text[i] != '-') return "";
  }
  return digits.substr(0, 8) + "-" + digits.substr(8, 4) + "-" + digits.substr(12, 4) + "-" + digits.substr(16, 4) +
         "-" + digits.substr(20);
}

bool valid_domain_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name == "." || name == ".." || name[0] == '.') return false;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

}  // namespace vireo::domain
