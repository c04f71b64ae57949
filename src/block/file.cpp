#include "block/file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/error.h"

namespace vireo::block {

HostFile::HostFile(const std::string& path, bool read_only, bool direct, bool create)
    : path_(path), read_only_(read_only), direct_(direct) {
  int flags = O_CLOEXEC | (read_only ? O_RDONLY : O_RDWR);
  if (direct) flags |= O_DIRECT;
  if (create) flags |= O_CREAT | O_TRUNC;
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) throw_errno("Could not open '" + path + "'");
  fd_.reset(fd);
}

namespace {
constexpr uint64_t kDirectAlign = 4096;
bool direct_aligned(const void* p, uint64_t off, uint64_t len) {
  return reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0 && off % kDirectAlign == 0 && len % kDirectAlign == 0;
}
struct AlignedBuffer {
  uint8_t* p = nullptr;
  explicit AlignedBuffer(size_t n) {
    if (posix_memalign(reinterpret_cast<void**>(&p), kDirectAlign, n) != 0) throw std::bad_alloc();
  }
  ~AlignedBuffer() { free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};
}  // namespace

void HostFile::bounced_read(uint64_t offset, std::span<uint8_t> buf) const {
  const uint64_t start = offset & ~(kDirectAlign - 1);
  const uint64_t end = (offset + buf.size() + kDirectAlign - 1) & ~(kDirectAlign - 1);
  AlignedBuffer b(end - start);
  pread_full(start, std::span<uint8_t>(b.p, end - start));
  std::memcpy(buf.data(), b.p + (offset - start), buf.size());
}

void HostFile::bounced_write(uint64_t offset, std::span<const uint8_t> buf) {
  const uint64_t start = offset & ~(kDirectAlign - 1);
  const uint64_t end = (offset + buf.size() + kDirectAlign - 1) & ~(kDirectAlign - 1);
  AlignedBuffer b(end - start);
  std::lock_guard g(*rmw_);
  pread_full(start, std::span<uint8_t>(b.p, end - start));
  std::memcpy(b.p + (offset - start), buf.data(), buf.size());
  pwrite_full(start, std::span<const uint8_t>(b.p, end - start));
}

void HostFile::pread_full(uint64_t offset, std::span<uint8_t> buf) const {
  if (direct_ && !direct_aligned(buf.data(), offset, buf.size())) return bounced_read(offset, buf);
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("read {} at offset {}", path_, offset + done));
    }
    if (n == 0) {
      std::memset(buf.data() + done, 0, buf.size() - done);
      return;
    }
    done += static_cast<size_t>(n);
  }
}

void HostFile::pwrite_full(uint64_t offset, std::span<const uint8_t> buf) {
  if (direct_ && !direct_aligned(buf.data(), offset, buf.size())) return bounced_write(offset, buf);
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(fmt::format("write {} at offset {}", path_, offset + done));
    }
    if (n == 0) throw Error(fmt::format("write {} at offset {}: no progress", path_, offset + done), EIO);
    done += static_cast<size_t>(n);
  }
}

void HostFile::sync() {
  if (::fdatasync(fd_.get()) != 0) throw_errno("flush " + path_);
}

uint64_t HostFile::length() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw_errno("stat " + path_);
  if (S_ISBLK(st.st_mode)) {
    off_t end = ::lseek(fd_.get(), 0, SEEK_END);
    if (end < 0) throw_errno("seek " + path_);
    return static_cast<uint64_t>(end);
  }
  return static_cast<uint64_t>(st.st_size);
}

uint64_t HostFile::allocated_bytes() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw_errno("stat " + path_);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

void HostFile::truncate(uint64_t size) {
  if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) throw_errno("resize " + path_);
}

bool HostFile::punch_hole(uint64_t offset, uint64_t length) {
  if (length == 0) return true;
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) == 0)
    return true;
  if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL) return false;
  throw_errno(fmt::format("discard {} at offset {}", path_, offset));
}

bool HostFile::zero_range(uint64_t offset, uint64_t length) {
  if (length == 0) return true;
  if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0)
    return true;
  if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL) return false;
  throw_errno(fmt::format("write zeroes {} at offset {}", path_, offset));
}

bool HostFile::allocate(uint64_t offset, uint64_t length) {
  if (length == 0) return true;
  if (::fallocate(fd_.get(), 0, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) return true;
  if (errno == EOPNOTSUPP) return false;
  throw_errno(fmt::format("preallocate {}", path_));
}

namespace {
constexpr int kPermBase = 100, kSharedBase = 200;
const char* perm_name(int bit) {
  switch (bit) {
    case 0: return "consistent read";
    case 1: return "write";
    case 2: return "write unchanged";
    default: return "resize";
  }
}
bool byte_locked_by_other(int fd, int byte) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;  // cannot test: treat as free (like qemu on ENOTSUP)
  return fl.l_type != F_UNLCK;
}
}  // namespace

void HostFile::lock_for(bool writable) {
  const unsigned held = writable ? 0b1011u : 0b0001u;
  const unsigned unshared = 0b1010u;
  for (int bit = 0; bit < 4; bit++) {
    for (int base : {kPermBase, kSharedBase}) {
      bool want = base == kPermBase ? (held >> bit) & 1 : (unshared >> bit) & 1;
      if (!want) continue;
      struct flock fl {};
      fl.l_type = F_RDLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = base + bit;
      fl.l_len = 1;
      if (::fcntl(fd_.get(), F_OFD_SETLK, &fl) != 0) {
        if (errno == EINVAL || errno == ENOTSUP) return;  // file system without OFD locks
        throw Error(fmt::format("Failed to lock byte {}: {}", base + bit, std::strerror(errno)), errno);
      }
    }
  }
  // Others refuse to share something we hold?
  for (int bit = 0; bit < 4; bit++) {
    if (((held >> bit) & 1) && byte_locked_by_other(fd_.get(), kSharedBase + bit))
      throw Error(fmt::format("Failed to get \"{}\" lock\nIs another process using the image [{}]?",
                              perm_name(bit), path_), EAGAIN);
  }
  // Others hold something we refuse to share?
  for (int bit = 0; bit < 4; bit++) {
    if (((unshared >> bit) & 1) && byte_locked_by_other(fd_.get(), kPermBase + bit))
      throw Error(fmt::format("Failed to get shared \"{}\" lock\nIs another process using the image [{}]?",
                              perm_name(bit), path_), EAGAIN);
  }
}

}  // namespace vireo::block
