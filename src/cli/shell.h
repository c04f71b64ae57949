// The vireo driver: one command from the command line, or, with no verb, the interactive shell (libedit:
// history in ~/.cache/vireo/history, line editing, tab completion) reading commands as virsh does
// (quotes, backslashes, ';' between commands). Errors and the trailing empty line in virsh's manner.
#pragma once
#include <string>
#include <vector>

#include "cli/cli.h"

namespace vireo::cli {

using Registrar = void (*)(Verbs&);

int run_main(Cli& cli, int argc, char** argv, Registrar add_verbs);

// Splits a line into commands of words. Returns false (and `error`) on an unterminated quote.
bool split_commands(const std::string& line, std::vector<std::vector<std::string>>& commands, std::string& error);

// help, echo, quit, exit, connect, cd, pwd (`vireo complete -- WORDS` is bash completion's helper).
void add_shell_verbs(Verbs& v);
void add_host_verbs(Verbs& v);         // uri, hostname, nodeinfo, capabilities, sysinfo
void add_domain_stats_verbs(Verbs& v);  // domiflist, domblklist, domifaddr, domstats, domblkstat, domifstat, vcpuinfo

}  // namespace vireo::cli
