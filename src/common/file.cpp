#include "common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.h"
#include "common/fd.h"

namespace vireo {

bool write_all(int fd, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    const ssize_t n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool pread_all(int fd, void* data, size_t len, uint64_t offset) {
  auto* p = static_cast<uint8_t*>(data);
  while (len > 0) {
    const ssize_t n = ::pread(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = 0;
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

void fsync_parent_dir(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd) ::fsync(dfd.get());
}

void atomic_write_file(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmpXXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) throw_errno("create temporary file for " + path);
  auto fail_with = [&](const std::string& what) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw_errno(what + " " + path, e);
  };
  if (::fchmod(fd.get(), mode) < 0) fail_with("chmod");
  if (!write_all(fd.get(), data.data(), data.size())) fail_with("write");
  if (::fsync(fd.get()) < 0) fail_with("fsync");
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) < 0) fail_with("rename to");
  fsync_parent_dir(path);
}

std::string read_file(const std::string& what, const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(what + " " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) throw_errno(what + " " + path);
  if (S_ISDIR(st.st_mode)) fail("{} {}: is a directory", what, path);
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(what + " " + path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) fail("{} {}: larger than {} bytes", what, path, max_bytes);
  }
  return out;
}

}  // namespace vireo
