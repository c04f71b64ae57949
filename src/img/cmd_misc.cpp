// vireo-img compare / map / measure / dd / bench.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <map>

#include "block/formats.h"
#include "block/qcow2.h"
#include "common/error.h"
#include "common/fd.h"
#include "img/cli.h"
#include "img/convert_plan.h"

namespace vireo::img {

// ---------------------------------------------------------------------------------------------- compare

namespace {

// Offset (relative to the buffers) of the first differing 512-byte sector, or -1.
int64_t first_mismatch(const uint8_t* a, const uint8_t* b, uint64_t len) {
  for (uint64_t i = 0; i < len; i += 512) {
    const uint64_t n = std::min<uint64_t>(512, len - i);
    if (std::memcmp(a + i, b + i, n) != 0) return static_cast<int64_t>(i);
  }
  return -1;
}

int64_t first_nonzero_sector(const uint8_t* a, uint64_t len) {
  for (uint64_t i = 0; i < len; i += 512) {
    const uint64_t n = std::min<uint64_t>(512, len - i);
    if (!buffer_is_zero(a + i, n)) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace

int cmd_compare(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:F:T:pqsU", longopts);
  OpenSpec s1, s2;
  bool progress = false, quiet = false, strict = false, image_opts = false;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': s1.format = p.arg(); break;
      case 'F': s2.format = p.arg(); break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 's': strict = true; break;
      case 'U': s1.force_share = s2.force_share = true; break;
      case 'T': break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': image_opts = true; break;
    }
  }
  if (quiet) progress = false;
  if (p.index() != argc - 2) usage_error("Expecting two image file names");
  if (image_opts && (!s1.format.empty() || !s2.format.empty()))
    die("--image-opts and --format are mutually exclusive", 2);
  std::string f1 = argv[p.index()], f2 = argv[p.index() + 1];
  try {
    if (image_opts) {
      f1 = apply_image_opts(f1, s1);
      f2 = apply_image_opts(f2, s2);
    }
  } catch (const Exit&) {
    throw Exit{2};
  }
  std::unique_ptr<block::BlockImage> a, b;
  try {
    a = open_or_die(f1, s1);
    b = open_or_die(f2, s2);
  } catch (const Exit&) {
    throw Exit{2};
  }
  auto say = [&](const std::string& s) {
    if (!quiet) std::printf("%s\n", s.c_str());
  };
  const uint64_t sa = a->size(), sb = b->size();
  if (sa != sb) {
    if (strict) {
      say("Strict mode: Image size mismatch!");
      return 1;
    }
  }
  const uint64_t common = std::min(sa, sb), total = std::max(sa, sb);
  const uint64_t chunk = 1 << 20;
  std::vector<uint8_t> ba(chunk), bb(chunk);
  Progress pr(progress);
  try {
    for (uint64_t off = 0; off < common;) {
      const uint64_t want = std::min(chunk, common - off);
      const block::Extent ea = a->block_status(off, want);
      const block::Extent eb = b->block_status(off, want);
      uint64_t len = std::min({want, std::max<uint64_t>(ea.length, 512), std::max<uint64_t>(eb.length, 512)});
      len = std::min(len, common - off);
      if (strict && (ea.data != eb.data)) {
        say(fmt::format("Strict mode: Offset {} block status mismatch!", off));
        return 1;
      }
      if (!(ea.zero && !ea.data && eb.zero && !eb.data)) {
        a->read(off, std::span<uint8_t>(ba.data(), len));
        b->read(off, std::span<uint8_t>(bb.data(), len));
        const int64_t m = first_mismatch(ba.data(), bb.data(), len);
        if (m >= 0) {
          say(fmt::format("Content mismatch at offset {}!", off + static_cast<uint64_t>(m)));
          return 1;
        }
      }
      off += len;
      pr.update(100.0 * static_cast<double>(off) / static_cast<double>(total));
    }
    // As qemu: the size warning only once the common part compared equal.
    if (sa != sb) say("Warning: Image size mismatch!");
    block::BlockImage* big = sa > sb ? a.get() : b.get();
    for (uint64_t off = common; off < total;) {
      const uint64_t want = std::min(chunk, total - off);
      const block::Extent e = big->block_status(off, want);
      const uint64_t len = std::min(want, std::max<uint64_t>(e.length, 512));
      if (!(e.zero && !e.data)) {
        big->read(off, std::span<uint8_t>(ba.data(), len));
        const int64_t m = first_nonzero_sector(ba.data(), len);
        if (m >= 0) {
          say(fmt::format("Content mismatch at offset {}!", off + static_cast<uint64_t>(m)));
          return 1;
        }
      }
      off += len;
      pr.update(100.0 * static_cast<double>(off) / static_cast<double>(total));
    }
  } catch (const Error& e) {
    die(fmt::format("Error while reading: {}", e.what()), 2);
  }
  pr.finish();
  say("Images are identical.");
  return 0;
}

// -------------------------------------------------------------------------------------------------- map

namespace {

// qemu asks the host file too: allocated qcow2 data that sits in a hole of the image file (preallocated
// metadata, punched clusters) reads as zeroes and is reported "zero": true, "data": true. Splits `e`
// (a qcow2 data extent with a host offset in `file`) at the file's data/hole boundaries.
class HoleProbe {
 public:
  std::vector<block::Extent> refine(const block::Extent& e, const std::string& file) {
    if (!e.data || e.zero || !e.host_offset || e.compressed) return {e};
    auto it = fds_.find(file);
    if (it == fds_.end()) it = fds_.emplace(file, UniqueFd(::open(file.c_str(), O_RDONLY | O_CLOEXEC))).first;
    const int fd = it->second.get();
    if (fd < 0) return {e};
    std::vector<block::Extent> out;
    const uint64_t h0 = *e.host_offset, end = h0 + e.length;
    uint64_t pos = h0;
    auto emit = [&](uint64_t a, uint64_t b, bool hole) {
      block::Extent x = e;
      x.offset = e.offset + (a - h0);
      x.length = b - a;
      x.host_offset = a;
      x.zero = hole;
      out.push_back(x);
    };
    while (pos < end) {
      off_t d = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
      uint64_t data_at = d < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(d), end);
      if (d < 0 && errno != ENXIO) return {e};
      if (data_at > pos) {
        emit(pos, data_at, true);
        pos = data_at;
        continue;
      }
      off_t hl = ::lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
      uint64_t hole_at = hl < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hl), end);
      if (hole_at <= pos) hole_at = end;
      emit(pos, hole_at, false);
      pos = hole_at;
    }
    return out;
  }

 private:
  std::map<std::string, UniqueFd> fds_;
};

struct MapEntry {
  uint64_t start, length;
  int depth;
  bool present, zero, data;
  std::optional<uint64_t> offset;
  std::string file;
};

bool mergeable(const MapEntry& a, const MapEntry& b) {
  if (a.depth != b.depth || a.present != b.present || a.zero != b.zero || a.data != b.data) return false;
  if (a.offset.has_value() != b.offset.has_value()) return false;
  if (a.offset && *a.offset + a.length != *b.offset) return false;
  return a.file == b.file;
}

}  // namespace

int cmd_map(int argc, char** argv) {
  enum { OPT_OUTPUT = 256, OPT_START, OPT_MAXLEN, OPT_OBJECT, OPT_IMAGE_OPTS };
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"format", required_argument, nullptr, 'f'},
                                           {"output", required_argument, nullptr, OPT_OUTPUT},
                                           {"object", required_argument, nullptr, OPT_OBJECT},
                                           {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {"start-offset", required_argument, nullptr, OPT_START},
                                           {"max-length", required_argument, nullptr, OPT_MAXLEN},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:U", longopts);
  OpenSpec spec;
  bool json = false, image_opts = false;
  uint64_t start = 0;
  std::optional<uint64_t> max_len;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': spec.format = p.arg(); break;
      case 'U': spec.force_share = true; break;
      case OPT_OUTPUT: json = parse_output_format(p.arg()); break;
      case OPT_START:
        try {
          start = parse_qemu_size(p.arg());
        } catch (const Error&) {
          die(fmt::format("Invalid start offset specified! You may use k, M, G, T, P or E suffixes for "));
        }
        break;
      case OPT_MAXLEN:
        try {
          max_len = parse_qemu_size(p.arg());
        } catch (const Error&) {
          die("Invalid length specified! You may use k, M, G, T, P or E suffixes for ");
        }
        break;
      case OPT_OBJECT: add_object_or_die(p.arg()); break;
      case OPT_IMAGE_OPTS: image_opts = true; break;
    }
  }
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  if (image_opts && !spec.format.empty()) die("--image-opts and --format are mutually exclusive");
  const std::string filename = image_opts ? apply_image_opts(argv[p.index()], spec) : argv[p.index()];
  auto img = open_or_die(filename, spec);
  const uint64_t size = img->size();
  uint64_t end = size;
  if (max_len) end = std::min(size, start + *max_len);
  std::vector<block::BlockImage*> chain;
  for (auto* b = img.get(); b; b = b->backing()) chain.push_back(b);
  const bool raw = img->format() == "raw";
  std::vector<MapEntry> out;
  HoleProbe probe;
  try {
    for (uint64_t off = start; off < end;) {
      const block::Extent e0 = img->block_status(off, end - off);
      const uint64_t len0 = std::min<uint64_t>(std::max<uint64_t>(e0.length, 1), end - off);
      const size_t d0 = static_cast<size_t>(std::max(0, e0.depth));
      block::Extent clipped = e0;
      clipped.length = len0;
      std::vector<block::Extent> parts{clipped};
      if (d0 < chain.size() && chain[d0]->format() == "qcow2") parts = probe.refine(clipped, chain[d0]->filename());
     for (const auto& e : parts) {
      const uint64_t len = e.length;
      off = e.offset;
      MapEntry m;
      m.start = off;
      m.length = len;
      m.depth = e.depth;
      m.zero = e.zero;
      m.data = e.data;
      // "present": some layer holds the range; zero clusters count (qemu marks them allocated), also in the
      // bottom image and in encrypted images (whose clusters report no host offset).
      m.present = raw || e.data || e.allocated || (e.zero && e.depth < static_cast<int>(chain.size()) - 1) ||
                  (e.zero && e.host_offset.has_value());
      if (const size_t dd = static_cast<size_t>(std::max(0, e.depth));
          dd < chain.size() && dynamic_cast<block::ImageDetails*>(chain[dd]))
        m.present = e.allocated;   // formats of block/formats.h report qemu's "present" exactly
      if (raw) m.offset = off;
      else if (e.host_offset) m.offset = e.host_offset;
      const size_t d = static_cast<size_t>(std::max(0, e.depth));
      m.file = d < chain.size() ? chain[d]->filename() : filename;
      if (!e.host_file.empty()) m.file = e.host_file;   // vmdk extents live in their own files
      if (!out.empty() && mergeable(out.back(), m)) out.back().length += len;
      else out.push_back(m);
      off += len;
     }
    }
  } catch (const Error& e) {
    die(e.what());
  }
  if (json) {
    std::printf("[");
    for (size_t i = 0; i < out.size(); ++i) {
      const auto& m = out[i];
      if (i) std::printf(",\n");
      std::printf("{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, \"zero\": %s, "
                  "\"data\": %s",
                  static_cast<unsigned long long>(m.start), static_cast<unsigned long long>(m.length), m.depth,
                  m.present ? "true" : "false", m.zero ? "true" : "false", m.data ? "true" : "false");
      if (m.offset) std::printf(", \"offset\": %llu", static_cast<unsigned long long>(*m.offset));
      std::printf("}");
    }
    std::printf("]\n");
  } else {
    std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    for (const auto& m : out) {
      if (m.data && !m.offset) die("File contains external, encrypted or compressed clusters.");
      if (!m.data || m.zero || !m.offset) continue;
      std::printf("%#-16llx%#-16llx%#-16llx%s\n", static_cast<unsigned long long>(m.start),
                  static_cast<unsigned long long>(m.length), static_cast<unsigned long long>(*m.offset),
                  m.file.c_str());
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------- measure

int cmd_measure(int argc, char** argv) {
  enum { OPT_OUTPUT = 256, OPT_SIZE, OPT_OBJECT, OPT_IMAGE_OPTS };
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
                                           {"object", required_argument, nullptr, OPT_OBJECT},
                                           {"output", required_argument, nullptr, OPT_OUTPUT},
                                           {"size", required_argument, nullptr, OPT_SIZE},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:O:o:l:U", longopts);
  OpenSpec spec;
  std::string out_fmt = "raw", snapshot;
  OptionList opts;
  bool json = false, image_opts = false;
  std::optional<uint64_t> size;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': spec.format = p.arg(); break;
      case 'O': out_fmt = p.arg(); break;
      case 'o': merge_options(opts, parse_option_list(p.arg())); break;
      case 'l': snapshot = p.arg(); break;
      case 'U': spec.force_share = true; break;
      case OPT_OUTPUT: json = parse_output_format(p.arg()); break;
      case OPT_SIZE:
        try {
          size = parse_qemu_size(p.arg());
        } catch (const Error&) {
          die("Invalid size specified. You may use k, M, G, T, P or E suffixes for");
        }
        break;
      case OPT_OBJECT: add_object_or_die(p.arg()); break;
      case OPT_IMAGE_OPTS: image_opts = true; break;
    }
  }
  const int nfiles = argc - p.index();
  if (nfiles > 1) die(fmt::format("At most one filename argument is allowed."));
  if (nfiles == 1 && size) die("--size N cannot be used together with a filename.");
  if (nfiles == 0 && !size) die("Either --size N or one filename must be specified.");
  if (!snapshot.empty()) die("--snapshot (-l) is not supported by measure in " + prog());
  if (out_fmt != "raw" && out_fmt != "qcow2") die(fmt::format("Unknown file format '{}'", out_fmt));
  block::CreateOptions c;
  try {
    c = create_options_from(out_fmt, opts);
    validate_create_options(c);
  } catch (const Error& e) {
    die(e.what());
  }
  std::unique_ptr<block::BlockImage> src;
  uint64_t vsize = size.value_or(0);
  if (nfiles == 1) {
    if (image_opts && !spec.format.empty()) die("--image-opts and --format are mutually exclusive");
    const std::string path = image_opts ? apply_image_opts(argv[p.index()], spec) : argv[p.index()];
    src = open_or_die(path, spec);
    vsize = src->size();
  }
  if (opts.get("size")) vsize = c.size;
  uint64_t required = 0, full = 0;
  bool bitmaps = false;
  try {
    if (out_fmt == "raw") {
      required = full = (vsize + 511) / 512 * 512;
    } else {
      const uint64_t cs = c.cluster_size;
      unsigned order = 0;
      while ((1u << order) < c.refcount_bits) ++order;
      const uint64_t vs = (vsize + cs - 1) / cs * cs;
      uint64_t data = 0;
      if (src) {
        auto* sq = dynamic_cast<block::Qcow2Image*>(src.get());
        bitmaps = sq && sq->info().version >= 3;
        const uint64_t ssize = src->size();
        HoleProbe probe;
        std::vector<block::BlockImage*> chain;
        for (auto* b = src.get(); b; b = b->backing()) chain.push_back(b);
        std::vector<block::Extent> pending;
        for (uint64_t off = 0; off < ssize;) {
          block::Extent e;
          if (!pending.empty()) {
            e = pending.front();
            pending.erase(pending.begin());
          } else {
            e = src->block_status(off, ssize - off);
            e.length = std::min<uint64_t>(std::max<uint64_t>(e.length, 1), ssize - off);
            const size_t d = static_cast<size_t>(std::max(0, e.depth));
            if (d < chain.size() && chain[d]->format() == "qcow2") {
              pending = probe.refine(e, chain[d]->filename());
              e = pending.front();
              pending.erase(pending.begin());
            }
          }
          if (e.offset != off) {   // defensive: resynchronise on unexpected extents
            pending.clear();
            continue;
          }
          uint64_t pnum = e.length;
          if (e.data && !e.zero) {
            pnum = (off + pnum + cs - 1) / cs * cs - off;
            data += off % cs + pnum;
            pending.clear();   // the rounded-up step may skip into them
          }
          off += pnum;
        }
      }
      full = qcow2_prealloc_size(vs, cs, order, c.extended_l2);
      required = full - vs + data;
      if (c.preallocation == "full" || c.preallocation == "falloc") required = full;
    }
  } catch (const Error& e) {
    die(e.what());
  }
  if (json) {
    nlohmann::ordered_json j;
    if (bitmaps) j["bitmaps"] = 0;
    j["required"] = required;
    j["fully-allocated"] = full;
    std::printf("%s\n", j.dump(4).c_str());
  } else {
    std::printf("required size: %llu\nfully allocated size: %llu\n", static_cast<unsigned long long>(required),
                static_cast<unsigned long long>(full));
    if (bitmaps) std::printf("bitmaps size: 0\n");
  }
  return 0;
}

// --------------------------------------------------------------------------------------------------- dd

int cmd_dd(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:O:U", longopts);
  OpenSpec spec;
  std::string out_fmt = "raw";
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': spec.format = p.arg(); break;
      case 'O': out_fmt = p.arg(); break;
      case 'U': spec.force_share = true; break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': die("--image-opts is not supported by " + prog());
    }
  }
  uint64_t bs = 512;
  std::optional<uint64_t> count;
  uint64_t skip = 0;
  std::string in, out;
  for (int i = p.index(); i < argc; ++i) {
    const std::string a = argv[i];
    const auto eq = a.find('=');
    if (eq == std::string::npos) die(fmt::format("unrecognized operand {}", a));
    if (a.substr(0, eq) != "bs" && a.substr(0, eq) != "count" && a.substr(0, eq) != "skip" &&
        a.substr(0, eq) != "if" && a.substr(0, eq) != "of")
      die(fmt::format("unrecognized operand {}", a.substr(0, eq)));
    const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
    auto num = [&](bool allow_suffix) {
      try {
        if (allow_suffix) return parse_qemu_size(v);
        char* end = nullptr;
        const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || *end) throw Error("bad");
        return static_cast<uint64_t>(n);
      } catch (const Error&) {
        die(fmt::format("invalid number: '{}'", v));
      }
    };
    if (k == "bs") {
      bs = num(true);
      if (bs == 0 || bs > (1ull << 30)) die(fmt::format("invalid number: '{}'", v));
    } else if (k == "count") {
      count = num(false);
    } else if (k == "skip") {
      skip = num(false);
    } else if (k == "if") {
      in = v;
    } else if (k == "of") {
      out = v;
    } else {
      die(fmt::format("unrecognized operand {}", a));
    }
  }
  if (in.empty() || out.empty()) die("Must specify both input and output files");
  if (out_fmt != "raw" && out_fmt != "qcow2") die(fmt::format("Unknown file format '{}'", out_fmt));
  auto src = open_or_die(in, spec);
  const uint64_t isize = src->size();
  if (skip && (skip > UINT64_MAX / bs || isize < skip * bs)) die(fmt::format("{}: cannot skip to specified offset", in));
  uint64_t osize = isize - skip * bs;
  if (count && *count <= osize / bs) osize = std::min(osize, *count * bs);
  block::CreateOptions c;
  c.format = out_fmt;
  c.size = osize;
  try {
    block::create_image(out, c);
  } catch (const Error& e) {
    die(fmt::format("{}: error while creating output image: {}", out, e.what()));
  }
  OpenSpec ospec;
  ospec.format = out_fmt;
  ospec.read_only = false;
  auto dst = open_or_die(out, ospec);
  std::vector<uint8_t> buf(bs);
  try {
    for (uint64_t pos = 0; pos < osize;) {
      const uint64_t n = std::min(bs, osize - pos);
      src->read(skip * bs + pos, std::span<uint8_t>(buf.data(), n));
      if (!buffer_is_zero(buf.data(), n)) dst->write(pos, std::span<const uint8_t>(buf.data(), n));
      pos += n;
    }
    dst->flush();
  } catch (const Error& e) {
    die(e.what());
  }
  return 0;
}

// ------------------------------------------------------------------------------------------------ bench

int cmd_bench(int argc, char** argv) {
  enum { OPT_FLUSH = 256, OPT_PATTERN, OPT_NO_DRAIN, OPT_OBJECT, OPT_IMAGE_OPTS };
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"flush-interval", required_argument, nullptr, OPT_FLUSH},
                                           {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
                                           {"pattern", required_argument, nullptr, OPT_PATTERN},
                                           {"no-drain", no_argument, nullptr, OPT_NO_DRAIN},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {"object", required_argument, nullptr, OPT_OBJECT},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hc:d:f:ni:o:qs:S:t:wU", longopts);
  OpenSpec spec;
  uint64_t count = 75000, depth = 64, bufsize = 4096, offset = 0, flush_interval = 0;
  std::optional<uint64_t> step;
  bool write = false, quiet = false, drain = true, cache_none = false;
  int pattern = 0;
  auto num = [&](const char* what, bool suffix) -> uint64_t {
    try {
      if (suffix) return parse_qemu_size(p.arg());
      char* end = nullptr;
      const long long v = std::strtoll(p.arg(), &end, 0);
      if (!*p.arg() || *end || v < 0) throw Error("bad");
      return static_cast<uint64_t>(v);
    } catch (const Error&) {
      die(fmt::format("Invalid {} specified", what));
    }
  };
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'c': count = num("request count", false); if (!count) die("Invalid request count specified"); break;
      case 'd': depth = num("queue depth", false); if (!depth) die("Invalid queue depth specified"); break;
      case 'f': spec.format = p.arg(); break;
      case 'n': cache_none = true; break;
      case 'i': break;
      case 'o': offset = num("offset", true); break;
      case 'q': quiet = true; break;
      case 's': bufsize = num("buffer size", true); if (!bufsize || bufsize > (1u << 30)) die("Invalid buffer size specified"); break;
      case 'S': step = num("step size", true); break;
      case 't': cache_none = std::strcmp(p.arg(), "none") == 0; break;
      case 'w': write = true; break;
      case 'U': spec.force_share = true; break;
      case OPT_FLUSH: flush_interval = num("flush interval", false); break;
      case OPT_PATTERN: pattern = static_cast<int>(num("pattern byte", false)); if (pattern > 0xff) die("Invalid pattern byte specified"); break;
      case OPT_NO_DRAIN: drain = false; break;
      case OPT_OBJECT: add_object_or_die(p.arg()); break;
      case OPT_IMAGE_OPTS: die("--image-opts is not supported by " + prog());
    }
  }
  (void)drain;
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  if (flush_interval && !write) die("--flush-interval is only available in write tests");
  const std::string filename = argv[p.index()];
  spec.read_only = !write;
  spec.direct = cache_none;
  auto img = open_or_die(filename, spec);
  const uint64_t st = step.value_or(bufsize);
  const uint64_t size = img->size();
  if (!quiet) {
    std::printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size "
                "%llu)\n",
                static_cast<unsigned long long>(count), write ? "write" : "read",
                static_cast<unsigned long long>(bufsize), static_cast<unsigned long long>(depth),
                static_cast<unsigned long long>(offset), static_cast<unsigned long long>(st));
    if (flush_interval)
      std::printf("Sending flush every %llu requests\n", static_cast<unsigned long long>(flush_interval));
    std::fflush(stdout);
  }
  if (bufsize > size) die("Buffer size is larger than the image");
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string err;
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t nthreads = std::min<uint64_t>({depth, 16, count});
  std::vector<std::thread> ts;
  for (uint64_t t = 0; t < nthreads; ++t) {
    ts.emplace_back([&] {
      std::vector<uint8_t> buf(bufsize, static_cast<uint8_t>(pattern));
      for (;;) {
        const uint64_t i = next.fetch_add(1);
        if (i >= count || failed) return;
        uint64_t off = offset + i * st;
        const uint64_t span = size - bufsize;
        off = span ? off % span : 0;
        try {
          if (write) {
            img->write(off, std::span<const uint8_t>(buf.data(), bufsize));
            if (flush_interval && (i + 1) % flush_interval == 0) img->flush();
          } else {
            img->read(off, std::span<uint8_t>(buf.data(), bufsize));
          }
        } catch (const Error& e) {
          std::lock_guard g(err_mu);
          if (err.empty()) err = fmt::format("Failed request: {}", e.what());
          failed = true;
          return;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  if (!err.empty()) die(err);
  if (write) {
    try {
      img->flush();
    } catch (const Error& e) {
      die(e.what());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!quiet) std::printf("Run completed in %3.3f seconds.\n", secs);
  return 0;
}

}  // namespace vireo::img
