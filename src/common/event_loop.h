// vireo/common: EventFd (an eventfd owner) and EventLoop (an epoll loop on its own thread). Device work and
// the control socket run on event loops, never on vCPU threads.
#pragma once
#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "common/fd.h"

namespace vireo {

class EventFd {
 public:
  explicit EventFd(unsigned initial = 0, int flags = 0);  // EFD_CLOEXEC|EFD_NONBLOCK always added
  int fd() const { return fd_.get(); }
  void signal(uint64_t n = 1) const;  // write n; never blocks (a full counter is already signalled)
  uint64_t consume() const;           // read and reset; 0 if not signalled

 private:
  UniqueFd fd_;
};

class EventLoop {
 public:
  // Called with the epoll events that fired (EPOLLIN, EPOLLOUT, EPOLLHUP, ...).
  using Handler = std::function<void(uint32_t events)>;

  explicit EventLoop(std::string name);
  ~EventLoop();  // stops and joins the thread if running
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Register/modify/unregister an fd. Safe from any thread, including from inside a handler (a handler
  // removed while events are pending is not called again).
  void add(int fd, uint32_t events, Handler handler);
  void modify(int fd, uint32_t events);
  void remove(int fd);

  // Run on the calling thread until stop(); or start() a thread that does.
  void run();
  void start();
  void stop();  // from any thread; returns at once; join happens in the destructor or join()
  void join();
  // Run fn on the loop's thread soon (from any thread).
  void post(std::function<void()> fn);

  const std::string& name() const { return name_; }

 private:
  struct Entry {
    std::shared_ptr<Handler> handler;
  };
  std::string name_;
  UniqueFd epfd_;
  EventFd wake_;
  std::mutex mu_;
  std::unordered_map<int, Entry> handlers_;
  std::vector<std::function<void()>> posted_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace vireo
