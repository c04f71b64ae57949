#include "common/event_loop.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>

namespace vireo {

TEST(EventLoop, DispatchesReadableFdAndPostedWork) {
  EventLoop loop("test");
  EventFd ev;
  std::promise<uint64_t> got;
  loop.add(ev.fd(), EPOLLIN, [&](uint32_t) { got.set_value(ev.consume()); });
  loop.start();
  ev.signal(3);
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get(), 3u);

  std::promise<std::thread::id> where;
  loop.post([&] { where.set_value(std::this_thread::get_id()); });
  auto w = where.get_future();
  ASSERT_EQ(w.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_NE(w.get(), std::this_thread::get_id());
  loop.stop();
  loop.join();
}

TEST(EventLoop, HandlerMayRemoveItself) {
  EventLoop loop("test");
  EventFd ev;
  std::atomic<int> calls{0};
  loop.add(ev.fd(), EPOLLIN, [&](uint32_t) {
    ++calls;
    loop.remove(ev.fd());
    loop.stop();
  });
  ev.signal();
  loop.run();  // returns after the handler stops it
  EXPECT_EQ(calls.load(), 1);
}

TEST(EventFd, ConsumeResets) {
  EventFd ev;
  EXPECT_EQ(ev.consume(), 0u);
  ev.signal(2);
  ev.signal(5);
  EXPECT_EQ(ev.consume(), 7u);
  EXPECT_EQ(ev.consume(), 0u);
}

}  // namespace vireo
