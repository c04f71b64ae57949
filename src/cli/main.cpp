// vireo: the command-line client for vireod, virsh's verbs, messages, tables and exit codes. The verbs
// live in one file per object kind (verbs_*.cpp); shell.cpp runs one of them, or the interactive shell.
#include <cstring>

#include "cli/cli.h"
#include "cli/shell.h"
#include "cli/ssh_helper.h"

namespace {
void add_verbs(vireo::cli::Verbs& verbs) {
  vireo::cli::add_domain_verbs(verbs);
  vireo::cli::add_domain_stats_verbs(verbs);
  vireo::cli::add_host_verbs(verbs);
  vireo::cli::add_network_verbs(verbs);
  vireo::cli::add_storage_verbs(verbs);
  vireo::cli::add_interface_verbs(verbs);
  vireo::cli::add_shell_verbs(verbs);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "ssh-helper") == 0) return vireo::cli::ssh_helper_main(argc, argv);
  vireo::cli::Cli cli;
  return vireo::cli::run_main(cli, argc, argv, add_verbs);
}
