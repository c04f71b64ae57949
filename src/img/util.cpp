// vireo-img: shared helpers (messages, qemu-style sizes and option lists, progress bar, measure math).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "common/error.h"
#include "img/formats_cli.h"
#include "img/img.h"

namespace vireo::img {

namespace {
std::string g_prog = "vireo-img";
}

const std::string& prog() { return g_prog; }

void set_prog(const std::string& argv0) {
  auto slash = argv0.rfind('/');
  g_prog = slash == std::string::npos ? argv0 : argv0.substr(slash + 1);
  if (g_prog.empty()) g_prog = "vireo-img";
}

void report(const std::string& msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %s\n", g_prog.c_str(), msg.c_str());
}

void die(const std::string& msg, int status) {
  report(msg);
  throw Exit{status};
}

uint64_t parse_qemu_size(std::string_view text) {
  const std::string s(text);
  size_t i = 0;
  uint64_t whole = 0;
  bool digits = false;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    const uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (whole > (std::numeric_limits<uint64_t>::max() - d) / 10) throw Error("size out of range", ERANGE);
    whole = whole * 10 + d;
    ++i;
    digits = true;
  }
  double fraction = 0;
  bool has_fraction = false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    double scale = 0.1;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      fraction += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
      digits = true;
      has_fraction = true;
    }
  }
  if (!digits) throw Error("invalid size '" + s + "'", EINVAL);
  unsigned shift = 0;
  bool has_suffix = false;
  if (i < s.size()) {
    switch (s[i]) {
      case 'b': case 'B': shift = 0; break;
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      case 'p': case 'P': shift = 50; break;
      case 'e': case 'E': shift = 60; break;
      default: throw Error("invalid size '" + s + "'", EINVAL);
    }
    has_suffix = true;
    ++i;
  }
  if (i != s.size()) throw Error("invalid size '" + s + "'", EINVAL);
  if (has_fraction && (!has_suffix || shift == 0)) throw Error("invalid size '" + s + "'", EINVAL);
  if (shift && whole > (std::numeric_limits<uint64_t>::max() >> shift)) throw Error("size out of range", ERANGE);
  uint64_t value = whole << shift;
  if (has_fraction) {
    const double extra = fraction * std::ldexp(1.0, static_cast<int>(shift));
    value += static_cast<uint64_t>(extra);
  }
  if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw Error("size out of range", ERANGE);
  return value;
}

std::string size_to_str(uint64_t val) {
  static const char* suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int e = 0;
  std::frexp(static_cast<double>(val) / (1000.0 / 1024.0), &e);
  int i = (e - 1) / 10;
  if (i < 0) i = 0;
  if (i > 6) i = 6;
  const double div = std::ldexp(1.0, i * 10);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %sB", static_cast<double>(val) / div, suffixes[i]);
  return buf;
}

std::optional<std::string> OptionList::get(const std::string& key) const {
  std::optional<std::string> out;
  for (const auto& [k, v] : items)
    if (k == key) out = v;   // the last one wins, as in qemu
  return out;
}

void OptionList::set(const std::string& key, const std::string& value) {
  for (auto& [k, v] : items)
    if (k == key) {
      v = value;
      return;
    }
  items.emplace_back(key, value);
}

OptionList parse_option_list(std::string_view text) {
  OptionList out;
  // Split on single commas; ",," is a literal comma.
  std::vector<std::string> parts;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        cur += ',';
        ++i;
        continue;
      }
      parts.push_back(cur);
      cur.clear();
      continue;
    }
    cur += text[i];
  }
  parts.push_back(cur);
  for (const auto& p : parts) {
    if (p.empty()) continue;
    auto eq = p.find('=');
    if (eq == std::string::npos) {
      if (p == "help" || p == "?") {
        out.help = true;
        continue;
      }
      // qemu treats a bare name as name=on for bool options.
      out.items.emplace_back(p, "on");
      continue;
    }
    out.items.emplace_back(p.substr(0, eq), p.substr(eq + 1));
  }
  return out;
}

void merge_options(OptionList& into, const OptionList& more) {
  for (const auto& kv : more.items) into.items.push_back(kv);
  into.help = into.help || more.help;
}

bool parse_qemu_bool(const std::string& name, const std::string& value) {
  if (value == "on" || value == "yes" || value == "true") return true;
  if (value == "off" || value == "no" || value == "false") return false;
  fail("Parameter '{}' expects 'on' or 'off'", name);
}

block::CreateOptions create_options_from(const std::string& fmt, const OptionList& opts) {
  block::CreateOptions c;
  c.format = fmt;
  if (is_foreign_cli_format(fmt)) return foreign_create_options(fmt, opts);
  const bool qcow2 = fmt == "qcow2";
  if (fmt != "qcow2" && fmt != "raw") fail("Unknown file format '{}'", fmt);
  for (const auto& [k, v] : opts.items) {
    if (k == "size") {
      try {
        c.size = parse_qemu_size(v);
      } catch (const Error&) {
        fail("Parameter 'size' expects a non-negative number below 2^64\n"
             "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
             "and exabytes, respectively.");
      }
    } else if (k == "preallocation") {
      if (v != "off" && v != "metadata" && v != "falloc" && v != "full")
        fail("Invalid parameter '{}'", v);
      if (!qcow2 && v == "metadata") fail("Invalid parameter 'metadata'");
      c.preallocation = v;
    } else if (qcow2 && k == "backing_file") {
      c.backing_file = v;
    } else if (qcow2 && k == "backing_fmt") {
      c.backing_format = v;
    } else if (qcow2 && k == "cluster_size") {
      uint64_t cs = 0;
      try {
        cs = parse_qemu_size(v);
      } catch (const Error&) {
        fail("Parameter 'cluster_size' expects a non-negative number below 2^64");
      }
      if (cs > UINT32_MAX) fail("Cluster size must be a power of two between 512 and 2048k");
      c.cluster_size = static_cast<uint32_t>(cs);
    } else if (qcow2 && k == "compat") {
      if (v == "0.10" || v == "v2") c.compat = "0.10";
      else if (v == "1.1" || v == "v3") c.compat = "1.1";
      else fail("Invalid parameter '{}'", v);
    } else if (qcow2 && k == "lazy_refcounts") {
      c.lazy_refcounts = parse_qemu_bool(k, v);
    } else if (qcow2 && k == "refcount_bits") {
      char* end = nullptr;
      const unsigned long rb = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end != 0 || rb > UINT32_MAX) fail("Parameter 'refcount_bits' expects a number");
      c.refcount_bits = static_cast<uint32_t>(rb);
    } else if (qcow2 && k == "compression_type") {
      if (v != "zlib" && v != "zstd") fail("Invalid parameter '{}'", v);
      c.compression_type = v;
    } else if (qcow2 && k == "extended_l2") {
      c.extended_l2 = parse_qemu_bool(k, v);
    } else if (qcow2 && take_qcow2_encrypt_option(c, k, v)) {
      // encryption / encrypt.*: handled by the qcow2 driver (CreateOptions::extra)
    } else if (qcow2 && (k == "data_file" || k == "data_file_raw")) {
      fail("Option '{}' is not supported by {}", k, prog());
    } else {
      fail("Invalid parameter '{}'", k);
    }
  }
  return c;
}

void validate_create_options(const block::CreateOptions& c) {
  if (c.format == "qcow2") {
    const uint64_t cs = c.cluster_size;
    if (cs < 512 || cs > 2 * 1024 * 1024 || (cs & (cs - 1)) != 0)
      fail("Cluster size must be a power of two between 512 and 2048k");
    const uint64_t rb = c.refcount_bits;
    if (rb == 0 || rb > 64 || (rb & (rb - 1)) != 0)
      fail("Refcount width must be a power of two and may not exceed 64 bits");
    if (c.compat == "0.10") {
      if (c.lazy_refcounts)
        fail("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)");
      if (c.refcount_bits != 16)
        fail("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)");
      if (c.compression_type != "zlib")
        fail("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
      if (c.extended_l2)
        fail("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
    }
    if (c.extended_l2 && c.cluster_size < 16384)
      fail("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    if (!c.backing_file.empty() && c.preallocation != "off")
      fail("Backing file and preallocation can only be used at the same time if extended_l2 is on");
  }
}

std::string formatting_line(const std::string& filename, const block::CreateOptions& c,
                            const OptionList& given) {
  if (is_foreign_cli_format(c.format)) return foreign_formatting_line(filename, c, given);
  std::string s = fmt::format("Formatting '{}', fmt={}", filename, c.format);
  if (c.format == "qcow2") s += qcow2_encrypt_formatting(given);
  const auto onoff = [](bool b) { return b ? "on" : "off"; };
  if (c.format == "qcow2") {
    s += fmt::format(" cluster_size={} extended_l2={}", c.cluster_size, onoff(c.extended_l2));
    if (given.get("preallocation")) s += " preallocation=" + c.preallocation;
    s += fmt::format(" compression_type={} size={}", c.compression_type, c.size);
    if (!c.backing_file.empty()) s += " backing_file=" + c.backing_file;
    if (!c.backing_format.empty()) s += " backing_fmt=" + c.backing_format;
    if (given.get("compat")) s += " compat=" + c.compat;
    s += fmt::format(" lazy_refcounts={} refcount_bits={}", onoff(c.lazy_refcounts), c.refcount_bits);
  } else {
    s += fmt::format(" size={}", c.size);
    if (given.get("preallocation")) s += " preallocation=" + c.preallocation;
  }
  return s;
}

std::string option_help(const std::string& fmt) {
  if (is_foreign_cli_format(fmt)) return foreign_option_help(fmt);
  if (fmt == "raw")
    return "Supported raw options:\n"
           "  size=<size>            - Virtual disk size\n"
           "\n"
           "The protocol level may support further options.\n"
           "Specify the target filename to include those options.\n";
  return "Supported qcow2 options:\n"
         "  backing_file=<str>     - File name of a base image\n"
         "  backing_fmt=<str>      - Image format of the base image\n"
         "  cluster_size=<size>    - qcow2 cluster size\n"
         "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
         "  compression_type=<str> - Compression method used for image cluster compression\n"
         "  extended_l2=<bool (on/off)> - Extended L2 tables\n"
         "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
         "  preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)\n"
         "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
         "  size=<size>            - Virtual disk size\n"
         "\n"
         "The protocol level may support further options.\n"
         "Specify the target filename to include those options.\n";
}

std::unique_ptr<block::BlockImage> open_or_die(const std::string& path, const OpenSpec& spec) {
  block::OpenOptions o;
  o.format = spec.format;
  o.read_only = spec.read_only;
  o.force_share = spec.force_share && spec.read_only;
  o.open_backing = spec.open_backing;
  o.direct = spec.direct;
  o.key_secret = spec.key_secret;
  o.no_io = spec.no_io;
  if (spec.format != "" && spec.format != "raw" && spec.format != "qcow2" && !is_foreign_cli_format(spec.format))
    die(fmt::format("Could not open '{}': Unknown driver '{}'", path, spec.format));
  try {
    return block::open_image(path, o);
  } catch (const Error& e) {
    const bool self = ::access(path.c_str(), F_OK) != 0 || e.sys_errno() == EACCES || e.sys_errno() == EISDIR;
    const std::string& name = spec.opts_name.empty() ? path : spec.opts_name;
    if (self && (e.sys_errno() == ENOENT || e.sys_errno() == EACCES || e.sys_errno() == EISDIR))
      die(fmt::format("Could not open '{}': Could not open '{}': {}", name, path, std::strerror(e.sys_errno())));
    die(fmt::format("Could not open '{}': {}", name, e.what()));
  }
}

Progress::Progress(bool enabled) : enabled_(enabled) { update(0); }

Progress::~Progress() {
  if (enabled_ && !done_) std::printf("\n");
}

void Progress::update(double percent) {
  if (!enabled_ || done_) return;
  if (percent > 100) percent = 100;
  if (last_ >= 0 && percent - last_ < 1.0 && percent < 100) return;
  last_ = percent;
  std::printf("    (%3.2f/100%%)\r", percent);
  std::fflush(stdout);
}

void Progress::finish() {
  if (!enabled_ || done_) return;
  if (last_ < 100) {
    std::printf("    (%3.2f/100%%)\r", 100.0);
  }
  std::printf("\n");
  std::fflush(stdout);
  done_ = true;
}

uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_order) {
  const uint64_t blocks_per_table_cluster = cluster_size / 8;
  const uint64_t refcounts_per_block = cluster_size * 8 / (1ull << refcount_order);
  uint64_t table = 0, blocks = 0, n = 0, last = 0;
  do {
    last = n;
    blocks = (clusters + table + blocks + refcounts_per_block - 1) / refcounts_per_block;
    table = (blocks + blocks_per_table_cluster - 1) / blocks_per_table_cluster;
    n = clusters + blocks + table;
  } while (n != last);
  return (blocks + table) * cluster_size;
}

uint64_t qcow2_prealloc_size(uint64_t total_size, uint64_t cluster_size, unsigned refcount_order,
                             bool extended_l2) {
  const auto round_up = [](uint64_t v, uint64_t a) { return (v + a - 1) / a * a; };
  const uint64_t aligned = round_up(total_size, cluster_size);
  const uint64_t l2e = extended_l2 ? 16 : 8;
  uint64_t meta = cluster_size;
  uint64_t nl2e = aligned / cluster_size;
  nl2e = round_up(nl2e, cluster_size / l2e);
  meta += nl2e * l2e;
  uint64_t nl1e = nl2e * l2e / cluster_size;
  nl1e = round_up(nl1e, cluster_size / 8);
  meta += nl1e * 8;
  meta += qcow2_refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_order);
  return meta + aligned;
}

}  // namespace vireo::img
