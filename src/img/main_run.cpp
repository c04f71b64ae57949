// vireo-img: command dispatch, help, version and option parsing helpers.
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "img/cli.h"

namespace vireo::img {

void usage_error(const std::string& msg) {
  die(fmt::format("{}\nTry '{} --help' for more information", msg, prog()));
}

void show_help() {
  std::printf(
      "%s version 7.2.0 (vireo)\n"
      "usage: %s [standard options] command [command options]\n"
      "Vireo disk image utility (qcow2 and raw), command-line compatible with qemu-img 7.2\n"
      "\n"
      "    '-h', '--help'       display this help and exit\n"
      "    '-V', '--version'    output version information and exit\n"
      "\n"
      "Command syntax:\n"
      "  amend [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename\n"
      "  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] "
      "[-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename\n"
      "  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename\n"
      "  commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename\n"
      "  compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2\n"
      "  convert [--target-is-zero] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] "
      "[-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] "
      "[-r rate_limit] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename\n"
      "  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]\n"
      "  dd [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output\n"
      "  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename\n"
      "  map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename\n"
      "  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] [-l snapshot_param] "
      "filename]\n"
      "  snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename\n"
      "  rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] "
      "filename\n"
      "  resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size\n"
      "\n"
      "Supported formats: qcow2 raw\n",
      prog().c_str(), prog().c_str());
  throw Exit{0};
}

OptParser::OptParser(int argc, char** argv, const char* shortopts, const struct option* longopts)
    : argc_(argc), argv_(argv), shortopts_(std::string(":") + shortopts), longopts_(longopts) {
  optind = 0;   // full reinitialisation of GNU getopt
  opterr = 0;
}

int OptParser::next() {
  const int c = getopt_long(argc_, argv_, shortopts_.c_str(), longopts_, nullptr);
  if (c == '?') {
    if (optopt) usage_error(fmt::format("unrecognized option '-{}'", static_cast<char>(optopt)));
    usage_error(fmt::format("unrecognized option '{}'", argv_[optind - 1]));
  }
  if (c == ':') usage_error(fmt::format("missing argument for option '{}'", argv_[optind - 1]));
  if (c == 'h') show_help();
  return c;
}

bool parse_output_format(const std::string& value) {
  if (value == "json") return true;
  if (value == "human") return false;
  die("--output must be used with human or json as argument.");
}

int run(int argc, char** argv) {
  set_prog(argc > 0 ? argv[0] : "vireo-img");
  try {
    if (argc < 2) usage_error("Not enough arguments");
    const std::string cmd = argv[1];
    if (cmd == "-h" || cmd == "--help") show_help();
    if (cmd == "-V" || cmd == "--version") {
      std::printf("%s version 7.2.0 (vireo 0.1.0)\n", prog().c_str());
      return 0;
    }
    struct Entry {
      const char* name;
      int (*fn)(int, char**);
    };
    static const Entry table[] = {
        {"amend", cmd_amend},       {"bench", cmd_bench},     {"check", cmd_check},
        {"commit", cmd_commit},     {"compare", cmd_compare}, {"convert", cmd_convert},
        {"create", cmd_create},     {"dd", cmd_dd},           {"info", cmd_info},
        {"map", cmd_map},           {"measure", cmd_measure}, {"snapshot", cmd_snapshot},
        {"rebase", cmd_rebase},     {"resize", cmd_resize},
    };
    for (const auto& e : table)
      if (cmd == e.name) return e.fn(argc - 1, argv + 1);
    usage_error("Command not found: " + cmd);
  } catch (const Exit& e) {
    std::fflush(stdout);
    return e.status;
  } catch (const Error& e) {
    report(e.what());
    return 1;
  } catch (const std::exception& e) {
    report(e.what());
    return 1;
  }
}

}  // namespace vireo::img
