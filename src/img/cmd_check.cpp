// vireo-img check: qemu-img check's texts, JSON and exit codes (0 clean, 1 check failed, 2 corruptions,
// 3 leaks only, 63 format without checks).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "block/qcow2.h"
#include "common/error.h"
#include "block/formats.h"
#include "img/check_format.h"
#include "img/cli.h"

namespace vireo::img {

std::string check_human(const block::CheckResult& r) {
  std::string out;
  if (r.corruptions_fixed || r.leaks_fixed)
    out += fmt::format(
        "The following inconsistencies were found and repaired:\n\n"
        "    {} leaked clusters\n"
        "    {} corruptions\n\n"
        "Double checking the fixed image now...\n",
        r.leaks_fixed, r.corruptions_fixed);
  if (!(r.corruptions || r.leaks || r.check_errors)) {
    out += "No errors were found on the image.\n";
  } else {
    if (r.corruptions)
      out += fmt::format(
          "\n{} errors were found on the image.\n"
          "Data may be corrupted, or further writes to the image may corrupt it.\n",
          r.corruptions);
    if (r.leaks)
      out += fmt::format(
          "\n{} leaked clusters were found on the image.\n"
          "This means waste of disk space, but no harm to data.\n",
          r.leaks);
    if (r.check_errors)
      out += fmt::format("\n{} internal errors have occurred during the check.\n", r.check_errors);
  }
  if (r.total_clusters != 0 && r.allocated_clusters != 0) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                  static_cast<unsigned long long>(r.allocated_clusters),
                  static_cast<unsigned long long>(r.total_clusters),
                  static_cast<double>(r.allocated_clusters) * 100.0 / static_cast<double>(r.total_clusters),
                  static_cast<double>(r.fragmented_clusters) * 100.0 / static_cast<double>(r.allocated_clusters),
                  static_cast<double>(r.compressed_clusters) * 100.0 / static_cast<double>(r.allocated_clusters));
    out += line;
  }
  if (r.image_end_offset) out += fmt::format("Image end offset: {}\n", r.image_end_offset);
  return out;
}

nlohmann::ordered_json check_json(const block::CheckResult& r, const std::string& filename,
                                  const std::string& format) {
  // qemu prints its QDict in hash order (checked against qemu-img 7.2 output).
  nlohmann::ordered_json j;
  if (r.image_end_offset) j["image-end-offset"] = r.image_end_offset;
  if (r.compressed_clusters) j["compressed-clusters"] = r.compressed_clusters;
  if (r.total_clusters) j["total-clusters"] = r.total_clusters;
  // (buckets of QEMU's tdb_hash modulo 512: corruptions 181, corruptions-fixed 203, check-errors 204,
  // leaks 246, leaks-fixed 290)
  if (r.corruptions) j["corruptions"] = r.corruptions;
  if (r.corruptions_fixed) j["corruptions-fixed"] = r.corruptions_fixed;
  j["check-errors"] = r.check_errors;
  if (r.leaks) j["leaks"] = r.leaks;
  if (r.leaks_fixed) j["leaks-fixed"] = r.leaks_fixed;
  if (r.allocated_clusters) j["allocated-clusters"] = r.allocated_clusters;
  j["filename"] = filename;
  j["format"] = format;
  if (r.fragmented_clusters) j["fragmented-clusters"] = r.fragmented_clusters;
  return j;
}

int check_exit_status(const block::CheckResult& r) {
  if (r.check_errors) return 1;
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}

int cmd_check(int argc, char** argv) {
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"format", required_argument, nullptr, 'f'},
                                           {"repair", required_argument, nullptr, 'r'},
                                           {"output", required_argument, nullptr, 'O'},
                                           {"object", required_argument, nullptr, 'j'},
                                           {"force-share", no_argument, nullptr, 'U'},
                                           {"image-opts", no_argument, nullptr, 'i'},
                                           {nullptr, 0, nullptr, 0}};
  OptParser p(argc, argv, "hf:r:T:qU", longopts);
  OpenSpec spec;
  bool json = false, quiet = false, image_opts = false;
  block::RepairMode mode = block::RepairMode::None;
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'f': spec.format = p.arg(); break;
      case 'U': spec.force_share = true; break;
      case 'q': quiet = true; break;
      case 'T': break;
      case 'j': add_object_or_die(p.arg()); break;
      case 'i': image_opts = true; break;
      case 'O': json = parse_output_format(p.arg()); break;
      case 'r':
        if (std::strcmp(p.arg(), "leaks") == 0) mode = block::RepairMode::Leaks;
        else if (std::strcmp(p.arg(), "all") == 0) mode = block::RepairMode::All;
        else usage_error(fmt::format("Unknown option value for -r (expecting 'leaks' or 'all'): {}", p.arg()));
        break;
    }
  }
  if (p.index() != argc - 1) usage_error("Expecting one image file name");
  // (qemu names the image by the argument as given, --image-opts strings included)
  const std::string filename = argv[p.index()];
  if (image_opts && !spec.format.empty()) die("--image-opts and --format are mutually exclusive");
  const std::string path = image_opts ? apply_image_opts(filename, spec) : filename;
  if (mode != block::RepairMode::None && spec.force_share)
    die("force-share=on can only be used with read-only images");
  spec.read_only = mode == block::RepairMode::None;
  spec.open_backing = false;
  auto img = open_or_die(path, spec);
  auto* q = dynamic_cast<block::Qcow2Image*>(img.get());
  auto* d = dynamic_cast<block::ImageDetails*>(img.get());
  if (!q && !(d && d->can_check())) die("This image format does not support checks", 63);
  block::CheckResult r;
  try {
    r = q ? q->check(mode) : d->check(mode);
  } catch (const Error& e) {
    if (e.sys_errno() == ENOTSUP) die("This image format does not support checks", 63);
    die(fmt::format("Check failed: {}", e.what()));
  }
  std::fflush(stdout);
  for (const auto& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
  if (json) {
    std::printf("%s\n", check_json(r, filename, img->format()).dump(4).c_str());
  } else if (!quiet) {
    std::fputs(check_human(r).c_str(), stdout);
  }
  const int status = check_exit_status(r);
  if (status == 1) die("Check failed");
  return status;
}

}  // namespace vireo::img
