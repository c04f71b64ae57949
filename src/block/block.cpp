#include "block/block.h"

#include <algorithm>
#include <cstring>
#include <vector>
#include <filesystem>

#include "block/file.h"
#include "block/format.h"
#include "block/qcow2.h"
#include "block/raw.h"
#include "common/error.h"

namespace vireo::block {

BlockImage::~BlockImage() = default;

std::string probe_format(const std::string& path) {
  HostFile f(path, true, false);
  std::vector<uint8_t> head(kProbeBytes, 0);
  f.pread_full(0, head);
  const uint64_t len = f.length();
  return probe_driver(std::span<const uint8_t>(head.data(), std::min<uint64_t>(len, head.size())), path).name;
}

std::unique_ptr<BlockImage> open_image(const std::string& path, const OpenOptions& opts) {
  if (opts.force_share && !opts.read_only)
    fail("force-share=on can only be used with read-only images");
  std::string fmt_name = opts.format.empty() ? probe_format(path) : opts.format;
  const FormatDriver* d = find_format(fmt_name);
  if (!d) fail("Unknown driver '{}'", fmt_name);
  OpenContext ctx;
  return d->open(path, opts, ctx);
}

void create_image(const std::string& path, const CreateOptions& opts) {
  const FormatDriver* d = find_format(opts.format);
  if (!d || !d->create) fail("Unknown file format '{}'", opts.format);
  d->create(path, opts);
}

std::string resolve_backing_path(const std::string& image_path, const std::string& backing_name) {
  if (backing_name.empty() || backing_name[0] == '/') return backing_name;
  // qemu: protocol-prefixed names ("nbd:...", "json:{...}") are not files; we only support files.
  auto slash = image_path.rfind('/');
  if (slash == std::string::npos) return backing_name;
  return image_path.substr(0, slash + 1) + backing_name;
}

}  // namespace vireo::block
