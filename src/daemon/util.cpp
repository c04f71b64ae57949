#include "daemon/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace vireo::daemon {

Paths Paths::for_root(const std::string& root) {
  Paths p;
  if (root.empty()) {
    p.config = "/etc/vireo";
    p.state = "/var/lib/vireo";
    p.run = "/run/vireo";
  } else {
    std::string r = root;
    while (r.size() > 1 && r.back() == '/') r.pop_back();
    p.config = r + "/etc/vireo";
    p.state = r + "/var/lib/vireo";
    p.run = r + "/run/vireo";
  }
  return p;
}

void Paths::create() const {
  mkdirs(config, 0755);
  mkdirs(domains_dir(), 0700);
  mkdirs(autostart_dir(), 0700);
  mkdirs(state, 0700);
  mkdirs(run, 0755);
  mkdirs(run_domains_dir(), 0700);
}

void mkdirs(const std::string& path, mode_t mode) {
  if (path.empty()) return;
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    if (!cur.empty() && ::mkdir(cur.c_str(), j == path.size() ? mode : 0755) < 0 && errno != EEXIST)
      throw_errno("mkdir " + cur);
    i = j + 1;
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) < 0) throw_errno("stat " + path);
  if (!S_ISDIR(st.st_mode)) fail("{}: not a directory", path);
}

void atomic_write(const std::string& path, const std::string& data, mode_t mode) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string tmp = path + ".tmpXXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) throw_errno("create temporary file for " + path);
  auto cleanup_fail = [&](const std::string& what) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw_errno(what + " " + path, e);
  };
  if (::fchmod(fd.get(), mode) < 0) cleanup_fail("chmod");
  if (!write_all(fd.get(), data.data(), data.size())) cleanup_fail("write");
  if (::fsync(fd.get()) < 0) cleanup_fail("fsync");
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) < 0) cleanup_fail("rename to");
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd) ::fsync(dfd.get());
}

std::optional<std::string> try_read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  auto s = try_read_file(path);
  if (!s) throw_errno("read " + path);
  return *s;
}

void remove_if_exists(const std::string& path) {
  if (::unlink(path.c_str()) < 0 && errno != ENOENT) throw_errno("remove " + path);
}

std::vector<std::string> list_dir(const std::string& path, const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || n.size() <= suffix.size()) continue;
    if (n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    if (n.find(".tmp") != std::string::npos) continue;
    out.push_back(n.substr(0, n.size() - suffix.size()));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
// Fields of /proc/PID/stat after the "(comm)" part; index 0 is field 3 (state).
std::vector<std::string> stat_fields(pid_t pid) {
  auto s = try_read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!s) return {};
  auto close = s->rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream is(s->substr(close + 1));
  std::vector<std::string> f;
  std::string x;
  while (is >> x) f.push_back(x);
  return f;
}
}  // namespace

unsigned long long process_start_time(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 20 || f[0] == "Z" || f[0] == "X") return 0;
  return std::stoull(f[19]);  // field 22
}

uint64_t process_cpu_time_ns(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 13) return 0;
  const uint64_t ticks = std::stoull(f[11]) + std::stoull(f[12]);  // utime, stime (fields 14, 15)
  const long hz = ::sysconf(_SC_CLK_TCK);
  return ticks * (1000000000ull / static_cast<uint64_t>(hz > 0 ? hz : 100));
}

std::string process_cmdline(pid_t pid) {
  auto s = try_read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!s) return "";
  std::replace(s->begin(), s->end(), '\0', ' ');
  return *s;
}

UniqueFd pidfd_open(pid_t pid) {
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

static sockaddr_un make_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) fail("socket path too long ({} bytes, max {}): {}", path.size(), sizeof a.sun_path - 1, path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

UniqueFd unix_listen(const std::string& path, mode_t mode) {
  sockaddr_un a = make_addr(path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) throw_errno("bind " + path);
  if (::chmod(path.c_str(), mode) < 0) throw_errno("chmod " + path);
  if (::listen(fd.get(), 64) < 0) throw_errno("listen " + path);
  return fd;
}

UniqueFd unix_connect(const std::string& path) {
  sockaddr_un a{};
  if (path.size() >= sizeof a.sun_path) {
    errno = ENAMETOOLONG;
    return UniqueFd();
  }
  a = make_addr(path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return UniqueFd();
  return fd;
}

bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace vireo::daemon
