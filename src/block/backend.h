// vireo/block: asynchronous request submission for device models (virtio-blk).
//
// A BlockBackend takes IoRequests and completes each exactly once by calling its `done` callback with 0 or
// -errno, on a backend thread (never inline from submit()). Requests may complete out of order; a FLUSH
// completes after every request that completed before it was submitted is durable.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "block/block.h"

namespace vireo::block {

enum class IoKind { Read, Write, Flush, Discard, WriteZeroes };

struct IoRequest {
  IoKind kind = IoKind::Read;
  uint64_t offset = 0;               // bytes; Read/Write/Discard/WriteZeroes
  std::vector<iovec> iov;            // Read/Write: host buffers (must stay valid until done is called)
  uint64_t length = 0;               // Discard/WriteZeroes: bytes
  bool may_unmap = false;            // WriteZeroes: the range may be deallocated
  std::function<void(int result)> done;   // 0 or -errno (-EIO, -ENOSPC, -EINVAL for out-of-range, -EROFS)
};

class BlockBackend {
 public:
  virtual ~BlockBackend();
  virtual void submit(IoRequest req) = 0;
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // Blocks until every submitted request has completed (used before stop/destroy).
  virtual void drain() = 0;
};

// Works for every format: N worker threads call BlockImage::read/write/... The destructor drains.
class ThreadPoolBackend : public BlockBackend {
 public:
  ThreadPoolBackend(std::shared_ptr<BlockImage> image, unsigned threads = 4);
  ~ThreadPoolBackend() override;
  void submit(IoRequest req) override;
  uint64_t size() const override;
  bool read_only() const override;
  void drain() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// io_uring on a raw file or block device (optionally O_DIRECT: buffers/offsets must then be 512-aligned,
// unaligned requests fall back to a bounce buffer). One completion thread. The destructor drains.
class UringBackend : public BlockBackend {
 public:
  struct Options {
    bool read_only = false;
    bool direct = false;
    unsigned queue_depth = 128;
    bool take_locks = true;
  };
  UringBackend(const std::string& path, const Options& opts);
  ~UringBackend() override;
  void submit(IoRequest req) override;
  uint64_t size() const override;
  bool read_only() const override;
  void drain() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vireo::block
