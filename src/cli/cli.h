// The vireo CLI's shared pieces: the connection, virsh-style errors, and the verb table every
// per-kind file (verbs_domain.cpp, verbs_network.cpp, ...) registers its verbs in.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"

namespace vireo::cli {

// A failed command: every line is printed as "error: <line>" and the exit status is 1.
struct CmdError {
  std::vector<std::string> lines;
};
[[noreturn]] void cmd_fail(std::vector<std::string> lines);

std::string read_xml_file(const std::string& path);  // virsh's "Failed to open file 'X': ..." on error
void write_stdout(const std::string& s);

struct Cli {
  std::string uri;
  bool quiet = false;
  bool readonly = false;  // -r: a read-only connection (queries only)
  std::unique_ptr<client::Connection> conn;
  client::Connection& c();  // connects on first use ("failed to connect to the hypervisor")
  // $VISUAL/$EDITOR/vi on `xml`; returns the edited text, or nullopt when unchanged.
  std::optional<std::string> edit_text(const std::string& xml);
};

// Verbs: each file adds its subcommands here with the function that runs it once parsed.
class Verbs {
 public:
  Verbs(CLI::App& app, Cli& cli) : app_(app), cli_(cli) {}
  // `run` returns the exit status (0) or throws CmdError/ClientError.
  CLI::App* add(const std::string& name, const std::string& help, std::function<int()> run);
  CLI::App& app() { return app_; }
  Cli& cli() { return cli_; }
  int run_parsed();  // the parsed verb's status

 private:
  CLI::App& app_;
  Cli& cli_;
  std::vector<std::pair<CLI::App*, std::function<int()>>> verbs_;
};

void add_domain_verbs(Verbs& v);
void add_network_verbs(Verbs& v);
void add_storage_verbs(Verbs& v);
void add_interface_verbs(Verbs& v);

}  // namespace vireo::cli
