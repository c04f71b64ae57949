// vireo-img: getopt_long-based option parsing shared by the subcommands (qemu-img's syntax and messages).
#pragma once
#include <getopt.h>

#include <string>

#include "img/img.h"

namespace vireo::img {

// "<prog>: <msg>\nTry '<prog> --help' for more information", exit 1 (qemu's error_exit).
[[noreturn]] void usage_error(const std::string& msg);

// Prints the general help and throws Exit{0}.
[[noreturn]] void show_help();

// Iterates options like getopt_long (leading ':' semantics): returns the option character / long value,
// -1 at the end. Unknown options and missing arguments end the command with qemu's messages; -h shows help.
class OptParser {
 public:
  OptParser(int argc, char** argv, const char* shortopts, const struct option* longopts);
  int next();
  const char* arg() const { return optarg; }
  int index() const { return optind; }   // first non-option argument after next() returned -1

 private:
  int argc_;
  char** argv_;
  std::string shortopts_;
  const struct option* longopts_;
};

// --output=human|json → true for json.
bool parse_output_format(const std::string& value);

}  // namespace vireo::img
