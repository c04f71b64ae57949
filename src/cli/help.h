// `vireo help [VERB|GROUP]` in virsh's layouts, built from the verbs' own CLI11 definitions (the one source
// the man page and bash completion are generated from too), and the completion candidates.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace vireo::cli {

struct Group {
  const char* keyword;  // "domain"
  const char* title;    // "Domain Management"
};
const std::vector<Group>& groups();
// The group keyword a verb belongs to (virsh's grouping).
std::string group_of(const std::string& verb);
// Verbs that exist only for machines (ssh-helper, complete): not listed, not completed.
bool hidden_verb(const std::string& verb);

// "Grouped commands:" and every group, or one group (keyword), in virsh's layout.
std::string format_help_list(CLI::App& app, const std::string& only_group = "");
// One verb's NAME / SYNOPSIS / DESCRIPTION / OPTIONS block.
std::string format_verb_help(CLI::App& verb);
// "<domain> [--inactive]"
std::string synopsis(CLI::App& verb);

// Completion candidates for `current`, given the words before it (after the program name).
// `domains` is called when a domain name fits here.
std::vector<std::string> complete_words(CLI::App& app, const std::vector<std::string>& before, const std::string& current,
                                        const std::function<std::vector<std::string>()>& domains);

}  // namespace vireo::cli
