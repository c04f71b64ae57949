#include "virtio/console.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>

#include <cerrno>
#include <cstring>

namespace vireo::virtio {

namespace {
constexpr uint16_t kRxQueue = 0, kTxQueue = 1;
constexpr size_t kChunk = 64 * 1024;

void write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {  // a slow reader: wait for room rather than lose output
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, 1000) <= 0) return;
        continue;
      }
      return;  // reader gone: drop output
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}
}  // namespace

ConsoleDevice::ConsoleDevice(GuestMemory& mem, std::string id, const ConsoleBackendSpec& spec)
    : VirtioDevice(mem, std::move(id), kTypeConsole, 2, 256), spec_(spec) {
  config_.assign(12, 0);
  uint32_t max_ports = 1;
  std::memcpy(config_.data() + 4, &max_ports, 4);
  switch (spec.kind) {
    case ConsoleBackendSpec::Kind::Stdio:
      in_fd_ = STDIN_FILENO;
      out_fd_ = STDOUT_FILENO;
      details_ = "stdio";
      break;
    case ConsoleBackendSpec::Kind::Fds:
      in_fd_ = spec.in_fd;
      out_fd_ = spec.out_fd;
      details_ = "fds";
      break;
    case ConsoleBackendSpec::Kind::Pty: {
      UniqueFd m(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
      if (!m || ::grantpt(m.get()) < 0 || ::unlockpt(m.get()) < 0) throw_errno("virtio-console: open pty");
      char name[128];
      if (::ptsname_r(m.get(), name, sizeof name) != 0) throw_errno("virtio-console: ptsname");
      termios t{};
      if (::tcgetattr(m.get(), &t) == 0) {
        cfmakeraw(&t);
        ::tcsetattr(m.get(), TCSANOW, &t);
      }
      pty_path_ = name;
      details_ = "pty=" + pty_path_;
      in_fd_ = out_fd_ = m.get();
      owned_in_ = std::move(m);
      fmt::print(stderr, "vireo-vmm: virtio-console {} on {}\n", this->id(), pty_path_);
      break;
    }
    case ConsoleBackendSpec::Kind::Unix: {
      UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      if (!s) throw_errno("virtio-console: socket");
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (spec.path.size() >= sizeof addr.sun_path) fail("virtio-console: socket path too long: {}", spec.path);
      std::memcpy(addr.sun_path, spec.path.c_str(), spec.path.size() + 1);
      ::unlink(spec.path.c_str());
      if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 || ::listen(s.get(), 1) < 0)
        throw_errno("virtio-console: listen on " + spec.path);
      listen_ = std::move(s);
      details_ = "unix=" + spec.path;
      loop_.add(listen_.get(), EPOLLIN, [this](uint32_t) { on_listen(); });
      break;
    }
  }
}

ConsoleDevice::~ConsoleDevice() {
  shutdown();
  if (listen_) ::unlink(spec_.path.c_str());
}

void ConsoleDevice::on_listen() {
  UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!c) return;
  std::lock_guard lock(mu_);
  if (in_fd_ >= 0) return;  // one client at a time: the new one is closed
  owned_in_ = std::move(c);
  in_fd_ = out_fd_ = owned_in_.get();
  input_eof_ = false;
  watching_ = false;
  try {
    pump_input();
  } catch (const std::exception& e) {
    fail_device(e.what());
  }
}

void ConsoleDevice::drop_client() {
  if (in_fd_ >= 0 && watching_) loop_.remove(in_fd_);
  watching_ = false;
  if (spec_.kind == ConsoleBackendSpec::Kind::Unix) {
    owned_in_.reset();
    in_fd_ = out_fd_ = -1;
  } else {
    input_eof_ = true;
  }
}

void ConsoleDevice::watch_input(bool on) {
  if (in_fd_ < 0 || input_eof_ || on == watching_) return;
  if (on) {
    try {
      loop_.add(in_fd_, EPOLLIN, [this](uint32_t) {
        std::lock_guard lock(mu_);
        try {
          pump_input();
        } catch (const std::exception& e) {
          fail_device(e.what());
        }
      });
    } catch (const Error&) {
      input_eof_ = true;  // e.g. a regular file on stdin cannot be polled
      return;
    }
  } else {
    loop_.remove(in_fd_);
  }
  watching_ = on;
}

void ConsoleDevice::activate() { pump_input(); }

void ConsoleDevice::pump_input() {
  Virtqueue* rx = queue(kRxQueue);
  if (!rx || in_fd_ < 0 || input_eof_) {
    watch_input(false);
    return;
  }
  // Read only as much as the guest has room for; the rest waits in the fd.
  for (;;) {
    pollfd p{in_fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) break;
    auto chain = rx->pop();
    if (!chain) {
      rx->enable_notifications();
      watch_input(false);  // re-armed when the guest adds receive buffers
      return;
    }
    std::vector<uint8_t> buf(std::min<uint64_t>(chain->writable_bytes, kChunk));
    ssize_t n = buf.empty() ? 0 : ::read(in_fd_, buf.data(), buf.size());
    if (n <= 0) {
      // Return the buffer unused; EOF/HUP ends input (a unix client may reconnect).
      complete(kRxQueue, *chain, 0);
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        drop_client();
        return;
      }
      break;
    }
    copy_to_segments(mem_, chain->writable, 0, std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    complete(kRxQueue, *chain, static_cast<uint32_t>(n));
  }
  watch_input(true);
}

void ConsoleDevice::process_queue(uint16_t q) {
  if (q == kRxQueue) {
    pump_input();
    return;
  }
  Virtqueue* tx = queue(kTxQueue);
  if (!tx) return;
  std::vector<uint8_t> buf;
  do {
    tx->disable_notifications();
    while (auto chain = tx->pop()) {
      buf.resize(std::min<uint64_t>(chain->readable_bytes, 1 << 20));
      size_t n = copy_from_segments(mem_, chain->readable, 0, buf);
      if (out_fd_ >= 0) write_all(out_fd_, buf.data(), n);
      complete(kTxQueue, *chain, 0);
    }
  } while (tx->enable_notifications());
}

}  // namespace vireo::virtio
