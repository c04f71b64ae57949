#include "common/event_loop.h"

#include <sys/eventfd.h>

#include <cerrno>

#include "common/error.h"

namespace vireo {

EventFd::EventFd(unsigned initial, int flags) {
  fd_.reset(::eventfd(initial, flags | EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd_) throw_errno("eventfd");
}

void EventFd::signal(uint64_t n) const {
  // EAGAIN means the counter is saturated: it is signalled already.
  while (::write(fd_.get(), &n, sizeof n) < 0 && errno == EINTR) {
  }
}

uint64_t EventFd::consume() const {
  uint64_t v = 0;
  while (::read(fd_.get(), &v, sizeof v) < 0) {
    if (errno != EINTR) return 0;
  }
  return v;
}

EventLoop::EventLoop(std::string name) : name_(std::move(name)) {
  epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epfd_) throw_errno(name_ + ": epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_.fd();
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wake_.fd(), &ev) < 0) throw_errno(name_ + ": epoll_ctl");
}

EventLoop::~EventLoop() {
  stop();
  join();
}

void EventLoop::add(int fd, uint32_t events, Handler handler) {
  std::lock_guard lock(mu_);
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) throw_errno(name_ + ": epoll add fd " + std::to_string(fd));
  handlers_[fd] = Entry{std::make_shared<Handler>(std::move(handler))};
}

void EventLoop::modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) < 0) throw_errno(name_ + ": epoll mod fd " + std::to_string(fd));
}

void EventLoop::remove(int fd) {
  std::lock_guard lock(mu_);
  ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
  handlers_.erase(fd);
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    posted_.push_back(std::move(fn));
  }
  wake_.signal();
}

void EventLoop::run() {
  epoll_event events[32];
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
    }
    int n = ::epoll_wait(epfd_.get(), events, 32, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(name_ + ": epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_.fd()) {
        wake_.consume();
        std::vector<std::function<void()>> work;
        {
          std::lock_guard lock(mu_);
          work.swap(posted_);
        }
        for (auto& fn : work) fn();
        continue;
      }
      std::shared_ptr<Handler> h;
      {
        std::lock_guard lock(mu_);
        auto it = handlers_.find(fd);
        if (it == handlers_.end()) continue;  // removed by an earlier handler in this batch
        h = it->second.handler;
      }
      (*h)(events[i].events);
    }
  }
}

void EventLoop::start() {
  thread_ = std::thread([this] { run(); });
}

void EventLoop::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.signal();
}

void EventLoop::join() {
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

}  // namespace vireo
