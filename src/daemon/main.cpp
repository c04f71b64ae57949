// vireod: the Vireo management daemon (see daemon.h, docs/management.md).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/monitor.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--vmm-monitor") == 0) return vireo::daemon::monitor_main(argc, argv);

  vireo::daemon::Options o;
  std::string mode = "0660";
  int start_timeout = 30, stop_timeout = 10;
  bool no_autostart = false, listen = false, define_defaults = false;
  std::string config;
  CLI::App app{"vireod: the Vireo management daemon"};
  app.add_option("--config", config, "settings file (default: <root>/etc/vireo/vireod.conf when it exists)");
  app.add_flag("--listen", listen, "also serve remote clients over TLS (listen_tls = 1; port 16514, x509 both ways)");
  app.add_option("--root", o.root, "relocate /etc/vireo, /var/lib/vireo and /run/vireo under DIR (default: $VIREO_ROOT)");
  app.add_option("--vmm", o.vmm, "vireo-vmm binary (default: $VIREO_VMM, else vireo-vmm next to vireod)");
  app.add_option("--group", o.group, "also allow members of this group to connect");
  app.add_option("--socket-mode", mode, "permissions of the API socket (octal, default 0660)");
  app.add_option("--start-timeout", start_timeout, "seconds to wait for a VMM's control socket (default 30)");
  app.add_option("--stop-timeout", stop_timeout, "seconds between SIGTERM and SIGKILL on destroy (default 10)");
  app.add_flag("--no-autostart", no_autostart, "do not start autostart domains, networks and pools");
  app.add_option("--dnsmasq", o.dnsmasq, "dnsmasq binary for virtual networks (default: $VIREO_DNSMASQ, else dnsmasq)");
  app.add_flag("--define-defaults", define_defaults,
               "define the network 'default' and the pool 'default' if missing, then exit (scripts/setup.sh)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (o.root.empty()) {
      if (const char* r = std::getenv("VIREO_ROOT")) o.root = r;
    }
    // The settings file first; flags given on the command line win over it.
    const auto fc = vireo::daemon::load_config(config.empty() ? vireo::daemon::default_config_path(o.root) : config,
                                               !config.empty());
    o.listen = fc.listen;
    if (listen) o.listen.tls = true;
    vireo::daemon::fill_default_pki(o.listen, o.root);
    if (fc.group && !app.count("--group")) o.group = *fc.group;
    if (fc.vmm && !app.count("--vmm")) o.vmm = *fc.vmm;
    if (fc.rw_socket_mode && !app.count("--socket-mode")) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%o", *fc.rw_socket_mode);
      mode = buf;
    }
    if (fc.start_timeout && !app.count("--start-timeout")) start_timeout = *fc.start_timeout;
    if (fc.stop_timeout && !app.count("--stop-timeout")) stop_timeout = *fc.stop_timeout;
    if (fc.autostart && !app.count("--no-autostart")) no_autostart = !*fc.autostart;
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) vireo::throw_errno("readlink /proc/self/exe");
    self[n] = 0;
    o.self_exe = self;
    if (o.vmm.empty()) {
      if (const char* v = std::getenv("VIREO_VMM")) o.vmm = v;
    }
    if (o.vmm.empty()) {
      // Next to vireod (the build tree), else the installed layout: <prefix>/sbin/vireod, <prefix>/bin/vireo-vmm.
      std::string dir = o.self_exe.substr(0, o.self_exe.rfind('/'));
      o.vmm = dir + "/vireo-vmm";
      const std::string installed = dir + "/../bin/vireo-vmm";
      if (::access(o.vmm.c_str(), X_OK) != 0 && ::access(installed.c_str(), X_OK) == 0) {
        char buf[4096];
        o.vmm = ::realpath(installed.c_str(), buf) ? buf : installed;
      }
    }
    char* end = nullptr;
    unsigned long m = std::strtoul(mode.c_str(), &end, 8);
    if (mode.empty() || *end || m > 0777) vireo::fail("--socket-mode: invalid mode '{}'", mode);
    o.socket_mode = static_cast<mode_t>(m);
    if (start_timeout <= 0 || stop_timeout <= 0) vireo::fail("timeouts must be positive");
    o.start_timeout_ms = start_timeout * 1000;
    o.stop_timeout_ms = stop_timeout * 1000;
    o.autostart = !no_autostart;
    signal(SIGPIPE, SIG_IGN);
    // SIGCHLD stays default: vireod waits for the tools it runs (lvm2, ovs-vsctl, dnsmasq's parent) and
    // reaps its monitors when their pidfd fires (an ignored SIGCHLD would discard every exit status).
    if (const char* v = std::getenv("VIREO_DNSMASQ"); v && *v && o.dnsmasq == "dnsmasq") o.dnsmasq = v;
    vireo::daemon::Daemon d(o);
    if (define_defaults) {
      d.load();
      d.define_defaults();
      return 0;
    }
    int rc = d.run();
    std::fflush(nullptr);
    _exit(rc);  // connection/watch threads are detached; do not run static destructors under them
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vireod: error: %s\n", e.what());
    return 1;
  }
}
