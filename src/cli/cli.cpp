#include "cli/cli.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace vireo::cli {

void cmd_fail(std::vector<std::string> lines) { throw CmdError{std::move(lines)}; }

std::string read_xml_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) cmd_fail({"Failed to open file '" + path + "': " + std::strerror(errno)});
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_stdout(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

client::Connection& Cli::c() {
  if (!conn) {
    try {
      conn = std::make_unique<client::Connection>(uri, readonly);
    } catch (const std::exception& e) {
      cmd_fail({"failed to connect to the hypervisor", e.what()});
    }
  }
  return *conn;
}

std::optional<std::string> Cli::edit_text(const std::string& xml) {
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
    cmd_fail({std::string("editor '") + ed + "' failed (" +
              (WIFEXITED(st) ? "exit status " + std::to_string(WEXITSTATUS(st)) : "killed") + ")"});
  std::string edited = read_xml_file(path);
  if (edited == xml) return std::nullopt;
  return edited;
}

CLI::App* Verbs::add(const std::string& name, const std::string& help, std::function<int()> run) {
  CLI::App* s = app_.add_subcommand(name, help);
  verbs_.emplace_back(s, std::move(run));
  return s;
}

int Verbs::run_parsed() {
  for (auto& [s, run] : verbs_)
    if (s->parsed()) return run();
  return 0;
}

}  // namespace vireo::cli
