#include "cli/help.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

namespace vireo::cli {

const std::vector<Group>& groups() {
  static const std::vector<Group> g = {
      {"domain", "Domain Management"}, {"monitor", "Domain Monitoring"}, {"host", "Host and Hypervisor"},
      {"interface", "Interface"},      {"network", "Networking"},        {"snapshot", "Snapshot"},
      {"pool", "Storage Pool"},        {"volume", "Storage Volume"},     {"vireo", "Vireo itself"}};
  return g;
}

bool hidden_verb(const std::string& verb) { return verb == "ssh-helper" || verb == "complete"; }

// The shell's own verbs, in virsh's order.
static const std::vector<std::string>& self_verbs() {
  static const std::vector<std::string> v = {"cd", "echo", "exit", "help", "pwd", "quit", "connect"};
  return v;
}

std::string group_of(const std::string& verb) {
  static const std::set<std::string> monitor = {"domblkerror", "domblkinfo", "domblklist", "domblkstat", "domcontrol",
                                                "domif-getlink", "domifaddr", "domiflist", "domifstat", "dominfo",
                                                "dommemstat", "domstate", "domstats", "domtime", "list"};
  static const std::set<std::string> host = {"allocpages", "capabilities", "cpu-baseline", "cpu-compare", "cpu-models",
                                             "domcapabilities", "freecell", "freepages", "hostname", "maxvcpus",
                                             "node-memory-tune", "nodecpumap", "nodecpustats", "nodeinfo",
                                             "nodememstats", "nodesuspend", "sysinfo", "uri", "version"};
  const auto& self = self_verbs();
  if (std::find(self.begin(), self.end(), verb) != self.end()) return "vireo";
  if (monitor.count(verb)) return "monitor";
  if (host.count(verb)) return "host";
  auto starts = [&](const char* p) { return verb.rfind(p, 0) == 0; };
  if (starts("iface-")) return "interface";
  if (starts("net-")) return "network";
  if (starts("snapshot-")) return "snapshot";
  if (starts("pool-") || verb == "find-storage-pool-sources" || verb == "find-storage-pool-sources-as") return "pool";
  if (starts("vol-")) return "volume";
  return "domain";
}

static std::vector<CLI::App*> verbs_of(CLI::App& app) {
  std::vector<CLI::App*> out;
  for (CLI::App* s : app.get_subcommands([](CLI::App*) { return true; }))
    if (!hidden_verb(s->get_name())) out.push_back(s);
  return out;
}

std::string format_help_list(CLI::App& app, const std::string& only) {
  std::map<std::string, std::vector<CLI::App*>> by_group;
  for (CLI::App* s : verbs_of(app)) by_group[group_of(s->get_name())].push_back(s);
  std::string out = only.empty() ? "Grouped commands:\n\n" : "";
  for (const Group& g : groups()) {
    if (!only.empty() && only != g.keyword) continue;
    auto& list = by_group[g.keyword];
    if (list.empty()) continue;
    if (std::string(g.keyword) == "vireo") {
      const auto& order = self_verbs();
      std::sort(list.begin(), list.end(), [&](CLI::App* a, CLI::App* b) {
        return std::find(order.begin(), order.end(), a->get_name()) < std::find(order.begin(), order.end(), b->get_name());
      });
    } else {
      std::sort(list.begin(), list.end(), [](CLI::App* a, CLI::App* b) { return a->get_name() < b->get_name(); });
    }
    out += fmt::format(" {} (help keyword '{}'):\n", g.title, g.keyword);
    for (CLI::App* s : list) out += fmt::format("    {:<30} {}\n", s->get_name(), s->get_description());
    out += "\n";
  }
  return out;
}

static std::vector<CLI::Option*> options_of(CLI::App& verb) {
  std::vector<CLI::Option*> out;
  for (CLI::Option* o : verb.get_options([](const CLI::Option*) { return true; }))
    if (o != verb.get_help_ptr() && o != verb.get_help_all_ptr()) out.push_back(o);
  return out;
}

static std::string value_word(const CLI::Option* o) {
  const std::string t = o->get_type_name();
  return t.find("INT") != std::string::npos || t.find("FLOAT") != std::string::npos ? "<number>" : "<string>";
}

static std::string long_name(const CLI::Option* o) {
  return o->get_lnames().empty() ? std::string() : "--" + o->get_lnames().front();
}

static bool is_flag(const CLI::Option* o) { return o->get_expected_max() == 0 || o->get_type_size_max() == 0; }

// virsh's three kinds: a required positional ("<domain>"; listed as "[--domain] <string>"), an optional
// one or a named option with a value ("[--device <string>]"), a flag ("[--inactive]").
static std::string option_word(const CLI::Option* o) {
  const bool positional = o->get_positional() && !o->nonpositional();
  const std::string name = positional ? "--" + o->get_name(true, false) : long_name(o);
  return is_flag(o) ? name : name + " " + value_word(o);
}

std::string synopsis(CLI::App& verb) {
  std::string s = verb.get_name();
  for (CLI::Option* o : options_of(verb)) {
    const bool positional = o->get_positional() && !o->nonpositional();
    if (positional && o->get_expected_max() > 1) s += " [<" + o->get_name(true, false) + ">]...";
    else if (positional && o->get_required()) s += " <" + o->get_name(true, false) + ">";
    else if (o->get_required()) s += " " + option_word(o);
    else s += " [" + option_word(o) + "]";
  }
  return s;
}

std::string format_verb_help(CLI::App& verb) {
  std::string out = "  NAME\n    " + verb.get_name() + " - " + verb.get_description() + "\n\n";
  out += "  SYNOPSIS\n    " + synopsis(verb) + "\n\n";
  if (!verb.get_footer().empty()) out += "  DESCRIPTION\n    " + verb.get_footer() + "\n\n";
  auto opts = options_of(verb);
  if (!opts.empty()) {
    out += "  OPTIONS\n";
    for (CLI::Option* o : opts) {
      const bool positional = o->get_positional() && !o->nonpositional();
      const std::string left = positional && o->get_expected_max() > 1 ? "<" + o->get_name(true, false) + ">"
                               : positional && o->get_required()
                                   ? "[--" + o->get_name(true, false) + "] " + value_word(o)
                                   : option_word(o);
      out += fmt::format("    {:<15}  {}\n", left, o->get_description());
    }
    out += "\n";
  }
  return out;
}

std::vector<std::string> complete_words(CLI::App& app, const std::vector<std::string>& before, const std::string& cur,
                                        const std::function<std::vector<std::string>()>& domains) {
  std::vector<std::string> out;
  auto add_matching = [&](const std::string& w) {
    if (w.rfind(cur, 0) == 0 && std::find(out.begin(), out.end(), w) == out.end()) out.push_back(w);
  };
  // Find the verb: the first word that is not a global option (or the value of -c/--connect).
  CLI::App* verb = nullptr;
  size_t i = 0;
  for (; i < before.size(); ++i) {
    const std::string& w = before[i];
    if (w == "-c" || w == "--connect") {
      ++i;
      continue;
    }
    if (!w.empty() && w[0] == '-') continue;
    try {
      verb = app.get_subcommand(w);
    } catch (const CLI::OptionNotFound&) {
      return out;
    }
    break;
  }
  if (!verb) {
    if (!cur.empty() && cur[0] == '-') {
      for (const char* g : {"--connect", "--quiet", "--readonly", "--help"}) add_matching(g);
    } else {
      for (CLI::App* s : verbs_of(app)) add_matching(s->get_name());
    }
    return out;
  }
  const std::vector<std::string> args(before.begin() + static_cast<long>(i) + 1, before.end());
  if (verb->get_name() == "help") {
    if (args.empty()) {
      for (CLI::App* s : verbs_of(app)) add_matching(s->get_name());
      for (const Group& g : groups()) add_matching(g.keyword);
    }
    return out;
  }
  auto opts = options_of(*verb);
  // After an option that takes a value: nothing we know (the shell completes files).
  if (!args.empty()) {
    for (CLI::Option* o : opts)
      if (o->nonpositional() && !is_flag(o) && args.back() == long_name(o)) return out;
  }
  if (!cur.empty() && cur[0] == '-') {
    for (CLI::Option* o : opts) {
      if (!o->nonpositional()) continue;
      const std::string n = long_name(o);
      if (std::find(args.begin(), args.end(), n) == args.end()) add_matching(n);
    }
    return out;
  }
  // Which positional is next?
  size_t positionals = 0;
  for (size_t k = 0; k < args.size(); ++k) {
    if (!args[k].empty() && args[k][0] == '-') {
      for (CLI::Option* o : opts)
        if (o->nonpositional() && !is_flag(o) && args[k] == long_name(o)) ++k;
      continue;
    }
    ++positionals;
  }
  size_t p = 0;
  for (CLI::Option* o : opts) {
    if (!o->get_positional()) continue;
    if (p++ == positionals) {
      if (o->get_name(true, false) == "domain")
        for (const auto& d : domains()) add_matching(d);
      return out;
    }
  }
  return out;
}

}  // namespace vireo::cli
