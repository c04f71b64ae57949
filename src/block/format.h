// vireo/block: the table of image format drivers. open_image(), probe_format(), create_image() and the
// backing-chain opener of every format with backing files go through it, so a new format is one driver
// struct plus one line in format_registry.cpp.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "block/block.h"

namespace vireo::block {

// State carried down a backing chain while it is opened: loop detection by (st_dev, st_ino) and the depth
// limit (qcow2::kMaxBackingDepth). A driver that opens a backing file passes its own context on, with
// open_backing_file().
struct OpenContext {
  int depth = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
};

// How many bytes of the file probe() sees (QEMU's BLOCK_PROBE_BUF_SIZE); shorter files are zero-padded.
constexpr size_t kProbeBytes = 2048;

struct FormatDriver {
  const char* name;   // qemu's driver name ("qcow2", "raw", "vmdk", ...)
  // 0..100: how sure the driver is that `head` (the first kProbeBytes of `filename`) is its format; the
  // highest score wins. Raw is the fallback (score 1); nullptr = never probed (e.g. luks needs -f).
  int (*probe)(std::span<const uint8_t> head, const std::string& filename);
  // Opens `path` (ctx: see OpenContext; register the file's (dev, ino) with note_open() first).
  std::unique_ptr<BlockImage> (*open)(const std::string& path, const OpenOptions& opts, OpenContext& ctx);
  // Creates (truncating) `path`; nullptr = the format cannot be created.
  void (*create)(const std::string& path, const CreateOptions& opts);
};

// Every registered driver, in probe order (format_registry.cpp).
const std::vector<const FormatDriver*>& format_drivers();
// The driver named `name`, or nullptr.
const FormatDriver* find_format(std::string_view name);
// The best probe score's driver for a file's first bytes (never nullptr: raw is the fallback).
const FormatDriver& probe_driver(std::span<const uint8_t> head, const std::string& filename);

// Registers the (dev, ino) of an opened file in ctx; throws qemu's loop error if it is already there.
void note_open(OpenContext& ctx, int fd, const std::string& path);
// Opens a backing file (read-only, format probed when opts.format is empty) one level deeper in ctx.
std::unique_ptr<BlockImage> open_backing_file(const std::string& path, const OpenOptions& opts, OpenContext& ctx);

// Built-in drivers (one per format file).
extern const FormatDriver kRawDriver;     // raw.cpp
extern const FormatDriver kQcow2Driver;   // qcow2_header.cpp
// formats.cpp (img-formats): luks, vmdk, vhdx, vpc, vdi, qed
extern const FormatDriver kLuksDriver, kVmdkDriver, kVhdxDriver, kVpcDriver, kVdiDriver, kQedDriver;

}  // namespace vireo::block
