// The per-domain monitor: `vireod --vmm-monitor DIR NAME VMM [args...]`.
//
// vireod starts one monitor per running domain, in its own session, so the VMM outlives vireod (kill -9,
// restart). The monitor
//   - gives vireo-vmm a pty as its serial console (--serial stdio on the pty's slave side, raw mode),
//   - keeps the console: appends the output to DIR/NAME.log and serves DIR/NAME.con, a unix socket any
//     number of `vireo console` streams (through vireod) can attach to,
//   - writes the VMM's pid to DIR/NAME.vmmpid and, when the VMM ends, its wait status to DIR/NAME.exit
//     ("exit N" or "signal N"), so a vireod that was not the parent (after a restart) still learns how
//     the domain ended,
//   - for <interface type='bridge'>: reads DIR/NAME.bridges (written by vireod: "NET_INDEX BRIDGE TAP MAC"
//     per line), creates each persistent tap, enslaves it to its bridge, lists the taps it created in
//     DIR/NAME.taps, passes the real names to vireo-vmm (`--net tap=vnet%d` -> `tap=vnet0`), and deletes
//     those taps when the VMM has ended (vireod deletes any that are left, e.g. after a SIGKILL).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "daemon/domain_devices.h"
#include "daemon/monitor.h"
#include "daemon/netdev.h"
#include "daemon/util.h"

namespace vireo::daemon {

namespace {
constexpr off_t kMaxLog = 1 << 20;  // the console log restarts when it reaches 1 MiB

// Creates the taps listed in BASE.bridges and points the matching `--net tap=...` options at them.
void setup_bridge_taps(const std::string& base, std::vector<std::string>& args) {
  const auto text = try_read_file(base + ".bridges");
  if (!text) return;
  std::vector<size_t> net_values;  // positions of the --net option values
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--net") net_values.push_back(i + 1);
  std::string created;
  std::vector<PortSpec> plan;
  try {
    plan = parse_port_plan(*text);
  } catch (const Error& e) {
    fail("{}.bridges: {}", base, e.what());
  }
  for (const PortSpec& p : plan) {
    if (p.net_index >= net_values.size()) fail("{}.bridges: no --net option {}", base, p.net_index);
    std::string& value = args[net_values[p.net_index]];
    const std::string want = "tap=" + p.tap;
    if (value.compare(0, want.size(), want) != 0 || (value.size() > want.size() && value[want.size()] != ','))
      fail("{}.bridges: --net {} does not use tap {}", base, value, p.tap);
    BridgeTap t = attach_port(p);
    if (t.created) {
      created += t.name + (t.ovs ? " ovs\n" : "\n");
      atomic_write(base + ".taps", created);
    }
    value = "tap=" + t.name + value.substr(want.size());
  }
}

}  // namespace

int monitor_main(int argc, char** argv) {
  // argv: [0]=vireod [1]=--vmm-monitor [2]=DIR [3]=NAME [4]=VMM [5..]=VMM args
  if (argc < 5) {
    std::fprintf(stderr, "vireod --vmm-monitor: usage: DIR NAME VMM [ARGS...]\n");
    return 2;
  }
  const std::string dir = argv[2], name = argv[3], vmm = argv[4];
  const std::string base = dir + "/" + name;
  try {
    // Signals: the daemon stops the VMM by signalling it directly; the monitor ignores termination
    // requests aimed at it (a SIGKILL to the whole group still ends both).
    struct sigaction ign{};
    ign.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &ign, nullptr);
    sigaction(SIGPIPE, &ign, nullptr);
    sigaction(SIGTERM, &ign, nullptr);
    sigaction(SIGINT, &ign, nullptr);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, nullptr);
    UniqueFd sfd(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd) throw_errno("signalfd");

    UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master || ::grantpt(master.get()) < 0 || ::unlockpt(master.get()) < 0) throw_errno("allocate pty");
    const char* sname = ::ptsname(master.get());
    if (!sname) throw_errno("ptsname");
    UniqueFd slave(::open(sname, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) throw_errno(std::string("open ") + sname);
    termios tio{};
    if (::tcgetattr(slave.get(), &tio) == 0) {
      ::cfmakeraw(&tio);
      ::tcsetattr(slave.get(), TCSANOW, &tio);
    }
    UniqueFd log(::open((base + ".log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) throw_errno("open " + base + ".log");
    UniqueFd err(::open((base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!err) throw_errno("open " + base + ".err");
    UniqueFd listener = unix_listen(base + ".con", 0600);

    std::vector<std::string> vmm_args(argv + 5, argv + argc);
    setup_bridge_taps(base, vmm_args);
    std::vector<char*> args;
    args.push_back(const_cast<char*>(vmm.c_str()));
    for (auto& a : vmm_args) args.push_back(a.data());
    args.push_back(nullptr);

    const pid_t child = ::fork();
    if (child < 0) throw_errno("fork");
    if (child == 0) {
      ::dup2(slave.get(), 0);
      ::dup2(slave.get(), 1);
      ::dup2(err.get(), 2);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      struct sigaction dfl{};
      dfl.sa_handler = SIG_DFL;
      for (int s : {SIGHUP, SIGPIPE, SIGTERM, SIGINT, SIGCHLD}) sigaction(s, &dfl, nullptr);
      ::execv(vmm.c_str(), args.data());
      const int e = errno;
      std::string msg = "cannot execute " + vmm + ": " + std::strerror(e) + "\n";
      (void)!::write(2, msg.data(), msg.size());
      ::_exit(127);
    }
    slave.reset();
    atomic_write(base + ".vmmpid", std::to_string(child) + "\n");
    ::fcntl(master.get(), F_SETFL, O_NONBLOCK);

    std::vector<UniqueFd> clients;
    int status = 0;
    bool exited = false;
    bool master_open = true;
    while (!exited) {
      std::vector<pollfd> pfds;
      pfds.push_back({sfd.get(), POLLIN, 0});
      pfds.push_back({listener.get(), POLLIN, 0});
      pfds.push_back({master_open ? master.get() : -1, POLLIN, 0});
      for (auto& c : clients) pfds.push_back({c.get(), POLLIN, 0});
      if (::poll(pfds.data(), pfds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        throw_errno("poll");
      }
      if (pfds[0].revents) {
        signalfd_siginfo si;
        while (::read(sfd.get(), &si, sizeof si) == sizeof si) {
        }
        if (::waitpid(child, &status, WNOHANG) == child) exited = true;
      }
      if (pfds[1].revents & POLLIN) {
        // Non-blocking: a console client that stops reading is dropped instead of stalling the guest's
        // serial output (the pty would fill up and block the VMM).
        int c = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c >= 0) clients.emplace_back(c);
      }
      auto drain = [&]() {
        char buf[16384];
        for (;;) {
          ssize_t n = ::read(master.get(), buf, sizeof buf);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            if (n == 0 || errno == EIO) master_open = false;  // no slave left (the VMM is gone)
            break;
          }
          struct stat st{};
          if (::fstat(log.get(), &st) == 0 && st.st_size > kMaxLog) (void)!::ftruncate(log.get(), 0);
          (void)!::write(log.get(), buf, static_cast<size_t>(n));
          for (auto& c : clients)
            if (c && !write_all(c.get(), buf, static_cast<size_t>(n))) c.reset();
        }
      };
      if (pfds[2].revents & (POLLIN | POLLHUP | POLLERR)) drain();
      for (size_t i = 3; i < pfds.size(); ++i) {
        if (!pfds[i].revents) continue;
        UniqueFd& c = clients[i - 3];
        char buf[4096];
        ssize_t n = ::read(c.get(), buf, sizeof buf);
        if (n <= 0) {
          c.reset();
          continue;
        }
        if (master_open) (void)!write_all(master.get(), buf, static_cast<size_t>(n));
      }
      std::erase_if(clients, [](const UniqueFd& c) { return !c.valid(); });
      if (exited && master_open) drain();
    }
    std::string how = WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                        : "signal " + std::to_string(WTERMSIG(status));
    for (const std::string& p : delete_taps_in_file(base + ".taps"))
      std::fprintf(stderr, "vireod monitor %s: %s\n", name.c_str(), p.c_str());
    atomic_write(base + ".exit", how + "\n");
    ::unlink((base + ".con").c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "vireod monitor %s: %s\n", name.c_str(), e.what());
    // Tell the daemon the VMM never ran.
    try {
      delete_taps_in_file(base + ".taps");
      atomic_write(base + ".err", std::string(e.what()) + "\n");
      atomic_write(base + ".exit", "exit 127\n");
    } catch (...) {
    }
    return 1;
  }
}

}  // namespace vireo::daemon
