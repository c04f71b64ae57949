// vireo: the command-line client for vireod, virsh's verbs, messages, tables and exit codes. The verbs
// live in one file per object kind (verbs_*.cpp); this is the driver.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/cli.h"

int main(int argc, char** argv) {
  vireo::cli::Cli cli;
  CLI::App app{"vireo: manage Vireo domains, networks, storage and host interfaces through vireod (virsh's verbs)"};
  app.add_option("-c,--connect", cli.uri, "daemon URI: unix:///path/to/vireod.sock (default: $VIREO_ROOT/run/vireo/vireod.sock)");
  app.add_flag("-q,--quiet", cli.quiet, "quiet mode");
  app.require_subcommand(1);
  vireo::cli::Verbs verbs(app, cli);
  vireo::cli::add_domain_verbs(verbs);
  vireo::cli::add_network_verbs(verbs);
  vireo::cli::add_storage_verbs(verbs);
  vireo::cli::add_interface_verbs(verbs);

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
    rc = verbs.run_parsed();
  } catch (const vireo::cli::CmdError& e) {
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
