// io_uring backend for raw files and block devices.
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "block/backend.h"
#include "block/file.h"
#include "block/raw.h"
#include "common/error.h"

namespace vireo::block {

int execute_request(BlockImage& img, const IoRequest& r);  // backend.cpp

namespace {
constexpr uint64_t kStopTag = 1;
bool is_aligned(const IoRequest& r) {
  if (r.offset % 4096) return false;
  for (const auto& v : r.iov)
    if (reinterpret_cast<uintptr_t>(v.iov_base) % 4096 || v.iov_len % 4096) return false;
  return true;
}
}  // namespace

struct UringBackend::Impl {
  struct Op {
    IoRequest req;
    bool sync = false;  // run synchronously (through `image`) when the NOP completes
  };
  std::unique_ptr<RawImage> image;  // for the synchronous fallbacks (bounce buffers, zero writes)
  int fd = -1;
  bool ro = false, direct = false;
  io_uring ring{};
  std::mutex mu;  // guards the submission side of the ring and the counters
  std::condition_variable idle;
  size_t in_flight = 0;
  unsigned depth = 128;
  unsigned queued = 0;  // sqes submitted and not yet reaped
  std::deque<Op*> waiting;  // requests that found the ring full
  std::thread reaper;

  void prep(io_uring_sqe* sqe, Op* op) {
    const IoRequest& r = op->req;
    if (op->sync) {
      io_uring_prep_nop(sqe);
    } else {
      switch (r.kind) {
        case IoKind::Read:
          io_uring_prep_readv(sqe, fd, r.iov.data(), static_cast<unsigned>(r.iov.size()), r.offset);
          break;
        case IoKind::Write:
          io_uring_prep_writev(sqe, fd, r.iov.data(), static_cast<unsigned>(r.iov.size()), r.offset);
          break;
        case IoKind::Flush:
          io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
          break;
        case IoKind::Discard:
          io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, r.offset, r.length);
          break;
        case IoKind::WriteZeroes:
          io_uring_prep_fallocate(sqe, fd, r.may_unmap ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
                                                      : FALLOC_FL_ZERO_RANGE, r.offset, r.length);
          break;
      }
    }
    io_uring_sqe_set_data(sqe, op);
  }

  // Called with mu held.
  void push(Op* op) {
    if (queued >= depth) {
      waiting.push_back(op);
      return;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
      waiting.push_back(op);
      return;
    }
    prep(sqe, op);
    queued++;
    io_uring_submit(&ring);
  }

  void complete(Op* op, int res) {
    IoRequest& r = op->req;
    if (op->sync) {
      res = execute_request(*image, r);
    } else if (res >= 0 && (r.kind == IoKind::Read || r.kind == IoKind::Write)) {
      uint64_t total = 0;
      for (const auto& v : r.iov) total += v.iov_len;
      if (static_cast<uint64_t>(res) < total) {
        // Short transfer: finish the rest synchronously.
        IoRequest rest;
        rest.kind = r.kind;
        uint64_t skip = static_cast<uint64_t>(res);
        rest.offset = r.offset + skip;
        for (const auto& v : r.iov) {
          if (skip >= v.iov_len) {
            skip -= v.iov_len;
            continue;
          }
          rest.iov.push_back(iovec{static_cast<uint8_t*>(v.iov_base) + skip, v.iov_len - skip});
          skip = 0;
        }
        res = execute_request(*image, rest);
      } else {
        res = 0;
      }
    } else if (res < 0 && (r.kind == IoKind::Discard || r.kind == IoKind::WriteZeroes) &&
               (res == -EOPNOTSUPP || res == -EINVAL)) {
      res = execute_request(*image, r);  // file system without fallocate modes: write zeroes
    } else if (res > 0) {
      res = 0;
    }
    if (r.done) r.done(res);
    delete op;
  }

  void reap_loop() {
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      int rc = io_uring_wait_cqe(&ring, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) return;
      uint64_t tag = reinterpret_cast<uint64_t>(io_uring_cqe_get_data(cqe));
      int res = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
      if (tag == kStopTag) return;
      complete(reinterpret_cast<Op*>(tag), res);
      std::lock_guard g(mu);
      queued--;
      in_flight--;
      while (!waiting.empty() && queued < depth) {
        Op* next = waiting.front();
        waiting.pop_front();
        push(next);
      }
      if (in_flight == 0) idle.notify_all();
    }
  }
};

UringBackend::UringBackend(const std::string& path, const Options& opts) : impl_(std::make_unique<Impl>()) {
  OpenOptions oo;
  oo.format = "raw";
  oo.read_only = opts.read_only;
  oo.direct = opts.direct;
  oo.take_locks = opts.take_locks;
  impl_->image = RawImage::open(path, oo);
  impl_->fd = impl_->image->fd();
  impl_->ro = opts.read_only;
  impl_->direct = opts.direct;
  impl_->depth = std::max(8u, opts.queue_depth);
  int rc = io_uring_queue_init(impl_->depth + 1, &impl_->ring, 0);
  if (rc < 0) throw_errno("io_uring setup for " + path, -rc);
  impl_->reaper = std::thread([this] { impl_->reap_loop(); });
}

UringBackend::~UringBackend() {
  drain();
  {
    std::lock_guard g(impl_->mu);
    io_uring_sqe* sqe = io_uring_get_sqe(&impl_->ring);
    if (sqe) {
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, reinterpret_cast<void*>(kStopTag));
      io_uring_submit(&impl_->ring);
    }
  }
  impl_->reaper.join();
  io_uring_queue_exit(&impl_->ring);
}

void UringBackend::submit(IoRequest req) {
  auto* op = new Impl::Op{std::move(req), false};
  const IoRequest& r = op->req;
  uint64_t total = 0;
  for (const auto& v : r.iov) total += v.iov_len;
  uint64_t sz = size();
  bool bad = false;
  if (r.kind == IoKind::Read || r.kind == IoKind::Write) bad = r.offset > sz || total > sz - r.offset;
  if (r.kind == IoKind::Discard || r.kind == IoKind::WriteZeroes) bad = r.offset > sz || r.length > sz - r.offset;
  bool writes = r.kind == IoKind::Write || r.kind == IoKind::Discard || r.kind == IoKind::WriteZeroes;
  // Everything that is not a plain aligned transfer goes through the synchronous path on the reaper
  // thread (it validates and reports -EINVAL/-EROFS too), so submit() never completes inline.
  if (bad || (writes && impl_->ro) || (impl_->direct && (r.kind == IoKind::Read || r.kind == IoKind::Write) &&
                                       !is_aligned(r)))
    op->sync = true;
  if (r.iov.size() > IOV_MAX) op->sync = true;
  std::lock_guard g(impl_->mu);
  impl_->in_flight++;
  impl_->push(op);
}

uint64_t UringBackend::size() const { return impl_->image->size(); }
bool UringBackend::read_only() const { return impl_->ro; }

void UringBackend::drain() {
  std::unique_lock g(impl_->mu);
  impl_->idle.wait(g, [&] { return impl_->in_flight == 0; });
}

}  // namespace vireo::block
