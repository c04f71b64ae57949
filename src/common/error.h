// vireo/common: errors that carry their context ("open disk.qcow2: permission denied").
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace vireo {

// The one exception type Vireo throws for expected failures (bad input, missing files, host errors).
// what() is a complete one-line message suitable for "error: <what>".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, int err = 0) : std::runtime_error(msg), errno_(err) {}
  int sys_errno() const { return errno_; }

 private:
  int errno_;
};

// "context: strerror(err)" with a lower-case strerror text, as the rest of our messages are.
std::string errno_message(const std::string& context, int err);

// Throws Error("context: <strerror(errno)>") using the current errno.
[[noreturn]] void throw_errno(const std::string& context);
[[noreturn]] void throw_errno(const std::string& context, int err);

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace vireo
