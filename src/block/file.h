// vireo/block: a host file with full-length pread/pwrite, fdatasync and QEMU-compatible image locks.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "common/fd.h"

namespace vireo::block {

class HostFile {
 public:
  // Opens (O_CLOEXEC, O_RDONLY or O_RDWR, optionally O_DIRECT). Throws Error("open PATH: ...").
  HostFile(const std::string& path, bool read_only, bool direct, bool create = false);
  HostFile(HostFile&&) = default;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  bool read_only() const { return read_only_; }
  bool direct() const { return direct_; }

  // Exactly buf.size() bytes; reads past EOF fill zeroes. Throws Error naming the file and offset.
  // With O_DIRECT, accesses whose buffer, offset or length are not 4 KiB aligned go through an aligned bounce
  // buffer (writes as read-modify-write of the covering blocks, serialised per file), so every format
  // driver can use any granularity (qcow2 headers, 512 B clusters) on a cache=none image.
  void pread_full(uint64_t offset, std::span<uint8_t> buf) const;
  void pwrite_full(uint64_t offset, std::span<const uint8_t> buf);
  void sync();                      // fdatasync
  uint64_t length() const;          // st_size
  uint64_t allocated_bytes() const; // st_blocks * 512
  void truncate(uint64_t size);
  // FALLOC_FL_PUNCH_HOLE|KEEP_SIZE; returns false when unsupported (caller writes zeroes).
  bool punch_hole(uint64_t offset, uint64_t length);
  // FALLOC_FL_ZERO_RANGE; false when unsupported.
  bool zero_range(uint64_t offset, uint64_t length);
  // posix_fallocate-like (mode 0). Throws on failure other than EOPNOTSUPP (returns false then).
  bool allocate(uint64_t offset, uint64_t length);

  // QEMU's lock protocol (block/file-posix.c): OFD read locks on byte 100+bit for every permission held
  // and on byte 200+bit for every permission not shared with others. Bits: 0 consistent-read, 1 write,
  // 2 write-unchanged, 3 resize. Read-write users hold {0,1,3} and refuse {1,3}; read-only users hold {0}
  // and refuse {1,3} (exactly what qemu-img/qemu-io 7.2 take). Throws Error with QEMU's message on conflict.
  void lock_for(bool writable);

 private:
  void bounced_read(uint64_t offset, std::span<uint8_t> buf) const;
  void bounced_write(uint64_t offset, std::span<const uint8_t> buf);

  UniqueFd fd_;
  std::string path_;
  bool read_only_;
  bool direct_ = false;
  std::unique_ptr<std::mutex> rmw_ = std::make_unique<std::mutex>();  // unaligned O_DIRECT writes
};

}  // namespace vireo::block
