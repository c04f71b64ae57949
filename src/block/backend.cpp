#include "block/backend.h"

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "common/error.h"

namespace vireo::block {

BlockBackend::~BlockBackend() = default;

// Runs one request synchronously against an image; returns 0 or -errno.
int execute_request(BlockImage& img, const IoRequest& r) {
  try {
    uint64_t total = 0;
    for (const auto& v : r.iov) total += v.iov_len;
    switch (r.kind) {
      case IoKind::Read:
      case IoKind::Write: {
        if (r.offset > img.size() || total > img.size() - r.offset) return -EINVAL;
        if (r.kind == IoKind::Write && img.read_only()) return -EROFS;
        uint64_t off = r.offset;
        for (const auto& v : r.iov) {
          auto* p = static_cast<uint8_t*>(v.iov_base);
          if (r.kind == IoKind::Read) img.read(off, std::span<uint8_t>(p, v.iov_len));
          else img.write(off, std::span<const uint8_t>(p, v.iov_len));
          off += v.iov_len;
        }
        return 0;
      }
      case IoKind::Flush:
        img.flush();
        return 0;
      case IoKind::Discard:
      case IoKind::WriteZeroes:
        if (img.read_only()) return -EROFS;
        if (r.offset > img.size() || r.length > img.size() - r.offset) return -EINVAL;
        if (r.kind == IoKind::Discard) img.discard(r.offset, r.length);
        else img.write_zeroes(r.offset, r.length, r.may_unmap);
        return 0;
    }
    return -EINVAL;
  } catch (const Error& e) {
    return e.sys_errno() ? -e.sys_errno() : -EIO;
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  } catch (const std::exception&) {
    return -EIO;
  }
}

struct ThreadPoolBackend::Impl {
  std::shared_ptr<BlockImage> image;
  std::mutex mu;
  std::condition_variable cv, idle;
  std::deque<IoRequest> queue;
  size_t in_flight = 0;
  bool stopping = false;
  std::vector<std::thread> threads;

  void worker() {
    for (;;) {
      IoRequest r;
      {
        std::unique_lock g(mu);
        cv.wait(g, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        r = std::move(queue.front());
        queue.pop_front();
      }
      int res = execute_request(*image, r);
      if (r.done) r.done(res);
      {
        std::lock_guard g(mu);
        in_flight--;
        if (in_flight == 0) idle.notify_all();
      }
    }
  }
};

ThreadPoolBackend::ThreadPoolBackend(std::shared_ptr<BlockImage> image, unsigned threads)
    : impl_(std::make_unique<Impl>()) {
  if (!image) fail("ThreadPoolBackend: no image");
  impl_->image = std::move(image);
  if (threads == 0) threads = 1;
  for (unsigned i = 0; i < threads; i++) impl_->threads.emplace_back([this] { impl_->worker(); });
}

ThreadPoolBackend::~ThreadPoolBackend() {
  drain();
  {
    std::lock_guard g(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  for (auto& t : impl_->threads) t.join();
}

void ThreadPoolBackend::submit(IoRequest req) {
  {
    std::lock_guard g(impl_->mu);
    impl_->in_flight++;
    impl_->queue.push_back(std::move(req));
  }
  impl_->cv.notify_one();
}

uint64_t ThreadPoolBackend::size() const { return impl_->image->size(); }
bool ThreadPoolBackend::read_only() const { return impl_->image->read_only(); }

void ThreadPoolBackend::drain() {
  std::unique_lock g(impl_->mu);
  impl_->idle.wait(g, [&] { return impl_->in_flight == 0; });
}

}  // namespace vireo::block
