// The control socket server: framing, several clients, replies in order, errors (no KVM needed).
#include "vmm/control.h"

#include "common/error.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace vireo::vmm {
namespace {

using nlohmann::json;

class EchoHandler : public CommandHandler {
 public:
  std::atomic<int> afters{0};
  CommandResult handle(const std::string& line) override {
    json req = json::parse(line, nullptr, false);
    if (req.is_discarded()) return {error_reply(nullptr, "InvalidArgument", "bad json"), nullptr};
    json id = req.value("id", json());
    const std::string cmd = req.value("command", "");
    if (cmd == "boom") throw std::runtime_error("handler failed");
    if (cmd == "later") return {json{{"id", id}, {"return", json::object()}}, [this] { ++afters; }};
    if (cmd != "echo") return {error_reply(id, "CommandNotFound", "unknown command '" + cmd + "'"), nullptr};
    return {json{{"id", id}, {"return", req.value("arguments", json::object())}}, nullptr};
  }
};

struct Client {
  int fd = -1;
  std::string buf;
  explicit Client(const std::string& path) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Client() { close(fd); }
  void send(const std::string& s) { ASSERT_EQ(write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size())); }
  json recv_line() {
    for (;;) {
      auto nl = buf.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return json::parse(line);
      }
      char tmp[4096];
      const ssize_t n = read(fd, tmp, sizeof tmp);
      if (n <= 0) return json();
      buf.append(tmp, static_cast<size_t>(n));
    }
  }
};

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/vireo-ctl-XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
    path_ = dir_ + "/api.sock";
    server_ = std::make_unique<ControlServer>(loop_, path_, handler_);
    loop_.start();
  }
  void TearDown() override {
    loop_.stop();
    loop_.join();
    server_.reset();
    rmdir(dir_.c_str());
  }
  EventLoop loop_{"ctl-test"};
  EchoHandler handler_;
  std::string dir_, path_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlTest, OneLinePerRequestInOrderAcrossPartialWrites) {
  Client c(path_);
  c.send("{\"id\": 1, \"command\": \"echo\", \"arguments\": {\"a\": 1}}\n{\"id\": \"two\", \"comm");
  c.send("and\": \"echo\"}\n");
  json r1 = c.recv_line(), r2 = c.recv_line();
  EXPECT_EQ(r1["id"], 1);
  EXPECT_EQ(r1["return"]["a"], 1);
  EXPECT_EQ(r2["id"], "two");
  EXPECT_TRUE(r2["return"].is_object());
}

TEST_F(ControlTest, ErrorsAndHandlerExceptions) {
  Client c(path_);
  c.send("{\"id\": 3, \"command\": \"nope\"}\n");
  json r = c.recv_line();
  EXPECT_EQ(r["id"], 3);
  EXPECT_EQ(r["error"]["class"], "CommandNotFound");
  c.send("{\"command\": \"boom\"}\n");
  r = c.recv_line();
  EXPECT_EQ(r["error"]["class"], "Internal");
  EXPECT_EQ(r["error"]["desc"], "handler failed");
  c.send("\n   \n{\"id\": 4, \"command\": \"echo\"}\r\n");  // blank lines ignored, CRLF accepted
  EXPECT_EQ(c.recv_line()["id"], 4);
}

TEST_F(ControlTest, SeveralClientsAndAfterActions) {
  Client a(path_), b(path_);
  b.send("{\"id\": \"b\", \"command\": \"later\"}\n");
  a.send("{\"id\": \"a\", \"command\": \"echo\"}\n");
  EXPECT_EQ(a.recv_line()["id"], "a");
  EXPECT_EQ(b.recv_line()["id"], "b");
  // The after-action runs right after the reply was sent (on the loop thread).
  for (int i = 0; i < 1000 && handler_.afters.load() == 0; ++i) usleep(2000);
  EXPECT_EQ(handler_.afters.load(), 1);
}

TEST_F(ControlTest, RefusesToReplaceANonSocket) {
  const std::string f = dir_ + "/plain";
  FILE* fp = fopen(f.c_str(), "w");
  ASSERT_NE(fp, nullptr);
  fclose(fp);
  EXPECT_THROW({ ControlServer s(loop_, f, handler_); }, Error);
  unlink(f.c_str());
}

TEST(ErrorReply, Shape) {
  json r = error_reply(7, "InvalidState", "cannot pause: VM is paused");
  EXPECT_EQ(r.dump(), R"({"error":{"class":"InvalidState","desc":"cannot pause: VM is paused"},"id":7})");
  EXPECT_FALSE(error_reply(nullptr, "X", "y").contains("id"));
}

}  // namespace
}  // namespace vireo::vmm
