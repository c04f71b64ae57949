// vireo-img create / info.
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "block/qcow2.h"
#include "common/error.h"
#include "img/cli.h"
#include "img/formats_cli.h"
#include "img/info_format.h"

namespace vireo::img {

using ojson = nlohmann::ordered_json;

int cmd_create(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "F:b:f:ho:qu", longopts);
  std::string fmt_name = "raw", backing, backing_fmt;
  bool quiet = false, unsafe = false;
  OptionList opts;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'F': backing_fmt = p.arg(); break;
      case 'b': backing = p.arg(); break;
      case 'f': fmt_name = p.arg(); break;
      case 'o': merge_options(opts, parse_option_list(p.arg())); break;
      case 'q': quiet = true; break;
      case 'u': unsafe = true; break;
      case 'j': add_object_or_die(p.arg()); break;
    }
  }
  if (opts.help) {
    if (fmt_name != "raw" && fmt_name != "qcow2" && !is_foreign_cli_format(fmt_name))
      die(fmt::format("Unknown file format '{}'", fmt_name));
    std::fputs(option_help(fmt_name).c_str(), stdout);
    return 0;
  }
  int i = p.index();
  if (i >= argc) usage_error("Expecting image file name");
  const std::string filename = argv[i++];
  std::optional<uint64_t> size;
  if (i < argc) {
    try {
      size = parse_qemu_size(argv[i++]);
    } catch (const Error& e) {
      if (e.sys_errno() == ERANGE) die("Image size must be less than 8 EiB!");
      die(fmt::format("Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n"
                      "{}: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
                      prog()));
    }
  }
  if (i < argc) usage_error(fmt::format("Unexpected argument: {}", argv[i]));
  if (fmt_name != "raw" && fmt_name != "qcow2" && !is_foreign_cli_format(fmt_name))
    die(fmt::format("Unknown file format '{}'", fmt_name));
  if (!backing.empty()) opts.set("backing_file", backing);
  if (!backing_fmt.empty()) opts.set("backing_fmt", backing_fmt);
  block::CreateOptions c;
  try {
    c = create_options_from(fmt_name, opts);
  } catch (const Error& e) {
    die(fmt::format("{}: {}", filename, e.what()));
  }
  if (size) c.size = *size;
  if (fmt_name == "raw" && opts.get("backing_file"))
    die(fmt::format("{}: Backing file not supported for file format 'raw'", filename));
  if (!c.backing_file.empty()) {
    const std::string resolved = block::resolve_backing_path(filename, c.backing_file);
    if (c.backing_format.empty()) {
      std::string msg = fmt::format("{}: Backing file specified without backing format", filename);
      try {
        msg += "\nDetected format of " + block::probe_format(resolved) + ".";
      } catch (const Error&) {
      }
      die(msg);
    }
    if (!unsafe || c.size == 0) {
      try {
        block::OpenOptions o;
        o.format = c.backing_format;
        o.read_only = true;
        o.force_share = true;
        auto b = block::open_image(resolved, o);
        if (c.size == 0) c.size = b->size();
      } catch (const Error& e) {
        die(fmt::format("{}: Could not open '{}': {}", filename, resolved, e.what()));
      }
    }
  } else if (!size && !opts.get("size")) {
    die(fmt::format("{}: Image creation needs a size parameter", filename));
  }
  if (!quiet) std::printf("%s\n", formatting_line(filename, c, opts).c_str());
  std::fflush(stdout);
  try {
    validate_create_options(c);
    block::create_image(filename, c);
  } catch (const Error& e) {
    die(fmt::format("{}: {}", filename, e.what()));
  }
  return 0;
}

namespace {

std::string human_date(uint32_t sec) {
  std::time_t t = sec;
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string snapshot_table(const std::vector<block::Qcow2Snapshot>& snaps) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
                "ICOUNT");
  out += line;
  for (const auto& s : snaps) {
    const uint64_t secs = s.vm_clock_nsec / 1000000000ull;
    char clock[64];
    std::snprintf(clock, sizeof clock, "%02d:%02d:%02d.%03d", static_cast<int>(secs / 3600),
                  static_cast<int>((secs / 60) % 60), static_cast<int>(secs % 60),
                  static_cast<int>((s.vm_clock_nsec / 1000000) % 1000));
    const std::string icount = s.icount ? std::to_string(*s.icount) : "";
    std::snprintf(line, sizeof line, "%-9s %-16s %8s%20s%13s%11s\n", s.id.c_str(), s.name.c_str(),
                  size_to_str(s.vm_state_size).c_str(), human_date(s.date_sec).c_str(), clock, icount.c_str());
    out += line;
  }
  return out;
}

nlohmann::ordered_json image_info_json(block::BlockImage& img, const std::string& name) {
  ojson j;
  auto* q = dynamic_cast<block::Qcow2Image*>(&img);
  std::optional<block::Qcow2Info> qi;
  if (q) qi = q->info();
  if (qi && !qi->backing_format.empty()) j["backing-filename-format"] = qi->backing_format;
  if (q) {
    auto snaps = q->snapshots();
    if (!snaps.empty()) {
      ojson arr = ojson::array();
      for (const auto& s : snaps) {
        ojson e;
        if (s.icount) e["icount"] = *s.icount;
        e["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000ull;
        e["name"] = s.name;
        e["date-sec"] = s.date_sec;
        e["date-nsec"] = s.date_nsec;
        e["vm-clock-sec"] = s.vm_clock_nsec / 1000000000ull;
        e["id"] = s.id;
        e["vm-state-size"] = s.vm_state_size;
        arr.push_back(e);
      }
      j["snapshots"] = arr;
    }
  }
  j["virtual-size"] = img.size();
  j["filename"] = name.empty() ? img.filename() : name;
  if (qi) j["cluster-size"] = qi->cluster_size;
  j["format"] = img.format();
  j["actual-size"] = img.file_allocated_bytes();
  if (qi) {
    ojson d;
    d["compat"] = qi->compat;
    d["compression-type"] = qi->compression_type;
    if (qi->version >= 3) d["lazy-refcounts"] = qi->lazy_refcounts;
    d["refcount-bits"] = qi->refcount_bits;
    if (!qi->encrypt_info.is_null()) d["encrypt"] = qi->encrypt_info;
    if (qi->version >= 3) {
      d["corrupt"] = qi->corrupt;
      d["extended-l2"] = qi->extended_l2;
    }
    j["format-specific"] = {{"type", "qcow2"}, {"data", d}};
    if (!qi->backing_file.empty()) {
      j["full-backing-filename"] = block::resolve_backing_path(img.filename(), qi->backing_file);
      j["backing-filename"] = qi->backing_file;
    }
  }
  if (qi && qi->encrypt) j["encrypted"] = true;
  j["dirty-flag"] = qi ? qi->dirty : false;
  add_image_details(j, img);
  return j;
}

std::string image_info_human(block::BlockImage& img, const std::string& name) {
  const ojson j = image_info_json(img, name);
  std::string out;
  out += "image: " + j["filename"].get<std::string>() + "\n";
  out += "file format: " + j["format"].get<std::string>() + "\n";
  const uint64_t vs = j["virtual-size"].get<uint64_t>();
  out += fmt::format("virtual size: {} ({} bytes)\n", size_to_str(vs), vs);
  out += "disk size: " + size_to_str(j["actual-size"].get<uint64_t>()) + "\n";
  if (j.contains("encrypted") && j["encrypted"].get<bool>()) out += "encrypted: yes\n";
  if (j.contains("cluster-size")) out += fmt::format("cluster_size: {}\n", j["cluster-size"].get<uint64_t>());
  if (j["dirty-flag"].get<bool>()) out += "cleanly shut down: no\n";
  if (j.contains("backing-filename")) {
    const auto bf = j["backing-filename"].get<std::string>();
    const auto full = j["full-backing-filename"].get<std::string>();
    out += "backing file: " + bf;
    if (bf != full) out += " (actual path: " + full + ")";
    out += "\n";
    if (j.contains("backing-filename-format"))
      out += "backing file format: " + j["backing-filename-format"].get<std::string>() + "\n";
  }
  if (auto* q = dynamic_cast<block::Qcow2Image*>(&img)) {
    auto snaps = q->snapshots();
    if (!snaps.empty()) out += "Snapshot list:\n" + snapshot_table(snaps);
  }
  if (j.contains("format-specific")) {
    out += "Format specific information:\n";
    out += qapi_human(j["format-specific"]["data"], 4);
  }
  return out;
}

int cmd_info(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"format", required_argument, nullptr, 'f'},
                                           {"output", required_argument, nullptr, 'O'},
                                           {"backing-chain", no_argument, nullptr, 'c'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "f:hU", longopts);
  OpenSpec spec;
  bool json = false, chain = false, image_opts = false;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': spec.format = p.arg(); break;
      case 'U': spec.force_share = true; break;
      case 'O': json = parse_output_format(p.arg()); break;
      case 'c': chain = true; break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': image_opts = true; break;
    }
  }
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  if (image_opts && !spec.format.empty()) die("--image-opts and --format are mutually exclusive");
  const std::string filename = image_opts ? apply_image_opts(argv[p.index()], spec) : argv[p.index()];
  spec.read_only = true;
  spec.no_io = true;
  spec.open_backing = chain;   // like qemu-img: a missing backing file only matters for --backing-chain
  auto img = open_or_die(filename, spec);
  std::vector<block::BlockImage*> images{img.get()};
  if (chain)
    for (auto* b = img->backing(); b; b = b->backing()) images.push_back(b);
  try {
    if (json) {
      if (chain) {
        ojson arr = ojson::array();
        for (auto* i : images) arr.push_back(image_info_json(*i, i == img.get() ? spec.display_name : ""));
        std::printf("%s\n", arr.dump(4).c_str());
      } else {
        std::printf("%s\n", image_info_json(*img, spec.display_name).dump(4).c_str());
      }
    } else {
      for (size_t k = 0; k < images.size(); ++k) {
        if (k) std::printf("\n");
        std::fputs(image_info_human(*images[k], k ? "" : spec.display_name).c_str(), stdout);
      }
    }
  } catch (const Error& e) {
    die(e.what());
  }
  return 0;
}

}  // namespace vireo::img
