// vireo-img snapshot / resize / rebase / commit / amend: operations that change one image in place.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "block/qcow2.h"
#include "common/error.h"
#include "img/cli.h"
#include "img/convert_plan.h"
#include "img/info_format.h"

namespace vireo::img {

namespace {

block::Qcow2Image* as_qcow2(block::BlockImage& img) { return dynamic_cast<block::Qcow2Image*>(&img); }

bool has_snapshot(block::Qcow2Image& q, const std::string& name_or_id) {
  for (const auto& s : q.snapshots())
    if (s.name == name_or_id || s.id == name_or_id) return true;
  return false;
}

}  // namespace

int cmd_snapshot(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "la:c:d:f:hqU", longopts);
  enum Action { NONE, LIST, APPLY, CREATE, DELETE } action = NONE;
  std::string name;
  OpenSpec spec;
  bool quiet = false;
  auto set_action = [&](Action a) {
    if (action != NONE) usage_error("Cannot mix '-l', '-a', '-c', '-d'");
    action = a;
  };
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'l': set_action(LIST); break;
      case 'a': set_action(APPLY); name = p.arg(); break;
      case 'c': set_action(CREATE); name = p.arg(); break;
      case 'd': set_action(DELETE); name = p.arg(); break;
      case 'f': spec.format = p.arg(); break;
      case 'q': quiet = true; break;
      case 'U': spec.force_share = true; break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': die("--image-opts is not supported by " + prog());
    }
  }
  (void)quiet;
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  const std::string filename = argv[p.index()];
  if (action == NONE) action = LIST;
  spec.read_only = action == LIST;
  spec.open_backing = false;
  auto img = open_or_die(filename, spec);
  auto* q = as_qcow2(*img);
  try {
    switch (action) {
      case LIST:
        if (q) {
          auto snaps = q->snapshots();
          if (!snaps.empty()) std::printf("Snapshot list:\n%s", snapshot_table(snaps).c_str());
        }
        break;
      case CREATE:
        if (!q) die(fmt::format("Could not create snapshot '{}': -95 (Operation not supported)", name));
        try {
          q->snapshot_create(name);
          q->flush();
        } catch (const Error& e) {
          die(fmt::format("Could not create snapshot '{}': {}", name, e.what()));
        }
        break;
      case APPLY:
        if (!q) die(fmt::format("Could not apply snapshot '{}': Operation not supported", name));
        if (!has_snapshot(*q, name))
          die(fmt::format("Could not apply snapshot '{}': Failed to load snapshot: No such file or directory", name));
        try {
          q->snapshot_apply(name);
          q->flush();
        } catch (const Error& e) {
          die(fmt::format("Could not apply snapshot '{}': {}", name, e.what()));
        }
        break;
      case DELETE:
        if (!q) die(fmt::format("Could not delete snapshot '{}': Operation not supported", name));
        if (!has_snapshot(*q, name)) die(fmt::format("Could not delete snapshot '{}': snapshot not found", name));
        try {
          q->snapshot_delete(name);
          q->flush();
        } catch (const Error& e) {
          die(fmt::format("Could not delete snapshot '{}': {}", name, e.what()));
        }
        break;
      case NONE: break;
    }
  } catch (const Error& e) {
    die(e.what());
  }
  return 0;
}

int cmd_resize(int argc, char** argv) {
  enum { OPT_SHRINK = 256, OPT_PREALLOC, OPT_OBJECT, OPT_IMAGE_OPTS };
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, OPT_OBJECT},
                                           {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
                                           {"preallocation", required_argument, nullptr, OPT_PREALLOC},
                                           {"shrink", no_argument, nullptr, OPT_SHRINK},
                                           {nullptr, 0, nullptr, 0}};
  // The size may start with '-': take it off before getopt sees it (as qemu-img does).
  if (argc < 3) usage_error("Not enough arguments");
  const std::string size_arg = argv[argc - 1];
  --argc;
  OptParser p(argc, argv, "f:hq", longopts);
  OpenSpec spec;
  bool quiet = false, shrink = false;
  std::string prealloc = "off";
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': spec.format = p.arg(); break;
      case 'q': quiet = true; break;
      case OPT_SHRINK: shrink = true; break;
      case OPT_PREALLOC: prealloc = p.arg(); break;
      case OPT_OBJECT: add_object_or_die(p.arg()); break;
      case OPT_IMAGE_OPTS: die("--image-opts is not supported by " + prog());
    }
  }
  if (p.index() != argc - 1) usage_error("Expecting image file name and size");
  const std::string filename = argv[p.index()];
  if (prealloc != "off") die(fmt::format("Unsupported preallocation mode '{}'", prealloc));
  int rel = 0;
  std::string num = size_arg;
  if (!num.empty() && (num[0] == '+' || num[0] == '-')) {
    rel = num[0] == '+' ? 1 : -1;
    num = num.substr(1);
  }
  uint64_t n = 0;
  try {
    n = parse_qemu_size(num);
  } catch (const Error&) {
    die("Invalid image size specified. Must be between 0 and 9223372036854775807.");
  }
  spec.read_only = false;
  spec.open_backing = false;
  auto img = open_or_die(filename, spec);
  const uint64_t cur = img->size();
  uint64_t target;
  if (rel > 0) target = cur + n;
  else if (rel < 0) {
    if (n > cur) die("New image size must be positive");
    target = cur - n;
  } else {
    target = n;
  }
  if (target == 0 && rel < 0) die("New image size must be positive");
  if (target < cur && !shrink) {
    report("Use the --shrink option to perform a shrink operation.");
    report("warning: Shrinking an image will delete all data beyond the shrunken image's end. Before "
           "performing such an operation, make sure there is no important data there.");
    throw Exit{1};
  }
  try {
    img->resize(target, shrink);
    img->flush();
  } catch (const Error& e) {
    die(e.what());
  }
  if (!quiet) std::printf("Image resized.\n");
  return 0;
}

int cmd_rebase(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:F:b:upt:T:qU", longopts);
  std::string fmt_name, backing_fmt;
  std::optional<std::string> backing;
  bool unsafe = false, progress = false, quiet = false, force_share = false;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': fmt_name = p.arg(); break;
      case 'F': backing_fmt = p.arg(); break;
      case 'b': backing = p.arg(); break;
      case 'u': unsafe = true; break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 'U': force_share = true; break;
      case 't': case 'T': break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': die("--image-opts is not supported by " + prog());
    }
  }
  if (quiet) progress = false;
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  if (!unsafe && !backing) usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
  const std::string filename = argv[p.index()];
  const std::string new_backing = backing.value_or("");
  if (new_backing.empty() && !backing_fmt.empty()) die("-F requires -b");
  OpenSpec spec;
  spec.format = fmt_name;
  spec.read_only = false;
  spec.open_backing = !unsafe;
  auto img = open_or_die(filename, spec);
  auto* q = as_qcow2(*img);
  if (!q) die(fmt::format("Could not change the backing file to '{}': Operation not supported", new_backing));
  std::string new_fmt = backing_fmt;
  if (!new_backing.empty() && new_fmt.empty()) {
    if (!unsafe)
      die(fmt::format("Could not change the backing file to '{}': backing format must be specified", new_backing));
    try {
      new_fmt = block::probe_format(block::resolve_backing_path(filename, new_backing));
    } catch (const Error&) {
      die(fmt::format("Could not change the backing file to '{}': backing format must be specified",
                      new_backing));
    }
  }
  if (!unsafe) {
    // Safe mode: wherever the image itself has no data, the content seen through the old backing chain
    // must stay the same; copy it into the image where the new backing file differs.
    std::unique_ptr<block::BlockImage> nb;
    if (!new_backing.empty()) {
      const std::string path = block::resolve_backing_path(filename, new_backing);
      try {
        block::OpenOptions o;
        o.format = new_fmt;
        o.read_only = true;
        o.force_share = true;
        nb = block::open_image(path, o);
      } catch (const Error& e) {
        die(fmt::format("Could not open new backing file '{}': {}", path, e.what()));
      }
    }
    const uint64_t size = img->size();
    const uint64_t cs = q->cluster_size();
    const uint64_t chunk = std::max<uint64_t>(cs, 1 << 20);
    std::vector<uint8_t> a(chunk), b(chunk);
    Progress pr(progress);
    try {
      for (uint64_t off = 0; off < size;) {
        const block::Extent e = img->block_status(off, std::min(chunk, size - off));
        uint64_t len = std::min<uint64_t>(std::max<uint64_t>(e.length, 1), size - off);
        if (e.depth == 0 && e.data && !e.zero) {   // the image's own data: unaffected
          off += len;
          continue;
        }
        len = std::min(len, chunk);
        img->read(off, std::span<uint8_t>(a.data(), len));
        std::memset(b.data(), 0, len);
        if (nb && off < nb->size()) {
          const uint64_t n = std::min(len, nb->size() - off);
          nb->read(off, std::span<uint8_t>(b.data(), n));
        }
        // Compare cluster by cluster (in image-offset alignment) and write the differing ones.
        for (uint64_t c = off; c < off + len;) {
          const uint64_t cend = std::min(off + len, (c / cs + 1) * cs);
          const size_t i = c - off, n = cend - c;
          if (std::memcmp(a.data() + i, b.data() + i, n) != 0) {
            if (buffer_is_zero(a.data() + i, n)) img->write_zeroes(c, n, false);
            else img->write(c, std::span<const uint8_t>(a.data() + i, n));
          }
          c = cend;
        }
        off += len;
        pr.update(100.0 * static_cast<double>(off) / static_cast<double>(size));
      }
      img->flush();
    } catch (const Error& e) {
      die(fmt::format("Could not rebase: {}", e.what()));
    }
    pr.finish();
  }
  try {
    q->set_backing(new_backing, new_backing.empty() ? "" : new_fmt);
    q->flush();
  } catch (const Error& e) {
    die(fmt::format("Could not change the backing file to '{}': {}", new_backing, e.what()));
  }
  (void)force_share;
  return 0;
}

int cmd_commit(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "f:ht:b:dpqr:", longopts);
  std::string fmt_name, base_name;
  bool drop = false, progress = false, quiet = false;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': fmt_name = p.arg(); break;
      case 'b': base_name = p.arg(); drop = true; break;   // -b implies -d
      case 'd': drop = true; break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 't': case 'r': break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': die("--image-opts is not supported by " + prog());
    }
  }
  if (quiet) progress = false;
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  const std::string filename = argv[p.index()];
  uint64_t top_size = 0;
  {
    // Read side: the whole chain, without locks (the writer below holds the base's write lock).
    OpenSpec rs;
    rs.format = fmt_name;
    rs.read_only = true;
    rs.force_share = true;
    auto top = open_or_die(filename, rs);
    top_size = top->size();
    if (!top->backing()) die("Image does not have a backing file");
    // Find the base: the direct backing file, or the chain member named by -b.
    int base_depth = 1;
    block::BlockImage* base = top->backing();
    if (!base_name.empty()) {
      base = nullptr;
      base_depth = 0;
      int d = 1;
      for (auto* b = top->backing(); b; b = b->backing(), ++d) {
        if (b->filename() == base_name ||
            std::filesystem::weakly_canonical(b->filename()) == std::filesystem::weakly_canonical(base_name)) {
          base = b;
          base_depth = d;
          break;
        }
      }
      if (!base) die(fmt::format("Did not find '{}' in the backing chain of '{}'", base_name, filename));
    }
    OpenSpec ws;
    ws.format = base->format();
    ws.read_only = false;
    ws.open_backing = true;
    const std::string base_path = base->filename();
    auto wbase = open_or_die(base_path, ws);
    Progress pr(progress);
    try {
      if (wbase->size() < top_size) wbase->resize(top_size, false);
      const uint64_t chunk = 1 << 20;
      std::vector<uint8_t> buf(chunk);
      for (uint64_t off = 0; off < top_size;) {
        const block::Extent e = top->block_status(off, std::min(chunk, top_size - off));
        const uint64_t len = std::min<uint64_t>(std::max<uint64_t>(e.length, 1), top_size - off);
        const bool above_base = e.depth < base_depth && (e.data || e.zero);
        // An area nobody allocated reports the deepest depth (or depth 0 with no data): skip it then.
        if (above_base && !(e.depth == 0 && !e.data && e.zero && top->backing() == nullptr)) {
          if (e.data && !e.zero) {
            top->read(off, std::span<uint8_t>(buf.data(), len));
            wbase->write(off, std::span<const uint8_t>(buf.data(), len));
          } else {
            wbase->write_zeroes(off, len, wbase->backing() == nullptr);
          }
        }
        off += len;
        pr.update(100.0 * static_cast<double>(off) / static_cast<double>(top_size));
      }
      wbase->flush();
    } catch (const Exit&) {
      throw;
    } catch (const Error& e) {
      die(fmt::format("Block job failed: {}", e.what()));
    }
    pr.finish();
  }
  if (!drop) {
    OpenSpec ts;
    ts.format = fmt_name;
    ts.read_only = false;
    ts.open_backing = false;
    auto top = open_or_die(filename, ts);
    if (auto* q = as_qcow2(*top)) {
      try {
        q->make_empty();
        q->flush();
      } catch (const Error& e) {
        die(fmt::format("Could not empty {}: {}", filename, e.what()));
      }
    }
  }
  if (!quiet) std::printf("Image committed.\n");
  return 0;
}

int cmd_amend(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {"force", no_argument, nullptr, 'x'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "ho:f:t:pq", longopts);
  std::string fmt_name;
  OptionList opts;
  bool have_o = false, progress = false, quiet = false;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'o': merge_options(opts, parse_option_list(p.arg())); have_o = true; break;
      case 'f': fmt_name = p.arg(); break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 't': case 'j': case 'x': break;
      case 'i': die("--image-opts is not supported by " + prog());
    }
  }
  if (quiet) progress = false;
  if (!have_o) usage_error("Must specify options (-o)");
  if (opts.help && p.index() >= argc) {
    std::fputs(option_help(fmt_name.empty() ? "qcow2" : fmt_name).c_str(), stdout);
    return 0;
  }
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  const std::string filename = argv[p.index()];
  OpenSpec spec;
  spec.format = fmt_name;
  spec.read_only = false;
  spec.open_backing = false;
  auto img = open_or_die(filename, spec);
  auto* q = as_qcow2(*img);
  if (!q) die(fmt::format("Format driver '{}' does not support option amendment", img->format()));
  if (opts.help) {
    std::fputs(option_help("qcow2").c_str(), stdout);
    return 0;
  }
  block::AmendOptions a;
  try {
    for (const auto& [k, v] : opts.items) {
      if (k == "compat") {
        if (v == "0.10" || v == "v2") a.compat = "0.10";
        else if (v == "1.1" || v == "v3") a.compat = "1.1";
        else fail("Invalid compatibility level: '{}'", v);
      } else if (k == "lazy_refcounts") {
        a.lazy_refcounts = parse_qemu_bool(k, v);
      } else if (k == "refcount_bits") {
        char* end = nullptr;
        const unsigned long rb = std::strtoul(v.c_str(), &end, 10);
        if (v.empty() || *end || rb == 0 || rb > 64 || (rb & (rb - 1)))
          fail("Refcount width must be a power of two and may not exceed 64 bits");
        a.refcount_bits = static_cast<uint32_t>(rb);
      } else if (k == "backing_file") {
        a.backing_file = v;
      } else if (k == "backing_fmt") {
        a.backing_format = v;
      } else if (k == "size") {
        a.size = parse_qemu_size(v);
      } else if (k == "cluster_size" || k == "compression_type" || k == "extended_l2" || k == "preallocation" ||
                 k == "data_file" || k == "encryption") {
        fail("Invalid parameter '{}'\nThis option is only supported for image creation", k);
      } else {
        fail("Invalid parameter '{}'", k);
      }
    }
  } catch (const Error& e) {
    die(e.what());
  }
  Progress pr(progress);
  try {
    q->amend(a);
    q->flush();
  } catch (const Error& e) {
    die(fmt::format("Error while amending options: {}", e.what()));
  }
  pr.finish();
  return 0;
}

}  // namespace vireo::img
