// Serial backends: spec parsing, file output, unix socket and pty input through an EventLoop.
#include "devices/serial_backend.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "common/error.h"

namespace vireo {
namespace {

std::string tmpdir() {
  char t[] = "/tmp/vireo-serial-XXXXXX";
  EXPECT_NE(mkdtemp(t), nullptr);
  return t;
}

TEST(SerialSpec, Parses) {
  EXPECT_EQ(parse_serial_spec("stdio").kind, SerialSpec::Kind::Stdio);
  EXPECT_EQ(parse_serial_spec("none").kind, SerialSpec::Kind::None);
  EXPECT_EQ(parse_serial_spec("pty").kind, SerialSpec::Kind::Pty);
  auto f = parse_serial_spec("file=/x/y.log");
  EXPECT_EQ(f.kind, SerialSpec::Kind::File);
  EXPECT_EQ(f.path, "/x/y.log");
  auto u = parse_serial_spec("unix=/run/s.sock");
  EXPECT_EQ(u.kind, SerialSpec::Kind::Unix);
  EXPECT_EQ(u.path, "/run/s.sock");
  EXPECT_THROW(parse_serial_spec("tcp:1234"), Error);
  EXPECT_THROW(parse_serial_spec("file="), Error);
  EXPECT_THROW(parse_serial_spec("unix=" + std::string(200, 'a')), Error);
}

TEST(SerialBackend, FileReceivesOutput) {
  const std::string dir = tmpdir();
  const std::string path = dir + "/out.log";
  {
    auto b = SerialBackend::open(parse_serial_spec("file=" + path));
    const std::string s = "boot ok\n";
    b->write(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    EXPECT_EQ(b->describe(), "file=" + path);
  }
  std::ifstream f(path);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "boot ok\n");
  EXPECT_THROW(SerialBackend::open(parse_serial_spec("file=" + dir + "/no/such/dir/x")), Error);
}

template <typename Pred>
bool wait_for(Pred p) {
  for (int i = 0; i < 400; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

TEST(SerialBackend, UnixSocketCarriesBothWays) {
  const std::string dir = tmpdir();
  const std::string path = dir + "/serial.sock";
  std::string out;
  Serial16550 uart("serial0", nullptr, nullptr);
  auto b = SerialBackend::open(parse_serial_spec("unix=" + path));
  EventLoop loop("test");
  b->attach(loop, uart);
  loop.start();

  int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  ASSERT_EQ(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  // Input: more than the FIFO holds; the guest drains it and the rest follows.
  const std::string msg = "0123456789abcdefghijklmnopqrstuvwxyz";
  ASSERT_EQ(write(c, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
  std::string got;
  ASSERT_TRUE(wait_for([&] {
    while (uart.rx_space() < Serial16550::kFifoSize) {
      uint8_t v;
      uart.read(0, std::span<uint8_t>(&v, 1));
      got += static_cast<char>(v);
    }
    return got.size() >= msg.size();
  })) << "got '" << got << "'";
  EXPECT_EQ(got, msg);
  // Output: once the client is accepted, writes reach it.
  const std::string hello = "hello";
  ASSERT_TRUE(wait_for([&] {
    b->write(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
    char buf[64];
    const ssize_t n = recv(c, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) out.append(buf, static_cast<size_t>(n));
    return out.find("hello") != std::string::npos;
  }));
  close(c);
  loop.stop();
  loop.join();
  b.reset();
  EXPECT_NE(access(path.c_str(), F_OK), 0);  // socket file removed
}

TEST(SerialBackend, PtyPrintsPathAndFeedsInput) {
  Serial16550 uart("serial0", nullptr, nullptr);
  auto b = SerialBackend::open(parse_serial_spec("pty"));
  const std::string d = b->describe();
  ASSERT_EQ(d.rfind("pty=/dev/pts/", 0), 0u) << d;
  EventLoop loop("test");
  b->attach(loop, uart);
  loop.start();
  int s = open(d.substr(4).c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(s, 0);
  ASSERT_EQ(write(s, "k", 1), 1);
  EXPECT_TRUE(wait_for([&] { return uart.rx_space() == Serial16550::kFifoSize - 1; }));
  const std::string o = "out";
  b->write(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(o.data()), o.size()));
  char buf[8] = {};
  ASSERT_TRUE(wait_for([&] { return read(s, buf, 3) == 3; }));
  EXPECT_EQ(std::string(buf, 3), "out");
  close(s);
  loop.stop();
  loop.join();
}

}  // namespace
}  // namespace vireo
