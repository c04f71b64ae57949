// Domain verbs (virsh's): list, define, create, undefine, start, shutdown, destroy, reboot, suspend, resume,
// edit, dominfo, dumpxml, domstate, console, autostart, version.
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>

#include "cli/cli.h"
#include "cli/format.h"

namespace vireo::cli {

namespace {

using client::ClientError;
using client::Connection;

// Resolve a name/id/uuid to the domain's name (virsh's messages use the name).
std::string name_of(Cli& cli, const std::string& key) {
  try {
    return cli.c().lookup(key).name;
  } catch (const ClientError& e) {
    if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
    cmd_fail({"failed to get domain '" + key + "'"});
  }
}

void print_warnings(const client::DefineResult& r) {
  for (const auto& u : r.unsupported)
    std::fprintf(stderr, "warning: unsupported element '%s' is kept in the definition but not used by Vireo\n", u.c_str());
}

int console(Cli& cli, const std::string& key) {
  const std::string name = name_of(cli, key);
  std::string first;
  UniqueFd fd;
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
  const std::string name = name_of(cli, key);
  std::string xml;
  try {
    xml = cli.c().dumpxml(name, true);
  } catch (const ClientError& e) {
    cmd_fail({e.what()});
  }
  auto edited = cli.edit_text(xml);
  if (!edited) {
    std::printf("Domain '%s' XML configuration not changed.\n", name.c_str());
    return 0;
  }
  client::DefineResult r;
  try {
    r = cli.c().define(*edited);
  } catch (const ClientError& e) {
    cmd_fail({e.what(), "Failed. The definition of domain '" + name + "' was not changed."});
  }
  print_warnings(r);
  std::printf("Domain '%s' XML configuration edited.\n", r.name.c_str());
  return 0;
}

struct ListFlags {
  bool all = false, inactive = false, name_only = false, uuid_only = false, st_run = false, st_paused = false,
       st_off = false, st_other = false, autostart = false, no_autostart = false, persistent = false, transient = false;
};

int list(Cli& cli, const ListFlags& f) {
  std::vector<client::DomainSummary> keep;
  const bool any_state = f.st_run || f.st_paused || f.st_off || f.st_other;
  for (auto& d : cli.c().list()) {
    if (f.inactive && d.active) continue;
    if (!f.all && !f.inactive && !any_state && !d.active) continue;
    if (any_state) {
      bool ok = (f.st_run && d.state == "running") || (f.st_paused && d.state == "paused") ||
                (f.st_off && d.state == "shut off") ||
                (f.st_other && d.state != "running" && d.state != "paused" && d.state != "shut off");
      if (!ok) continue;
    }
    if (f.autostart && !d.autostart) continue;
    if (f.no_autostart && d.autostart) continue;
    if (f.persistent && !d.persistent) continue;
    if (f.transient && d.persistent) continue;
    keep.push_back(d);
  }
  if (f.name_only || f.uuid_only) {
    for (auto& d : keep) {
      if (f.uuid_only && f.name_only) std::printf("%s %s\n", d.uuid.c_str(), d.name.c_str());
      else std::printf("%s\n", f.uuid_only ? d.uuid.c_str() : d.name.c_str());
    }
  } else {
    write_stdout(format_list(keep, cli.quiet));  // -q: no header, widths from the rows (vsh-table)
  }
  return 0;
}

}  // namespace

void add_domain_verbs(Verbs& v) {
  Cli& cli = v.cli();
  auto lf = std::make_shared<ListFlags>();
  auto* list_c = v.add("list", "list domains", [&cli, lf] { return list(cli, *lf); });
  list_c->add_flag("--all", lf->all, "list inactive & active domains");
  list_c->add_flag("--inactive", lf->inactive, "list inactive domains");
  list_c->add_flag("--name", lf->name_only, "list domain names only");
  list_c->add_flag("--uuid", lf->uuid_only, "list uuid's only");
  list_c->add_flag("--state-running", lf->st_run, "list domains in running state");
  list_c->add_flag("--state-paused", lf->st_paused, "list domains in paused state");
  list_c->add_flag("--state-shutoff", lf->st_off, "list domains in shutoff state");
  list_c->add_flag("--state-other", lf->st_other, "list domains in other states");
  list_c->add_flag("--autostart", lf->autostart, "list domains with autostart enabled");
  list_c->add_flag("--no-autostart", lf->no_autostart, "list domains with autostart disabled");
  list_c->add_flag("--persistent", lf->persistent, "list persistent domains");
  list_c->add_flag("--transient", lf->transient, "list transient domains");

  struct Opts {
    std::string dom, file;
    bool validate = false, reason = false, disable = false, inactive = false, force = false;
  };
  auto o = std::make_shared<Opts>();
  for (bool is_create : {false, true}) {
    auto* s = v.add(is_create ? "create" : "define",
                    is_create ? "create a domain from an XML file (transient, started)"
                              : "define (but don't start) a domain from an XML file",
                    [&cli, o, is_create] {
                      std::string xml = read_xml_file(o->file);
                      client::DefineResult r;
                      try {
                        r = is_create ? cli.c().create(xml, o->validate) : cli.c().define(xml, o->validate);
                      } catch (const ClientError& e) {
                        if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
                        cmd_fail({std::string(is_create ? "Failed to create domain from " : "Failed to define domain from ") + o->file, e.what()});
                      }
                      print_warnings(r);
                      if (!cli.quiet)
                        std::printf("Domain '%s' %s from %s\n", r.name.c_str(), is_create ? "created" : "defined", o->file.c_str());
                      return 0;
                    });
    s->add_option("file", o->file, "file containing an XML domain description")->required();
    s->add_flag("--validate", o->validate, "fail on elements Vireo does not support");
  }

  auto domain_arg = [o](CLI::App* s) { s->add_option("domain", o->dom, "domain name, id or uuid")->required(); return s; };
  // Verbs of the form "act on one domain, print 'Domain 'x' <done>'".
  struct Act {
    const char* verb;
    const char* help;
    void (Connection::*fn)(const std::string&);
    const char* done;
  };
  for (const Act& a : {Act{"start", "start a (previously defined) inactive domain", &Connection::start, "started"},
                       Act{"shutdown", "gracefully shutdown a domain", &Connection::shutdown, "is being shutdown"},
                       Act{"destroy", "destroy (stop) a domain", &Connection::destroy, "destroyed"},
                       Act{"reboot", "reboot a domain", &Connection::reboot, "is being rebooted"},
                       Act{"suspend", "suspend a domain", &Connection::suspend, "suspended"},
                       Act{"resume", "resume a domain", &Connection::resume, "resumed"},
                       Act{"undefine", "undefine a domain", &Connection::undefine, "has been undefined"}}) {
    domain_arg(v.add(a.verb, a.help, [&cli, o, a] {
      const std::string name = name_of(cli, o->dom);
      try {
        (cli.c().*a.fn)(name);
      } catch (const ClientError& e) {
        cmd_fail({std::string("Failed to ") + a.verb + " domain '" + name + "'", e.what()});
      }
      if (!cli.quiet) std::printf("Domain '%s' %s\n", name.c_str(), a.done);
      return 0;
    }));
  }
  domain_arg(v.add("edit", "edit XML configuration for a domain", [&cli, o] { return edit(cli, o->dom); }));
  domain_arg(v.add("dominfo", "domain information", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    try {
      write_stdout(format_dominfo(cli.c().info(name)));
    } catch (const ClientError& e) {
      cmd_fail({e.what()});
    }
    return 0;
  }));
  domain_arg(v.add("dumpxml", "domain information in XML", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    try {
      write_stdout(cli.c().dumpxml(name, o->inactive));
    } catch (const ClientError& e) {
      cmd_fail({e.what()});
    }
    return 0;
  }))->add_flag("--inactive", o->inactive, "show inactive defined XML");
  domain_arg(v.add("domstate", "domain state", [&cli, o] {
    auto s = cli.c().domstate(name_of(cli, o->dom));
    if (o->reason) std::printf("%s (%s)\n", s.state.c_str(), s.reason.c_str());
    else std::printf("%s\n", s.state.c_str());
    return 0;
  }))->add_flag("--reason", o->reason, "also print reason for the state");
  domain_arg(v.add("console", "connect to the guest console", [&cli, o] { return console(cli, o->dom); }))
      ->add_flag("--force", o->force, "accepted for virsh compatibility (several consoles may attach)");
  domain_arg(v.add("autostart", "autostart a domain", [&cli, o] {
    const std::string name = name_of(cli, o->dom);
    try {
      cli.c().set_autostart(name, !o->disable);
    } catch (const ClientError& e) {
      cmd_fail({std::string("Failed to ") + (o->disable ? "unmark" : "mark") + " domain '" + name + "' as autostarted", e.what()});
    }
    if (!cli.quiet) std::printf("Domain '%s' %s as autostarted\n", name.c_str(), o->disable ? "unmarked" : "marked");
    return 0;
  }))->add_flag("--disable", o->disable, "disable autostarting");
  v.add("version", "show version", [&cli] {
    auto ver = cli.c().version();
    std::printf("Compiled against library: vireo 0.1.0\nUsing library: vireo 0.1.0\nUsing API: vireo %s\nRunning hypervisor: %s %s\n",
                ver.value("version", "?").c_str(), ver.value("hypervisor", "?").c_str(),
                ver.value("hypervisor_version", "?").c_str());
    return 0;
  });
}

}  // namespace vireo::cli
