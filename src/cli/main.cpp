// vireo: the command-line client for vireod, virsh's verbs, messages, tables and exit codes.
#include <poll.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/format.h"
#include "cli/ssh_helper.h"
#include "client/client.h"

namespace {

using vireo::client::ClientError;
using vireo::client::Connection;

// A failed command: every line is printed as "error: <line>".
struct CmdError {
  std::vector<std::string> lines;
};

[[noreturn]] void cmd_fail(std::vector<std::string> lines) { throw CmdError{std::move(lines)}; }

std::string read_xml_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) cmd_fail({"Failed to open file '" + path + "': " + std::strerror(errno)});
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Cli {
  std::string uri;
  bool quiet = false;
  std::unique_ptr<Connection> conn;

  Connection& c() {
    if (!conn) {
      try {
        conn = std::make_unique<Connection>(uri);
      } catch (const std::exception& e) {
        cmd_fail({"failed to connect to the hypervisor", e.what()});
      }
    }
    return *conn;
  }

  // Resolve a name/id/uuid to the domain's name (virsh's messages use the name).
  std::string name_of(const std::string& key) {
    try {
      return c().lookup(key).name;
    } catch (const ClientError& e) {
      if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
      cmd_fail({"failed to get domain '" + key + "'"});
    }
  }

  template <typename F>
  void act(const std::string& key, const char* verb, F&& f, const std::string& done) {
    const std::string name = name_of(key);
    try {
      f(c(), name);
    } catch (const ClientError& e) {
      cmd_fail({std::string("Failed to ") + verb + " domain '" + name + "'", e.what()});
    }
    if (!quiet) std::printf("Domain '%s' %s\n", name.c_str(), done.c_str());
  }

  void print_warnings(const vireo::client::DefineResult& r) {
    for (const auto& u : r.unsupported)
      std::fprintf(stderr, "warning: unsupported element '%s' is kept in the definition but not used by Vireo\n", u.c_str());
  }
};

int console(Cli& cli, const std::string& key) {
  const std::string name = cli.name_of(key);
  std::string first;
  vireo::UniqueFd fd;
  try {
    fd = cli.c().open_console(name, first);
  } catch (const ClientError& e) {
    cmd_fail({e.what()});
  }
  std::printf("Connected to domain '%s'\nEscape character is ^] (Ctrl + ])\n", name.c_str());
  std::fflush(stdout);
  termios saved{};
  const bool tty = ::isatty(0) && ::tcgetattr(0, &saved) == 0;
  if (tty) {
    termios raw = saved;
    ::cfmakeraw(&raw);
    ::tcsetattr(0, TCSAFLUSH, &raw);
  }
  if (!first.empty()) (void)!::write(1, first.data(), first.size());
  bool in_open = true;
  char buf[16384];
  for (;;) {
    pollfd p[2] = {{in_open ? 0 : -1, POLLIN, 0}, {fd.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n <= 0) break;
      if (::write(1, buf, static_cast<size_t>(n)) < 0) break;
    }
    if (p[0].revents) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) {
        in_open = false;  // keep showing output until ^] or the domain's console closes
        continue;
      }
      bool leave = false;
      ssize_t keep = n;
      for (ssize_t i = 0; i < n; ++i)
        if (buf[i] == 0x1d) {
          keep = i;
          leave = true;
          break;
        }
      if (keep > 0 && ::write(fd.get(), buf, static_cast<size_t>(keep)) < 0) break;
      if (leave) break;
    }
  }
  if (tty) ::tcsetattr(0, TCSAFLUSH, &saved);
  std::printf("\n");
  return 0;
}

int edit(Cli& cli, const std::string& key) {
  const std::string name = cli.name_of(key);
  std::string xml;
  try {
    xml = cli.c().dumpxml(name, true);
  } catch (const ClientError& e) {
    cmd_fail({e.what()});
  }
  char tmpl[] = "/tmp/vireo-edit-XXXXXX.xml";
  int fd = ::mkstemps(tmpl, 4);
  if (fd < 0) cmd_fail({std::string("cannot create a temporary file: ") + std::strerror(errno)});
  const std::string path = tmpl;
  struct Unlink {
    std::string p;
    ~Unlink() { ::unlink(p.c_str()); }
  } unlink_guard{path};
  if (::write(fd, xml.data(), xml.size()) != static_cast<ssize_t>(xml.size())) {
    ::close(fd);
    cmd_fail({"cannot write " + path});
  }
  ::close(fd);
  const char* ed = std::getenv("VISUAL");
  if (!ed || !*ed) ed = std::getenv("EDITOR");
  if (!ed || !*ed) ed = "vi";
  const std::string cmd = std::string(ed) + " '" + path + "'";  // path has no quotes (mkstemps)
  int st = std::system(cmd.c_str());
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    cmd_fail({std::string("editor '") + ed + "' failed (" + (WIFEXITED(st) ? "exit status " + std::to_string(WEXITSTATUS(st)) : "killed") + ")"});
  const std::string edited = read_xml_file(path);
  if (edited == xml) {
    std::printf("Domain '%s' XML configuration not changed.\n", name.c_str());
    return 0;
  }
  vireo::client::DefineResult r;
  try {
    r = cli.c().define(edited);
  } catch (const ClientError& e) {
    cmd_fail({e.what(), "Failed. The definition of domain '" + name + "' was not changed."});
  }
  cli.print_warnings(r);
  std::printf("Domain '%s' XML configuration edited.\n", r.name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "ssh-helper") == 0) return vireo::cli::ssh_helper_main(argc, argv);
  Cli cli;
  CLI::App app{"vireo: manage Vireo domains through vireod (virsh's verbs)"};
  app.add_option("-c,--connect", cli.uri, "daemon URI: unix:///path/to/vireod.sock (default: $VIREO_ROOT/run/vireo/vireod.sock)");
  app.add_flag("-q,--quiet", cli.quiet, "quiet mode");
  app.require_subcommand(1);

  std::string dom, file;
  bool all = false, inactive = false, name_only = false, uuid_only = false, st_run = false, st_paused = false,
       st_off = false, st_other = false, autostart_f = false, no_autostart_f = false, persistent_f = false,
       transient_f = false, validate = false, reason = false, disable = false, dump_inactive = false, force = false;

  auto* list = app.add_subcommand("list", "list domains");
  list->add_flag("--all", all, "list inactive & active domains");
  list->add_flag("--inactive", inactive, "list inactive domains");
  list->add_flag("--name", name_only, "list domain names only");
  list->add_flag("--uuid", uuid_only, "list uuid's only");
  list->add_flag("--state-running", st_run, "list domains in running state");
  list->add_flag("--state-paused", st_paused, "list domains in paused state");
  list->add_flag("--state-shutoff", st_off, "list domains in shutoff state");
  list->add_flag("--state-other", st_other, "list domains in other states");
  list->add_flag("--autostart", autostart_f, "list domains with autostart enabled");
  list->add_flag("--no-autostart", no_autostart_f, "list domains with autostart disabled");
  list->add_flag("--persistent", persistent_f, "list persistent domains");
  list->add_flag("--transient", transient_f, "list transient domains");

  auto* define = app.add_subcommand("define", "define (but don't start) a domain from an XML file");
  define->add_option("file", file, "file containing an XML domain description")->required();
  define->add_flag("--validate", validate, "fail on elements Vireo does not support");
  auto* create = app.add_subcommand("create", "create a domain from an XML file (transient, started)");
  create->add_option("file", file, "file containing an XML domain description")->required();
  create->add_flag("--validate", validate, "fail on elements Vireo does not support");

  std::map<std::string, CLI::App*> simple;
  for (auto [verb, help] : std::vector<std::pair<const char*, const char*>>{
           {"undefine", "undefine a domain"},       {"start", "start a (previously defined) inactive domain"},
           {"shutdown", "gracefully shutdown a domain"}, {"destroy", "destroy (stop) a domain"},
           {"reboot", "reboot a domain"},           {"suspend", "suspend a domain"},
           {"resume", "resume a domain"},           {"edit", "edit XML configuration for a domain"},
           {"dominfo", "domain information"}}) {
    auto* s = app.add_subcommand(verb, help);
    s->add_option("domain", dom, "domain name, id or uuid")->required();
    simple[verb] = s;
  }
  auto* dumpxml = app.add_subcommand("dumpxml", "domain information in XML");
  dumpxml->add_option("domain", dom, "domain name, id or uuid")->required();
  dumpxml->add_flag("--inactive", dump_inactive, "show inactive defined XML");
  auto* domstate = app.add_subcommand("domstate", "domain state");
  domstate->add_option("domain", dom, "domain name, id or uuid")->required();
  domstate->add_flag("--reason", reason, "also print reason for the state");
  auto* console_c = app.add_subcommand("console", "connect to the guest console");
  console_c->add_option("domain", dom, "domain name, id or uuid")->required();
  console_c->add_flag("--force", force, "accepted for virsh compatibility (several consoles may attach)");
  auto* autostart = app.add_subcommand("autostart", "autostart a domain");
  autostart->add_option("domain", dom, "domain name, id or uuid")->required();
  autostart->add_flag("--disable", disable, "disable autostarting");
  auto* version = app.add_subcommand("version", "show version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }

  int rc = 0;
  try {
    if (list->parsed()) {
      auto doms = cli.c().list();
      std::vector<vireo::client::DomainSummary> keep;
      const bool any_state = st_run || st_paused || st_off || st_other;
      for (auto& d : doms) {
        if (inactive && d.active) continue;
        if (!all && !inactive && !any_state && !d.active) continue;
        if (any_state) {
          bool ok = (st_run && d.state == "running") || (st_paused && d.state == "paused") ||
                    (st_off && d.state == "shut off") ||
                    (st_other && d.state != "running" && d.state != "paused" && d.state != "shut off");
          if (!ok) continue;
        }
        if (autostart_f && !d.autostart) continue;
        if (no_autostart_f && d.autostart) continue;
        if (persistent_f && !d.persistent) continue;
        if (transient_f && d.persistent) continue;
        keep.push_back(d);
      }
      if (name_only || uuid_only) {
        for (auto& d : keep) {
          if (uuid_only && name_only) std::printf("%s %s\n", d.uuid.c_str(), d.name.c_str());
          else std::printf("%s\n", uuid_only ? d.uuid.c_str() : d.name.c_str());
        }
      } else {
        std::string t = vireo::cli::format_list(keep);
        if (cli.quiet) t = t.substr(t.find('\n', t.find('\n') + 1) + 1);  // no header with -q, as virsh
        std::fputs(t.c_str(), stdout);
      }
    } else if (define->parsed() || create->parsed()) {
      const bool is_create = create->parsed();
      std::string xml = read_xml_file(file);
      vireo::client::DefineResult r;
      try {
        r = is_create ? cli.c().create(xml, validate) : cli.c().define(xml, validate);
      } catch (const ClientError& e) {
        if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
        cmd_fail({std::string(is_create ? "Failed to create domain from " : "Failed to define domain from ") + file, e.what()});
      }
      cli.print_warnings(r);
      if (!cli.quiet) std::printf("Domain '%s' %s from %s\n", r.name.c_str(), is_create ? "created" : "defined", file.c_str());
    } else if (simple["undefine"]->parsed()) {
      const std::string name = cli.name_of(dom);
      try {
        cli.c().undefine(name);
      } catch (const ClientError& e) {
        cmd_fail({"Failed to undefine domain '" + name + "'", e.what()});
      }
      if (!cli.quiet) std::printf("Domain '%s' has been undefined\n", name.c_str());
    } else if (simple["start"]->parsed()) {
      cli.act(dom, "start", [](Connection& c, const std::string& n) { c.start(n); }, "started");
    } else if (simple["shutdown"]->parsed()) {
      cli.act(dom, "shutdown", [](Connection& c, const std::string& n) { c.shutdown(n); }, "is being shutdown");
    } else if (simple["destroy"]->parsed()) {
      cli.act(dom, "destroy", [](Connection& c, const std::string& n) { c.destroy(n); }, "destroyed");
    } else if (simple["reboot"]->parsed()) {
      cli.act(dom, "reboot", [](Connection& c, const std::string& n) { c.reboot(n); }, "is being rebooted");
    } else if (simple["suspend"]->parsed()) {
      cli.act(dom, "suspend", [](Connection& c, const std::string& n) { c.suspend(n); }, "suspended");
    } else if (simple["resume"]->parsed()) {
      cli.act(dom, "resume", [](Connection& c, const std::string& n) { c.resume(n); }, "resumed");
    } else if (simple["edit"]->parsed()) {
      rc = edit(cli, dom);
    } else if (simple["dominfo"]->parsed()) {
      const std::string name = cli.name_of(dom);
      try {
        std::fputs(vireo::cli::format_dominfo(cli.c().info(name)).c_str(), stdout);
      } catch (const ClientError& e) {
        cmd_fail({e.what()});
      }
    } else if (dumpxml->parsed()) {
      const std::string name = cli.name_of(dom);
      try {
        std::fputs(cli.c().dumpxml(name, dump_inactive).c_str(), stdout);
      } catch (const ClientError& e) {
        cmd_fail({e.what()});
      }
    } else if (domstate->parsed()) {
      const std::string name = cli.name_of(dom);
      auto s = cli.c().domstate(name);
      if (reason) std::printf("%s (%s)\n", s.state.c_str(), s.reason.c_str());
      else std::printf("%s\n", s.state.c_str());
    } else if (console_c->parsed()) {
      rc = console(cli, dom);
    } else if (autostart->parsed()) {
      const std::string name = cli.name_of(dom);
      try {
        cli.c().set_autostart(name, !disable);
      } catch (const ClientError& e) {
        cmd_fail({std::string("Failed to ") + (disable ? "unmark" : "mark") + " domain '" + name + "' as autostarted", e.what()});
      }
      if (!cli.quiet) std::printf("Domain '%s' %s as autostarted\n", name.c_str(), disable ? "unmarked" : "marked");
    } else if (version->parsed()) {
      auto v = cli.c().version();
      std::printf("Compiled against library: vireo 0.1.0\nUsing library: vireo 0.1.0\nUsing API: vireo %s\nRunning hypervisor: %s %s\n",
                  v.value("version", "?").c_str(), v.value("hypervisor", "?").c_str(),
                  v.value("hypervisor_version", "?").c_str());
    }
  } catch (const CmdError& e) {
    std::fflush(stdout);
    for (const auto& l : e.lines) std::fprintf(stderr, "error: %s\n", l.c_str());
    rc = 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    rc = 1;
  }
  // virsh ends every command's output with an empty line (not in quiet mode).
  if (!cli.quiet) std::printf("\n");
  return rc;
}
