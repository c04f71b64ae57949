#include "devices/serial_backend.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "common/error.h"

namespace vireo {

SerialSpec parse_serial_spec(const std::string& text) {
  SerialSpec s;
  auto value_of = [&](const char* key) -> std::optional<std::string> {
    const std::string k = std::string(key) + "=";
    if (text.rfind(k, 0) == 0) return text.substr(k.size());
    return std::nullopt;
  };
  if (text == "stdio") {
    s.kind = SerialSpec::Kind::Stdio;
  } else if (text == "none") {
    s.kind = SerialSpec::Kind::None;
  } else if (text == "pty") {
    s.kind = SerialSpec::Kind::Pty;
  } else if (auto v = value_of("file")) {
    if (v->empty()) fail("serial: file= needs a path");
    s.kind = SerialSpec::Kind::File;
    s.path = *v;
  } else if (auto u = value_of("unix")) {
    if (u->empty()) fail("serial: unix= needs a path");
    if (u->size() >= sizeof(sockaddr_un{}.sun_path)) fail("serial: unix socket path too long: {}", *u);
    s.kind = SerialSpec::Kind::Unix;
    s.path = *u;
  } else {
    fail("serial: unknown backend '{}' (stdio, none, file=PATH, pty, unix=PATH)", text);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Raw tty handling

namespace {
std::mutex g_tty_mu;
std::set<RawTty*> g_ttys;

void set_nonblock(int fd) {
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// Writes all of `bytes` to a blocking fd (stdout/file); drops them on errors other than EINTR.
void write_all(int fd, std::span<const uint8_t> bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    off += static_cast<size_t>(n);
  }
}
}  // namespace

RawTty::RawTty(int fd) : fd_(fd) {
  if (fd < 0 || !::isatty(fd) || ::tcgetattr(fd, &saved_) < 0) return;
  termios raw = saved_;
  cfmakeraw(&raw);
  raw.c_lflag |= ISIG;  // Ctrl-C / Ctrl-\ still reach the VMM, which stops cleanly
  raw.c_oflag |= OPOST | ONLCR;
  if (::tcsetattr(fd, TCSANOW, &raw) == 0) {
    active_ = true;
    std::lock_guard lock(g_tty_mu);
    g_ttys.insert(this);
  }
}

RawTty::~RawTty() {
  restore();
  std::lock_guard lock(g_tty_mu);
  g_ttys.erase(this);
}

void RawTty::restore() {
  if (active_) {
    ::tcsetattr(fd_, TCSANOW, &saved_);
    active_ = false;
  }
}

void restore_all_ttys() {
  std::lock_guard lock(g_tty_mu);
  for (RawTty* t : g_ttys) t->restore();
}

// ---------------------------------------------------------------------------------------------------------
// Input pump shared by fd-based backends: reads no more than the UART's free FIFO space, pauses (EPOLLIN off)
// when the FIFO is full and resumes when the guest drains it.

namespace {

class InputPump {
 public:
  // `on_eof` runs on the loop thread when the fd reports EOF/HUP (e.g. to drop a socket client).
  void start(EventLoop& loop, Serial16550& uart, int fd, std::function<void()> on_eof) {
    loop_ = &loop;
    uart_ = &uart;
    fd_ = fd;
    on_eof_ = std::move(on_eof);
    uart.set_rx_ready_callback([this] {
      EventLoop* l = loop_;
      if (l) l->post([this] { resume(); });
    });
    registered_ = true;
    loop.add(fd, EPOLLIN, [this](uint32_t ev) {
      try {
        on_event(ev);
      } catch (const std::exception&) {
        stop();  // the input side broke (e.g. epoll refused a change): the port keeps working output-only
      }
    });
  }
  void stop() {
    if (registered_ && loop_) loop_->remove(fd_);
    registered_ = false;
  }
  bool active() const { return registered_; }

 private:
  void on_event(uint32_t ev) {
    if (!registered_) return;
    const size_t space = uart_->rx_space();
    if (space == 0) {
      paused_ = true;
      loop_->modify(fd_, 0);
      return;
    }
    uint8_t buf[Serial16550::kFifoSize];
    const ssize_t n = ::read(fd_, buf, std::min(space, sizeof buf));
    if (n > 0) {
      uart_->receive(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n == 0 || (ev & (EPOLLHUP | EPOLLERR)) || n < 0) {
      stop();
      if (on_eof_) on_eof_();
    }
  }
  void resume() {
    if (registered_ && paused_) {
      paused_ = false;
      loop_->modify(fd_, EPOLLIN);
    }
  }

  EventLoop* loop_ = nullptr;
  Serial16550* uart_ = nullptr;
  int fd_ = -1;
  bool registered_ = false;
  bool paused_ = false;
  std::function<void()> on_eof_;
};

// ---------------------------------------------------------------------------------------------------------

class NoneBackend : public SerialBackend {
 public:
  void write(std::span<const uint8_t>) override {}
  void attach(EventLoop&, Serial16550&) override {}
  std::string describe() const override { return "none"; }
};

class StdioBackend : public SerialBackend {
 public:
  explicit StdioBackend(bool input) : input_(input), tty_(input ? STDIN_FILENO : -1) {}
  ~StdioBackend() override { pump_.stop(); }
  void write(std::span<const uint8_t> bytes) override { write_all(STDOUT_FILENO, bytes); }
  void attach(EventLoop& loop, Serial16550& uart) override {
    if (!input_) return;
    struct stat st{};
    if (::fstat(STDIN_FILENO, &st) < 0) return;
    // epoll refuses regular files and /dev/null; those give no interactive input anyway.
    if (!(S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) return;
    set_nonblock(STDIN_FILENO);
    try {
      pump_.start(loop, uart, STDIN_FILENO, nullptr);
    } catch (const Error&) {
      // e.g. /dev/null (EPERM from epoll): no input
    }
  }
  std::string describe() const override { return input_ ? "stdio" : "stdio (output only)"; }

 private:
  bool input_;
  RawTty tty_;
  InputPump pump_;
};

class FileBackend : public SerialBackend {
 public:
  explicit FileBackend(const std::string& path) : path_(path) {
    fd_.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd_) throw_errno("serial: open " + path);
  }
  void write(std::span<const uint8_t> bytes) override { write_all(fd_.get(), bytes); }
  void attach(EventLoop&, Serial16550&) override {}
  std::string describe() const override { return "file=" + path_; }

 private:
  std::string path_;
  UniqueFd fd_;
};

class PtyBackend : public SerialBackend {
 public:
  PtyBackend() {
    master_.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master_) throw_errno("serial: posix_openpt");
    if (::grantpt(master_.get()) < 0 || ::unlockpt(master_.get()) < 0) throw_errno("serial: unlockpt");
    char name[128];
    if (::ptsname_r(master_.get(), name, sizeof name) != 0) throw_errno("serial: ptsname");
    path_ = name;
    // Raw mode on the slave side, and keep one slave fd open so the master never sees EIO/HUP while no
    // client has the pty open (output then fills the buffer and is dropped, non-blocking).
    slave_.reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave_) throw_errno(std::string("serial: open ") + name);
    termios t{};
    if (::tcgetattr(slave_.get(), &t) == 0) {
      cfmakeraw(&t);
      ::tcsetattr(slave_.get(), TCSANOW, &t);
    }
    set_nonblock(master_.get());
  }
  ~PtyBackend() override { pump_.stop(); }
  void write(std::span<const uint8_t> bytes) override {
    // Non-blocking: drop what the pty cannot take (nobody reading).
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = ::write(master_.get(), bytes.data() + off, bytes.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      off += static_cast<size_t>(n);
    }
  }
  void attach(EventLoop& loop, Serial16550& uart) override { pump_.start(loop, uart, master_.get(), nullptr); }
  std::string describe() const override { return "pty=" + path_; }
  const std::string& path() const { return path_; }

 private:
  UniqueFd master_, slave_;
  std::string path_;
  InputPump pump_;
};

class UnixBackend : public SerialBackend {
 public:
  explicit UnixBackend(const std::string& path) : path_(path) {
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listen_) throw_errno("serial: socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
      throw_errno("serial: bind " + path);
    bound_ = true;
    if (::listen(listen_.get(), 4) < 0) throw_errno("serial: listen " + path);
  }
  ~UnixBackend() override {
    if (loop_) loop_->remove(listen_.get());
    pump_.stop();
    if (bound_) ::unlink(path_.c_str());
  }
  void write(std::span<const uint8_t> bytes) override {
    std::lock_guard lock(mu_);
    if (!client_) return;
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = ::send(client_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;  // EAGAIN: client not reading, drop; EPIPE: the loop thread will notice the hang-up
      }
      off += static_cast<size_t>(n);
    }
  }
  void attach(EventLoop& loop, Serial16550& uart) override {
    loop_ = &loop;
    uart_ = &uart;
    loop.add(listen_.get(), EPOLLIN, [this](uint32_t) { accept_one(); });
  }
  std::string describe() const override { return "unix=" + path_; }

 private:
  void accept_one() {
    UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c) return;
    std::lock_guard lock(mu_);
    if (client_) return;  // one client at a time: refuse (close) the newcomer
    client_ = std::move(c);
    pump_.start(*loop_, *uart_, client_.get(), [this] { drop_client(); });
  }
  void drop_client() {
    std::lock_guard lock(mu_);
    client_.reset();
  }

  std::string path_;
  UniqueFd listen_;
  bool bound_ = false;
  std::mutex mu_;
  UniqueFd client_;
  EventLoop* loop_ = nullptr;
  Serial16550* uart_ = nullptr;
  InputPump pump_;
};

}  // namespace

std::unique_ptr<SerialBackend> SerialBackend::open(const SerialSpec& spec) {
  switch (spec.kind) {
    case SerialSpec::Kind::Stdio: return std::make_unique<StdioBackend>(spec.input);
    case SerialSpec::Kind::None: return std::make_unique<NoneBackend>();
    case SerialSpec::Kind::File: return std::make_unique<FileBackend>(spec.path);
    case SerialSpec::Kind::Pty: return std::make_unique<PtyBackend>();
    case SerialSpec::Kind::Unix: return std::make_unique<UnixBackend>(spec.path);
  }
  fail("serial: bad backend");
}

}  // namespace vireo
