#include "block/block.h"

#include <cstring>
#include <filesystem>

#include "block/file.h"
#include "block/formats.h"
#include "block/qcow2.h"
#include "block/raw.h"
#include "common/error.h"

namespace vireo::block {

BlockImage::~BlockImage() = default;

std::string probe_format(const std::string& path) {
  HostFile f(path, true, false);
  uint8_t head[512] = {};
  const uint64_t len = f.length();
  f.pread_full(0, head);
  if (std::memcmp(head, "QFI\xfb", 4) == 0) return "qcow2";
  if (auto fmt = probe_foreign(std::span<const uint8_t>(head, std::min<uint64_t>(len, sizeof head)))) return *fmt;
  return "raw";
}

std::unique_ptr<BlockImage> open_image(const std::string& path, const OpenOptions& opts) {
  if (opts.force_share && !opts.read_only)
    fail("force-share=on can only be used with read-only images");
  std::string fmt_name = opts.format.empty() ? probe_format(path) : opts.format;
  if (fmt_name == "raw") return RawImage::open(path, opts);
  if (fmt_name == "qcow2") return Qcow2Image::open(path, opts);
  if (is_foreign_format(fmt_name)) return open_foreign(fmt_name, path, opts);
  fail("Unknown driver '{}'", fmt_name);
}

void create_qcow2(const std::string& path, const CreateOptions& opts);  // qcow2.cpp

void create_image(const std::string& path, const CreateOptions& opts) {
  if (opts.format == "raw") {
    if (!opts.backing_file.empty()) fail("'raw' does not support backing files");
    RawImage::create(path, opts);
    return;
  }
  if (opts.format == "qcow2") {
    create_qcow2(path, opts);
    return;
  }
  if (is_foreign_format(opts.format)) {
    create_foreign(path, opts);
    return;
  }
  fail("Unknown file format '{}'", opts.format);
}

std::string resolve_backing_path(const std::string& image_path, const std::string& backing_name) {
  if (backing_name.empty() || backing_name[0] == '/') return backing_name;
  // qemu: protocol-prefixed names ("nbd:...", "json:{...}") are not files; we only support files.
  auto slash = image_path.rfind('/');
  if (slash == std::string::npos) return backing_name;
  return image_path.substr(0, slash + 1) + backing_name;
}

}  // namespace vireo::block
