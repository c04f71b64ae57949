// The format driver table (block/format.h) and the helpers every driver shares.
#include <sys/stat.h>

#include <algorithm>
#include <array>

#include "block/file.h"
#include "block/format.h"
#include "common/error.h"

namespace vireo::block {

const std::vector<const FormatDriver*>& format_drivers() {
  // Probe order breaks score ties; raw last (its score is the fallback 1).
  static const std::vector<const FormatDriver*> drivers = {
      &kQcow2Driver, &kLuksDriver, &kVmdkDriver, &kVhdxDriver, &kVpcDriver, &kVdiDriver, &kQedDriver,
      &kRawDriver,
  };
  return drivers;
}

const FormatDriver* find_format(std::string_view name) {
  for (const auto* d : format_drivers())
    if (name == d->name) return d;
  return nullptr;
}

const FormatDriver& probe_driver(std::span<const uint8_t> head, const std::string& filename) {
  const FormatDriver* best = &kRawDriver;
  int best_score = 0;
  for (const auto* d : format_drivers()) {
    if (!d->probe) continue;
    const int score = d->probe(head, filename);
    if (score > best_score) {
      best_score = score;
      best = d;
    }
  }
  return *best;
}

void note_open(OpenContext& ctx, int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) == 0 && !ctx.seen.insert({st.st_dev, st.st_ino}).second)
    fail("Could not open '{}': backing chain contains a loop", path);
}

std::unique_ptr<BlockImage> open_backing_file(const std::string& path, const OpenOptions& opts, OpenContext& ctx) {
  OpenOptions bo = opts;
  bo.read_only = true;
  bo.for_repair = false;
  const std::string name = bo.format.empty() ? probe_format(path) : bo.format;
  const FormatDriver* d = find_format(name);
  if (!d) fail("Unknown driver '{}'", name);
  ctx.depth++;
  struct Restore {
    int& d;
    ~Restore() { d--; }
  } restore{ctx.depth};
  return d->open(path, bo, ctx);
}

}  // namespace vireo::block
