// vireo/client: newline-delimited JSON over a stream socket, as spoken by vireod (JSON-RPC 2.0, one object
// per line) and by vireo-vmm's control socket (one object per line).
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "common/fd.h"

namespace vireo::client {

class LineChannel {
 public:
  LineChannel() = default;
  explicit LineChannel(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

  // One line without its '\n'. nullopt on EOF/error/timeout (timeout_ms < 0: wait forever). Lines longer
  // than max_line bytes are an error (nullopt).
  std::optional<std::string> read_line(int timeout_ms = -1, size_t max_line = 16 << 20);
  bool write_line(const std::string& line);  // appends '\n'
  // Bytes already read past the last line (for switching a connection to a raw stream).
  std::string take_buffered() { return std::exchange(buf_, {}); }
  UniqueFd release() { return std::move(fd_); }

 private:
  UniqueFd fd_;
  std::string buf_;
};

}  // namespace vireo::client
