// vireo-img convert: several worker threads (-m, qemu's coroutines) copy target-space chunks; data is read
// in parallel, zero blocks of -S bytes are skipped (or zeroed on a non-zero target), and writes are issued
// in chunk order unless -W (or -c, where allocation order does not matter and both cores compress).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "block/qcow2.h"
#include "common/error.h"
#include "common/fd.h"
#include "img/cli.h"
#include "img/formats_cli.h"
#include "img/convert_plan.h"

namespace vireo::img {

bool buffer_is_zero(const uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(p + i) & 7) != 0; ++i)
    if (p[i]) return false;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    if (v) return false;
  }
  for (; i < n; ++i)
    if (p[i]) return false;
  return true;
}

std::vector<Run> plan_runs(const std::vector<Segment>& segs, const uint8_t* buf, uint64_t chunk_off,
                           uint64_t chunk_len, uint64_t gran) {
  std::vector<Run> runs;
  auto push = [&](uint64_t off, uint64_t len, RunKind k) {
    if (!runs.empty() && runs.back().kind == k && runs.back().offset + runs.back().length == off)
      runs.back().length += len;
    else
      runs.push_back({off, len, k});
  };
  if (gran == 0) {   // -S 0: everything not left to the backing file is written as data
    for (const auto& s : segs) push(s.offset, s.length, s.kind == SegKind::Backing ? RunKind::Skip : RunKind::Data);
    return runs;
  }
  size_t si = 0;
  const uint64_t end = chunk_off + chunk_len;
  for (uint64_t b = chunk_off; b < end;) {
    const uint64_t bend = std::min(end, (b / gran + 1) * gran);
    // Classify [b, bend): all backing → skip; no data bytes and no backing → zero; else data.
    bool all_backing = true, any_backing = false, any_data_seg = false;
    while (si < segs.size() && segs[si].offset + segs[si].length <= b) ++si;
    for (size_t k = si; k < segs.size() && segs[k].offset < bend; ++k) {
      if (segs[k].kind == SegKind::Backing) any_backing = true;
      else all_backing = false;
      if (segs[k].kind == SegKind::Data) any_data_seg = true;
    }
    RunKind kind;
    if (all_backing) kind = RunKind::Skip;
    else if (!any_data_seg && !any_backing) kind = RunKind::Zero;
    else if (!any_backing && buffer_is_zero(buf + (b - chunk_off), bend - b)) kind = RunKind::Zero;
    else kind = RunKind::Data;
    push(b, bend - b, kind);
    b = bend;
  }
  return runs;
}

namespace {

struct Source {
  std::unique_ptr<block::BlockImage> img;
  uint64_t start = 0;   // offset in the concatenated (target) space
  std::string temp;     // snapshot copy to remove afterwards
};

struct SnapshotParam {
  std::optional<std::string> id, name;
};

SnapshotParam parse_snapshot_param(const std::string& s) {
  SnapshotParam out;
  if (s.rfind("snapshot.", 0) != 0) {
    out.name = s;
    return out;
  }
  for (const auto& [k, v] : parse_option_list(s).items) {
    if (k == "snapshot.id") out.id = v;
    else if (k == "snapshot.name") out.name = v;
    else die(fmt::format("Invalid parameter '{}'", k));
  }
  return out;
}

// A private copy of `path` reverted to the snapshot, next to the original (so relative backing names
// still resolve). The block layer has no read-only snapshot view, so this is how -l works.
std::string snapshot_copy(const std::string& path, const std::string& fmt_name, const SnapshotParam& sp) {
  std::string tmpl = path + ".vireo-snap-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back(0);
  UniqueFd out(::mkstemp(name.data()));
  if (!out) throw_errno("create temporary copy of " + path);
  const std::string tmp = name.data();
  try {
    UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("open " + path);
    struct stat st {};
    ::fstat(in.get(), &st);
    off_t left = st.st_size;
    while (left > 0) {
      ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, static_cast<size_t>(left), 0);
      if (n < 0) throw_errno("copy " + path);
      if (n == 0) break;
      left -= n;
    }
    block::OpenOptions o;
    o.format = fmt_name.empty() ? "qcow2" : fmt_name;
    o.take_locks = false;
    auto q = block::Qcow2Image::open(tmp, o);
    std::string target;
    for (const auto& s : q->snapshots()) {
      if (sp.id && s.id != *sp.id) continue;
      if (sp.name && s.name != *sp.name) continue;
      target = sp.name ? s.name : s.id;
      break;
    }
    if (target.empty()) {
      if (!sp.id && sp.name) {   // a bare name may be an id
        for (const auto& s : q->snapshots())
          if (s.id == *sp.name) target = s.id;
      }
      if (target.empty()) fail("Failed to load snapshot: Can't find snapshot");
    }
    q->snapshot_apply(target);
    q->flush();
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  return tmp;
}

struct Job {
  std::vector<Source>* sources;
  block::BlockImage* target;
  block::Qcow2Image* qtarget;
  uint64_t total;
  uint64_t chunk;
  uint64_t gran;            // sparse granularity in target space (0 = -S 0)
  bool compress;
  bool target_zero;         // target reads as zeroes where not written
  bool target_backing;      // target has a backing file: zero runs must not unmap, -B skips unallocated
  bool skip_backing;        // -B: leave areas unallocated in the source top to the target's backing file
  bool in_order;
};

// Segments of [off, off+len) in target space, from the sources' block status.
std::vector<Segment> segments_of(const Job& job, uint64_t off, uint64_t len) {
  std::vector<Segment> segs;
  const uint64_t end = off + len;
  for (auto& src : *job.sources) {
    const uint64_t sstart = src.start, send = src.start + src.img->size();
    if (send <= off || sstart >= end) continue;
    uint64_t pos = std::max(off, sstart);
    const uint64_t stop = std::min(end, send);
    while (pos < stop) {
      block::Extent e = src.img->block_status(pos - sstart, stop - pos);
      uint64_t l = std::min<uint64_t>(e.length, stop - pos);
      if (l == 0) l = stop - pos;   // defensive: never loop forever on a bad extent
      SegKind k;
      if (job.skip_backing && e.depth > 0) k = SegKind::Backing;
      else if (e.zero && !e.data) k = SegKind::Zero;
      else if (e.zero) k = SegKind::Zero;
      else k = SegKind::Data;
      if (!segs.empty() && segs.back().kind == k && segs.back().offset + segs.back().length == pos)
        segs.back().length += l;
      else
        segs.push_back({pos, l, k});
      pos += l;
    }
  }
  return segs;
}

void read_source(const Job& job, uint64_t off, uint8_t* buf, uint64_t len) {
  const uint64_t end = off + len;
  for (auto& src : *job.sources) {
    const uint64_t sstart = src.start, send = src.start + src.img->size();
    if (send <= off || sstart >= end) continue;
    const uint64_t a = std::max(off, sstart), b = std::min(end, send);
    try {
      src.img->read(a - sstart, std::span<uint8_t>(buf + (a - off), b - a));
    } catch (const Error& e) {
      die(fmt::format("error while reading at byte {}: {}", a, e.what()));
    }
  }
}

class Converter {
 public:
  Converter(Job job, int threads, bool progress) : job_(std::move(job)), threads_(threads), progress_(progress) {}

  void run() {
    nchunks_ = (job_.total + job_.chunk - 1) / job_.chunk;
    if (job_.in_order) finished_.assign(nchunks_, 0);
    std::vector<std::thread> ts;
    const int n = static_cast<int>(std::max<uint64_t>(1, std::min<uint64_t>(threads_, nchunks_)));
    for (int i = 0; i < n; ++i) ts.emplace_back([this] { worker(); });
    for (auto& t : ts) t.join();
    if (error_) std::rethrow_exception(error_);
    progress_.finish();
  }

 private:
  void worker() {
    std::vector<uint8_t> buf(job_.chunk);
    for (;;) {
      const uint64_t idx = next_.fetch_add(1);
      if (idx >= nchunks_ || failed_.load()) {
        // Release anybody waiting for our turn.
        if (idx < nchunks_) pass_turn(idx);
        return;
      }
      try {
        process(idx, buf);
      } catch (...) {
        {
          std::lock_guard g(mu_);
          if (!error_) error_ = std::current_exception();
          failed_ = true;
          turn_cv_.notify_all();
        }
        pass_turn(idx);
        return;
      }
    }
  }

  void wait_turn(uint64_t idx) {
    if (!job_.in_order) return;
    std::unique_lock l(mu_);
    turn_cv_.wait(l, [&] { return turn_ == idx || failed_.load(); });
    if (failed_.load() && turn_ != idx) throw Exit{1};
  }

  // Marks chunk idx finished; the turn moves past every finished chunk (chunks without writes finish
  // without waiting for their turn).
  void pass_turn(uint64_t idx) {
    if (!job_.in_order) return;
    std::lock_guard g(mu_);
    finished_[idx] = 1;
    const uint64_t before = turn_;
    while (turn_ < nchunks_ && finished_[turn_]) ++turn_;
    if (turn_ != before) turn_cv_.notify_all();
  }

  void write_runs(const std::vector<Run>& runs, const uint8_t* buf, uint64_t off) {
    for (const auto& r : runs) {
      if (r.kind == RunKind::Skip) continue;
      if (r.kind == RunKind::Zero) {
        if (job_.target_zero) continue;
        job_.target->write_zeroes(r.offset, r.length, !job_.target_backing);
        continue;
      }
      job_.target->write(r.offset, std::span<const uint8_t>(buf + (r.offset - off), r.length));
    }
  }

  void process(uint64_t idx, std::vector<uint8_t>& buf) {
    const uint64_t off = idx * job_.chunk;
    const uint64_t len = std::min(job_.chunk, job_.total - off);
    auto segs = segments_of(job_, off, len);
    const bool any_data = std::any_of(segs.begin(), segs.end(), [](const Segment& s) {
      return s.kind == SegKind::Data;
    });
    const bool any_backing = std::any_of(segs.begin(), segs.end(), [](const Segment& s) {
      return s.kind == SegKind::Backing;
    });
    if (any_data || (job_.gran == 0 && !job_.compress) || (job_.compress && any_backing)) {
      // Read everything not left to the backing file (zero segments are zeroes already).
      std::memset(buf.data(), 0, len);
      for (const auto& s : segs)
        if (s.kind != SegKind::Zero) read_source(job_, s.offset, buf.data() + (s.offset - off), s.length);
    } else if (job_.compress || job_.gran == 0) {
      std::memset(buf.data(), 0, len);   // (zero-only chunks otherwise never look at the buffer)
    }
    try {
      if (job_.compress) {
        const uint64_t cs = job_.qtarget->cluster_size();
        for (uint64_t c = off; c < off + len; c += cs) {
          const uint64_t clen = std::min(cs, off + len - c);
          const uint8_t* p = buf.data() + (c - off);
          bool all_backing = true;
          for (const auto& s : segs)
            if (s.offset < c + clen && s.offset + s.length > c && s.kind != SegKind::Backing) all_backing = false;
          if (all_backing) continue;
          if (buffer_is_zero(p, clen)) {
            if (!job_.target_zero) job_.target->write_zeroes(c, clen, !job_.target_backing);
            continue;
          }
          job_.qtarget->write_compressed(c, std::span<const uint8_t>(p, clen));
        }
      } else {
        auto runs = plan_runs(segs, buf.data(), off, len, job_.gran);
        const bool writes = std::any_of(runs.begin(), runs.end(), [&](const Run& r) {
          return r.kind == RunKind::Data || (r.kind == RunKind::Zero && !job_.target_zero);
        });
        if (writes) {
          wait_turn(idx);
          write_runs(runs, buf.data(), off);
        }
      }
    } catch (const Exit&) {
      throw;
    } catch (const Error& e) {
      die(fmt::format("error while writing at byte {}: {}", off, e.what()));
    }
    pass_turn(idx);
    const uint64_t done = done_.fetch_add(1) + 1;
    std::lock_guard g(progress_mu_);
    progress_.update(100.0 * static_cast<double>(done) / static_cast<double>(nchunks_));
  }

  Job job_;
  int threads_;
  Progress progress_;
  std::mutex progress_mu_;
  uint64_t nchunks_ = 0;
  std::atomic<uint64_t> next_{0}, done_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::condition_variable turn_cv_;
  uint64_t turn_ = 0;
  std::vector<uint8_t> finished_;
  std::exception_ptr error_;
};

}  // namespace

int cmd_convert(int argc, char** argv) {
  enum { OPT_TARGET_IS_ZERO = 256, OPT_OBJECT, OPT_IMAGE_OPTS, OPT_SALVAGE, OPT_BITMAPS, OPT_TARGET_IMAGE_OPTS };
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, OPT_OBJECT},
                                           {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
                                           {"target-image-opts", no_argument, nullptr, OPT_TARGET_IMAGE_OPTS},
                                           {"salvage", no_argument, nullptr, OPT_SALVAGE},
                                           {"target-is-zero", no_argument, nullptr, OPT_TARGET_IS_ZERO},
                                           {"bitmaps", no_argument, nullptr, OPT_BITMAPS},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", longopts);
  std::string fmt_name, out_fmt = "raw", backing, backing_fmt, snapshot;
  OptionList opts;
  bool compress = false, progress = false, quiet = false, no_create = false, target_is_zero = false, image_opts = false;
  bool out_of_order = false, force_share = false, cache_none = false;
  bool cache_unsafe = true;   // qemu-img convert's default target cache mode is "unsafe": no final flush
  uint64_t sparse = 4096;
  int threads = 8;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': fmt_name = p.arg(); break;
      case 'O': out_fmt = p.arg(); break;
      case 'B': backing = p.arg(); break;
      case 'F': backing_fmt = p.arg(); break;
      case 'c': compress = true; break;
      case 'C': break;
      case 'o': merge_options(opts, parse_option_list(p.arg())); break;
      case 'l': snapshot = p.arg(); break;
      case 'S': {
        uint64_t v = 0;
        bool ok = true;
        try {
          v = parse_qemu_size(p.arg());
        } catch (const Error&) {
          ok = false;
        }
        if (!ok || v % 512 != 0 || v > 16 * 1024 * 1024)
          die("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to "
              "16777216. Select 0 to disable sparse detection (fully allocates output).");
        sparse = v;
        break;
      }
      case 'p': progress = true; break;
      case 't':
        cache_none = std::strcmp(p.arg(), "none") == 0 || std::strcmp(p.arg(), "directsync") == 0;
        cache_unsafe = std::strcmp(p.arg(), "unsafe") == 0;
        break;
      case 'T': break;
      case 'q': quiet = true; break;
      case 'n': no_create = true; break;
      case 'm': {
        char* end = nullptr;
        const long v = std::strtol(p.arg(), &end, 10);
        if (*p.arg() == 0 || *end != 0 || v < 1 || v > 16)
          die("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
        threads = static_cast<int>(v);
        break;
      }
      case 'W': out_of_order = true; break;
      case 'U': force_share = true; break;
      case 'r': break;
      case OPT_TARGET_IS_ZERO: target_is_zero = true; break;
      case OPT_OBJECT: add_object_or_die(p.arg()); break;
      case OPT_BITMAPS: break;
      case OPT_IMAGE_OPTS: image_opts = true; break;
      case OPT_TARGET_IMAGE_OPTS: die("--target-image-opts is not supported by " + prog());
      case OPT_SALVAGE: die("--salvage is not supported by " + prog());
    }
  }
  if (quiet) progress = false;
  if (opts.help) {
    if (out_fmt != "raw" && out_fmt != "qcow2" && !is_foreign_cli_format(out_fmt))
      die(fmt::format("Unknown file format '{}'", out_fmt));
    std::fputs(option_help(out_fmt).c_str(), stdout);
    return 0;
  }
  const int nfiles = argc - p.index();
  if (nfiles < 2) usage_error("Must specify image file name");
  std::vector<std::string> inputs(argv + p.index(), argv + argc - 1);
  const std::string out_name = argv[argc - 1];
  if (target_is_zero && !no_create) die("--target-is-zero requires use of -n flag");
  if (out_fmt != "raw" && out_fmt != "qcow2" && !is_foreign_cli_format(out_fmt))
    die(fmt::format("Unknown file format '{}'", out_fmt));
  if (compress && out_fmt != "qcow2") die("Compression not supported for this file format");
  if (!snapshot.empty() && inputs.size() > 1) die("No support for concatenating multiple snapshot");
  if (!backing.empty() && no_create) die("Specifying backing image makes no sense when not creating a target image");

  std::vector<Source> sources;
  struct TempCleanup {
    std::vector<Source>* s;
    ~TempCleanup() {
      for (auto& x : *s) {
        x.img.reset();
        if (!x.temp.empty()) ::unlink(x.temp.c_str());
      }
    }
  } cleanup{&sources};
  uint64_t total = 0;
  if (image_opts && !fmt_name.empty()) die("--image-opts and --format are mutually exclusive");
  for (const auto& in : inputs) {
    Source s;
    OpenSpec spec;
    spec.format = fmt_name;
    // --image-opts: the source's driver, file and key secret come from the option string.
    std::string path = image_opts ? apply_image_opts(in, spec) : in;
    if (!snapshot.empty()) {
      try {
        s.temp = snapshot_copy(path, spec.format, parse_snapshot_param(snapshot));
      } catch (const Exit&) {
        throw;
      } catch (const Error& e) {
        die(fmt::format("Failed to load snapshot: {}", e.what()));
      }
      path = s.temp;
    }
    spec.read_only = true;
    spec.force_share = force_share || !s.temp.empty();
    if (!s.temp.empty()) {
      block::OpenOptions o;
      o.format = "qcow2";
      o.read_only = true;
      o.force_share = true;
      s.img = block::open_image(path, o);
    } else {
      s.img = open_or_die(path, spec);
    }
    s.start = total;
    total += s.img->size();
    sources.push_back(std::move(s));
  }

  bool fresh = false;
  if (!no_create) {
    if (!backing.empty()) opts.set("backing_file", backing);
    if (!backing_fmt.empty()) opts.set("backing_fmt", backing_fmt);
    block::CreateOptions c;
    try {
      c = create_options_from(out_fmt, opts);
      validate_create_options(c);
    } catch (const Error& e) {
      die(fmt::format("{}: {}", out_name, e.what()));
    }
    if (out_fmt == "raw" && opts.get("backing_file"))
      die(fmt::format("{}: Backing file not supported for file format 'raw'", out_name));
    if (!c.backing_file.empty() && c.backing_format.empty()) {
      try {
        c.backing_format = block::probe_format(block::resolve_backing_path(out_name, c.backing_file));
      } catch (const Error& e) {
        die(fmt::format("{}: Could not open '{}': {}", out_name, c.backing_file, e.what()));
      }
    }
    c.size = total;
    try {
      block::create_image(out_name, c);
    } catch (const Error& e) {
      die(fmt::format("{}: error while converting {}: {}", out_name, out_fmt, e.what()));
    }
    fresh = true;
  }
  OpenSpec tspec;
  tspec.format = out_fmt;
  tspec.read_only = false;
  tspec.direct = cache_none;
  // An encrypted target is opened with the secret it was created with (luks key-secret, qcow2
  // encrypt.key-secret), as qemu-img convert does.
  if (auto ks = opts.get(out_fmt == "qcow2" ? "encrypt.key-secret" : "key-secret")) tspec.key_secret = *ks;
  auto target = open_or_die(out_name, tspec);
  if (no_create && target->size() < total)
    die(fmt::format("Error: target image size is smaller than the source image ({} < {})", target->size(), total));
  Job job;
  job.sources = &sources;
  job.target = target.get();
  job.qtarget = dynamic_cast<block::Qcow2Image*>(target.get());
  job.total = total;
  job.compress = compress;
  job.target_backing = target->backing() != nullptr || !backing.empty();
  job.skip_backing = !backing.empty();
  job.target_zero = (fresh && !job.target_backing && target_has_zero_init(*target)) || target_is_zero;
  // vmdk grains are written whole (streamOptimized takes nothing else): detect zeroes per grain there.
  const uint64_t fcs = foreign_write_granularity(*target);
  const uint64_t cs = job.qtarget ? job.qtarget->cluster_size() : fcs ? fcs : 4096;
  job.chunk = std::max<uint64_t>(cs, 2 * 1024 * 1024);
  if (compress) job.chunk = std::max<uint64_t>(cs, 512 * 1024);   // whole clusters, in target space
  job.gran = sparse == 0 ? 0 : (job.qtarget || fcs ? std::max<uint64_t>(sparse, cs) : sparse);
  if (job.gran && job.chunk % job.gran) job.chunk = (job.chunk / job.gran + 1) * job.gran;
  job.in_order = !out_of_order && !compress;
  if (total > 0) {
    // -m counts qemu's coroutines; threads beyond the host's cores only add hand-offs (measured: 8 threads
    // on 2 cores are ~1.5x slower than 2), so use at most max(2, cores) of them.
    const int cores = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
    const int nthreads = std::min(threads, cores);
    Converter conv(job, compress ? std::max(nthreads, 2) : nthreads, progress);
    conv.run();
  } else {
    Progress pr(progress);
    pr.finish();
  }
  try {
    if (!cache_unsafe) target->flush();
    target.reset();   // writes back the engine's metadata caches
  } catch (const Error& e) {
    die(fmt::format("error while flushing {}: {}", out_name, e.what()));
  }
  return 0;
}

}  // namespace vireo::img
