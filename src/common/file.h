// vireo/common: whole-file helpers with context-carrying errors. atomic_write_file() is the ordered, durable
// write every piece of persistent state uses (temp file in the same folder + fsync + rename + folder fsync).
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace vireo {

// Writes all of [data, data+len) to fd (retrying short writes and EINTR); false with errno set on failure.
bool write_all(int fd, const void* data, size_t len);
// Reads all of [data, data+len) from fd at `offset` (pread, retrying); false on error or early EOF (errno 0).
bool pread_all(int fd, void* data, size_t len, uint64_t offset);

// Throws Error("write <path>: ...") etc.
void atomic_write_file(const std::string& path, const std::string& data, mode_t mode = 0644);
// Reads a whole file; throws Error("<what> <path>: ...") when it cannot be read or is larger than max_bytes.
std::string read_file(const std::string& what, const std::string& path, size_t max_bytes);
// fsync of the folder holding `path` (after creating or renaming files in it); errors are ignored.
void fsync_parent_dir(const std::string& path);

}  // namespace vireo
