#include "common/error.h"

#include <cctype>
#include <cerrno>
#include <cstring>

namespace vireo {

std::string errno_message(const std::string& context, int err) {
  std::string text = std::strerror(err);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return context + ": " + text;
}

void throw_errno(const std::string& context) { throw_errno(context, errno); }

void throw_errno(const std::string& context, int err) { throw Error(errno_message(context, err), err); }

}  // namespace vireo
