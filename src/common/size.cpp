#include "common/size.h"

#include <cctype>
#include <limits>

#include "common/error.h"

namespace vireo {

uint64_t parse_size(std::string_view text, uint64_t default_unit) {
  const std::string shown(text);
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i == text.size() || !std::isdigit(static_cast<unsigned char>(text[i])))
    fail("invalid size '{}'", shown);
  uint64_t value = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) fail("size '{}' is too large", shown);
    value = value * 10 + d;
  }
  std::string_view suffix = text.substr(i);
  uint64_t mult = default_unit;
  if (!suffix.empty()) {
    int shift = -1;
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'B': shift = 0; break;
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      case 'P': shift = 50; break;
      case 'E': shift = 60; break;
      default: fail("invalid size '{}': unknown suffix '{}'", shown, suffix);
    }
    std::string_view rest = suffix.substr(1);
    if (shift == 0 ? !rest.empty() : !(rest.empty() || rest == "B" || rest == "b" || rest == "iB"))
      fail("invalid size '{}': unknown suffix '{}'", shown, suffix);
    mult = uint64_t{1} << shift;
  }
  if (mult != 0 && value > std::numeric_limits<uint64_t>::max() / mult) fail("size '{}' is too large", shown);
  return value * mult;
}

std::string format_size(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  uint64_t v = bytes;
  while (u < 6 && v >= 1024 && v % 1024 == 0) {
    v /= 1024;
    ++u;
  }
  return fmt::format("{} {}", v, units[u]);
}

}  // namespace vireo
