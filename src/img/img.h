// vireo-img: a drop-in for qemu-img 7.2 built on the vireo block layer (src/block).
//
// Every subcommand is a function `int cmd_X(int argc, char** argv)` (argv[0] is the subcommand name) that
// returns the process exit status. Errors are reported as "<prog>: <message>" on stderr, where <prog> is
// the basename the binary was called by (vireo-img or qemu-img).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "block/block.h"

namespace vireo::img {

// The program name used in messages ("vireo-img" or "qemu-img").
const std::string& prog();
void set_prog(const std::string& argv0);

// "<prog>: <msg>" on stderr.
void report(const std::string& msg);

// Thrown to end a subcommand with an exit status after the message was printed.
struct Exit {
  int status;
};
// report(msg) then throw Exit{status}.
[[noreturn]] void die(const std::string& msg, int status = 1);

// qemu's size parser (qemu_strtosz): "1G", "1.5M", "512", "4k", "10b"; throws Error on junk.
uint64_t parse_qemu_size(std::string_view text);
// qemu's size_to_str: "1.26 MiB", "196 KiB", "0 B".
std::string size_to_str(uint64_t bytes);

// A parsed "-o a=b,c=d" list (commas escaped by doubling, as qemu does). Keeps insertion order.
struct OptionList {
  std::vector<std::pair<std::string, std::string>> items;
  bool help = false;   // "help" or "?" seen
  std::optional<std::string> get(const std::string& key) const;
  void set(const std::string& key, const std::string& value);
};
OptionList parse_option_list(std::string_view text);   // throws Error on "a" without '=' (except help)
// Merges several -o occurrences (qemu concatenates them with ',').
void merge_options(OptionList& into, const OptionList& more);

// Parses qemu bools ("on"/"off"/"true"/"false"/"yes"/"no").
bool parse_qemu_bool(const std::string& name, const std::string& value);

// Builds CreateOptions from -f and a -o list; validates names like qemu ("Invalid parameter 'x'").
// Syntax errors only: value checks (cluster size range, compat conflicts) are validate_create_options's,
// because qemu-img prints its "Formatting ..." line before those.
block::CreateOptions create_options_from(const std::string& fmt, const OptionList& opts);
void validate_create_options(const block::CreateOptions& c);
// qemu's "Formatting 'F', fmt=..." line (without newline).
std::string formatting_line(const std::string& filename, const block::CreateOptions& c,
                            const OptionList& given);
// The text `-o help` prints for a format.
std::string option_help(const std::string& fmt);

// Opens an image for a subcommand; on failure dies with "Could not open 'F': <why>".
struct OpenSpec {
  std::string format;
  bool read_only = true;
  bool force_share = false;
  bool open_backing = true;
  bool direct = false;
  std::string key_secret;   // encrypted images: --object secret id (block::OpenOptions::key_secret)
  bool no_io = false;       // info: headers only (encrypted images open without their key)
  std::string opts_name;    // --image-opts: the option string, which qemu's open errors name the image by
  std::string display_name; // --image-opts with format options: qemu's json:{...} name (info "image:")
};
std::unique_ptr<block::BlockImage> open_or_die(const std::string& path, const OpenSpec& spec);
// --image-opts (image_opts.cpp): applies "driver=..,file.filename=..,[encrypt.]key-secret=.." to spec and
// returns the file name; dies with qemu's texts for what it cannot open.
std::string apply_image_opts(const std::string& arg, OpenSpec& spec);

// qemu's progress bar ("    (12.34/100%)\r"), printed only when enabled.
class Progress {
 public:
  explicit Progress(bool enabled);
  ~Progress();
  void update(double percent);   // 0..100, redraws when it moved by >= 0.01 (or at most ~10 times a s)
  void finish();
 private:
  bool enabled_;
  bool done_ = false;
  double last_ = -1;
};

// --object (img/objects.h); on a bad object: report and exit 1.
void add_object_or_die(const std::string& spec);

// Subcommands.
int cmd_create(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_check(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_snapshot(int argc, char** argv);
int cmd_resize(int argc, char** argv);
int cmd_rebase(int argc, char** argv);
int cmd_commit(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_map(int argc, char** argv);
int cmd_measure(int argc, char** argv);
int cmd_amend(int argc, char** argv);
int cmd_dd(int argc, char** argv);
int cmd_bench(int argc, char** argv);

// Entry point used by main(): dispatches argv[1].
int run(int argc, char** argv);

// qcow2 size arithmetic shared by measure (qemu's qcow2_calc_prealloc_size / refcount metadata size).
uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_order);
uint64_t qcow2_prealloc_size(uint64_t total_size, uint64_t cluster_size, unsigned refcount_order,
                             bool extended_l2);

}  // namespace vireo::img
