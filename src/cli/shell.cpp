#include "cli/shell.h"

#include <editline/readline.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "cli/help.h"

namespace vireo::cli {

namespace {

bool g_quit = false;         // set by quit/exit
bool g_interactive = false;  // inside the shell
Registrar g_registrar = nullptr;

// Verbs that print no trailing empty line (virsh's echo; quit/exit/cd say nothing).
bool no_trailer(const std::string& verb) { return verb == "echo" || verb == "quit" || verb == "exit" || verb == "cd" || verb == "complete"; }

struct Parsed {
  std::unique_ptr<CLI::App> app;
  std::unique_ptr<Verbs> verbs;
};

Parsed make_app(Cli& cli, bool globals) {
  Parsed p;
  p.app = std::make_unique<CLI::App>("vireo: manage Vireo domains, networks, storage and host interfaces through vireod (virsh's verbs)", "vireo");
  if (globals) {
    p.app->add_option("-c,--connect", cli.uri, "hypervisor connection URI: vireo:///system (default; $VIREO_ROOT honoured), unix:///PATH, vireo+ssh://[USER@]HOST[:PORT]/, vireo+tls://HOST[:PORT]/, vireo+tcp://HOST[:PORT]/");
    p.app->add_flag("-q,--quiet", cli.quiet, "quiet mode");
    p.app->add_flag("-r,--readonly", cli.readonly, "connect readonly");
  }
  p.app->require_subcommand(0, 1);
  p.verbs = std::make_unique<Verbs>(*p.app, cli);
  g_registrar(*p.verbs);
  return p;
}

// virsh accepts a positional argument as `--NAME value` too (`dominfo --domain web`).
void unname_positionals(CLI::App& app, std::vector<std::string>& words, size_t verb_at) {
  CLI::App* verb = nullptr;
  try {
    verb = app.get_subcommand(words[verb_at]);
  } catch (const CLI::OptionNotFound&) {
    return;
  }
  for (CLI::Option* o : verb->get_options([](const CLI::Option*) { return true; })) {
    if (!o->get_positional() || o->nonpositional()) continue;
    const std::string flag = "--" + o->get_name(true, false);
    for (size_t i = verb_at + 1; i + 1 < words.size(); ++i)
      if (words[i] == flag) {
        words.erase(words.begin() + static_cast<long>(i));
        break;
      }
  }
}

// One command; `words` excludes the program name. Returns the exit status.
int run_words(Cli& cli, std::vector<std::string> words, bool globals, bool* ran_verb = nullptr) {
  Parsed p = make_app(cli, globals);
  CLI::App& app = *p.app;
  // Where is the verb?
  size_t verb_at = words.size();
  for (size_t i = 0; i < words.size(); ++i) {
    if (globals && (words[i] == "-c" || words[i] == "--connect")) {
      ++i;
      continue;
    }
    if (!words[i].empty() && words[i][0] == '-') continue;
    verb_at = i;
    break;
  }
  std::string verb_name = verb_at < words.size() ? words[verb_at] : "";
  if (!verb_name.empty()) {
    bool known = true;
    try {
      app.get_subcommand(verb_name);
    } catch (const CLI::OptionNotFound&) {
      known = false;
    }
    if (!known) {
      std::fprintf(stderr, "error: unknown command: '%s'\n", verb_name.c_str());
      return 1;
    }
    unname_positionals(app, words, verb_at);
  }
  std::vector<std::string> rev(words.rbegin(), words.rend());
  try {
    app.parse(rev);
  } catch (const CLI::CallForHelp&) {
    if (!verb_name.empty()) {
      std::fputs(format_verb_help(*app.get_subcommand(verb_name)).c_str(), stdout);
      if (!cli.quiet) std::printf("\n");
      return 0;
    }
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    const std::string one = "The following argument was not expected: ", many = "The following arguments were not expected: ";
    std::string extra;
    if (msg.rfind(one, 0) == 0) extra = msg.substr(one.size());
    else if (msg.rfind(many, 0) == 0) extra = msg.substr(many.size(), msg.find(' ', many.size()) - many.size());
    if (!extra.empty() && !verb_name.empty()) {
      if (extra[0] == '-') std::fprintf(stderr, "error: command '%s' doesn't support option %s\n", verb_name.c_str(), extra.c_str());
      else std::fprintf(stderr, "error: unexpected data '%s'\n", extra.c_str());
    } else if (msg.size() > 12 && msg.substr(msg.size() - 12) == " is required" && !verb_name.empty()) {
      std::fprintf(stderr, "error: command '%s' requires <%s> option\n", verb_name.c_str(), msg.substr(0, msg.size() - 12).c_str());
    } else {
      std::fprintf(stderr, "error: %s\n", msg.c_str());
    }
    return 1;
  }
  if (verb_name.empty()) {
    if (ran_verb) *ran_verb = false;
    return 0;
  }
  if (ran_verb) *ran_verb = true;
  int rc = 0;
  try {
    rc = p.verbs->run_parsed();
  } catch (const CmdError& e) {
    std::fflush(stdout);
    for (const auto& l : e.lines) std::fprintf(stderr, "error: %s\n", l.c_str());
    rc = 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    rc = 1;
  }
  // virsh ends most commands' output with an empty line (not in quiet mode).
  if (!cli.quiet && !no_trailer(verb_name)) std::printf("\n");
  std::fflush(stdout);
  return rc;
}

std::string history_path() {
  std::string dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = std::string(x) + "/vireo";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = std::string(h) + "/.cache/vireo";
  else return "";
  std::string cur;
  for (size_t i = 1; i <= dir.size(); ++i)
    if (i == dir.size() || dir[i] == '/') ::mkdir(dir.substr(0, i).c_str(), 0700);
  return dir + "/history";
}

Cli* g_cli = nullptr;
std::vector<std::string> g_matches;

char* completion_generator(const char* text, int state) {
  if (state == 0) {
    std::vector<std::vector<std::string>> cmds;
    std::string err;
    std::string before(rl_line_buffer, static_cast<size_t>(rl_point));
    before = before.substr(0, before.size() - std::strlen(text));
    split_commands(before, cmds, err);
    std::vector<std::string> words = cmds.empty() || (!before.empty() && before.find_last_not_of(" \t") != std::string::npos &&
                                                      before[before.find_last_not_of(" \t")] == ';')
                                         ? std::vector<std::string>{}
                                         : cmds.back();
    Parsed p = make_app(*g_cli, false);
    g_matches = complete_words(*p.app, words, text, [] {
      std::vector<std::string> names;
      try {
        for (auto& d : g_cli->c().list()) names.push_back(d.name);
      } catch (...) {
      }
      return names;
    });
  }
  if (state < 0 || static_cast<size_t>(state) >= g_matches.size()) return nullptr;
  return ::strdup(g_matches[static_cast<size_t>(state)].c_str());
}

char** attempted_completion(const char* text, int, int) {
  rl_attempted_completion_over = 1;
  return rl_completion_matches(text, completion_generator);
}

int shell(Cli& cli) {
  g_interactive = true;
  const bool tty = ::isatty(0);
  std::string hist;
  if (tty) {
    std::printf("Welcome to vireo, the virtualization interactive terminal.\n\n"
                "Type:  'help' for help with commands\n       'quit' to quit\n\n");
    g_cli = &cli;
    rl_readline_name = const_cast<char*>("vireo");
    rl_attempted_completion_function = attempted_completion;
    using_history();
    hist = history_path();
    if (!hist.empty()) read_history(hist.c_str());
  }
  int rc = 0;
  while (!g_quit) {
    std::string line;
    if (tty) {
      const char* prompt = cli.readonly ? "vireo > " : ::geteuid() == 0 ? "vireo # " : "vireo $ ";
      char* l = readline(prompt);
      if (!l) {
        std::printf("\n");
        break;
      }
      line = l;
      std::free(l);
      if (line.find_first_not_of(" \t") != std::string::npos) add_history(line.c_str());
    } else if (!std::getline(std::cin, line)) {
      break;
    }
    std::vector<std::vector<std::string>> cmds;
    std::string err;
    if (!split_commands(line, cmds, err)) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      rc = 1;
      continue;
    }
    for (auto& c : cmds) {
      if (g_quit) break;
      rc = run_words(cli, c, false);
      std::fflush(stderr);
    }
  }
  if (tty && !hist.empty()) {
    stifle_history(500);
    write_history(hist.c_str());
  }
  return rc;
}

}  // namespace

bool split_commands(const std::string& line, std::vector<std::vector<std::string>>& commands, std::string& error) {
  commands.clear();
  std::vector<std::string> cur;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
    } else if (c == '\'' || c == '"') {
      size_t end = line.find(c, i + 1);
      if (end == std::string::npos) {
        error = "dangling quote";  // virsh's word for it
        return false;
      }
      std::string inner = line.substr(i + 1, end - i - 1);
      if (c == '"') {  // backslash escapes work inside double quotes
        std::string un;
        for (size_t k = 0; k < inner.size(); ++k) un += (inner[k] == '\\' && k + 1 < inner.size()) ? inner[++k] : inner[k];
        inner = un;
      }
      word += inner;
      in_word = true;
      i = end;
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) cur.push_back(word);
      word.clear();
      in_word = false;
    } else if (c == ';') {
      if (in_word) cur.push_back(word);
      word.clear();
      in_word = false;
      if (!cur.empty()) commands.push_back(cur);
      cur.clear();
    } else if (c == '#' && !in_word) {
      break;  // a comment to the end of the line
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) cur.push_back(word);
  if (!cur.empty()) commands.push_back(cur);
  return true;
}

// bash completion's helper: `vireo complete -- WORD... CURRENT` prints one candidate per line. Not a
// verb (its words are another command line, not options for CLI11 to parse).
int complete_main(Cli& cli, std::vector<std::string> before) {
  if (!before.empty() && before.front() == "--") before.erase(before.begin());
  std::string cur;
  if (!before.empty()) {
    cur = before.back();
    before.pop_back();
  }
  // A -c URI among the words is the connection to ask for domain names.
  for (size_t i = 0; i + 1 < before.size(); ++i)
    if (before[i] == "-c" || before[i] == "--connect") cli.uri = before[i + 1];
  auto p = make_app(cli, true);
  for (const auto& w : complete_words(*p.app, before, cur, [&cli] {
         std::vector<std::string> names;
         try {
           for (auto& d : cli.c().list()) names.push_back(d.name);
         } catch (...) {
         }
         return names;
       }))
    std::printf("%s\n", w.c_str());
  return 0;
}

int run_main(Cli& cli, int argc, char** argv, Registrar add_verbs) {
  g_registrar = add_verbs;
  std::vector<std::string> words(argv + 1, argv + argc);
  if (!words.empty() && words[0] == "complete") return complete_main(cli, {words.begin() + 1, words.end()});
  bool ran = false;
  int rc = run_words(cli, words, true, &ran);
  if (rc != 0 || ran) return rc;
  return shell(cli);
}

void add_shell_verbs(Verbs& v) {
  Cli& cli = v.cli();
  CLI::App& app = v.app();
  auto topic = std::make_shared<std::string>();
  v.add("help", "print help", [&app, topic] {
    if (topic->empty()) {
      std::fputs(format_help_list(app).c_str(), stdout);
      return 0;
    }
    std::string t = *topic == "virsh" ? "vireo" : *topic;
    for (const Group& g : groups())
      if (t == g.keyword) {
        std::fputs(format_help_list(app, t).c_str(), stdout);
        return 0;
      }
    CLI::App* verb = nullptr;
    try {
      verb = app.get_subcommand(t);
    } catch (const CLI::OptionNotFound&) {
    }
    if (!verb || hidden_verb(t)) cmd_fail({"command or command group '" + *topic + "' doesn't exist"});
    std::fputs(format_verb_help(*verb).c_str(), stdout);
    return 0;
  })->add_option("command", *topic, "Prints global help, command specific help, or help for a group of related commands");

  auto words = std::make_shared<std::vector<std::string>>();
  v.add("echo", "echo arguments", [words] {
    std::string out;
    for (const auto& w : *words) out += (out.empty() ? "" : " ") + w;
    std::printf("%s\n", out.c_str());
    return 0;
  })->add_option("string", *words, "arguments to echo");
  v.add("quit", "quit this interactive terminal", [] {
    g_quit = true;
    return 0;
  });
  v.add("exit", "quit this interactive terminal", [] {
    g_quit = true;
    return 0;
  });
  auto dir = std::make_shared<std::string>();
  v.add("cd", "change the current directory", [dir] {
    std::string d = *dir;
    if (d.empty()) {
      const char* h = std::getenv("HOME");
      d = h ? h : "/";
    }
    if (!g_interactive) cmd_fail({"cd: command valid only in interactive mode"});
    if (::chdir(d.c_str()) < 0) cmd_fail({"cannot chdir to " + d + ": " + std::strerror(errno)});
    return 0;
  })->add_option("dir", *dir, "directory to switch to (default: home or else root)");
  v.add("pwd", "print the current directory", [] {
    char buf[4096];
    if (!::getcwd(buf, sizeof buf)) cmd_fail({std::string("cannot get the current directory: ") + std::strerror(errno)});
    std::printf("%s\n", buf);
    return 0;
  });
  struct ConnectOpts {
    std::string uri;
    bool readonly = false;
  };
  auto co = std::make_shared<ConnectOpts>();
  auto* connect = v.add("connect", "(re)connect to hypervisor", [&cli, co] {
    cli.conn.reset();
    if (!co->uri.empty()) cli.uri = co->uri;
    cli.readonly = co->readonly;
    cli.c();  // connect now: a bad URI is reported here
    return 0;
  });
  connect->add_option("name", co->uri, "hypervisor connection URI");
  connect->add_flag("--readonly", co->readonly, "read-only connection");

  // bash completion's helper: `vireo complete -- WORD... CURRENT` prints one candidate per line.
}

}  // namespace vireo::cli
