#include "block/foreign.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "block/format.h"
#include "block/qcow2_format.h"
#include "common/error.h"

namespace vireo::block {

ImageDetails::~ImageDetails() = default;

CheckResult ImageDetails::check(RepairMode) { fail("This image format does not support checks"); }

std::unique_ptr<HostFile> open_host_file(const std::string& path, const OpenOptions& opts) {
  auto f = std::make_unique<HostFile>(path, opts.read_only, opts.direct);
  if (!opts.force_share && opts.take_locks) f->lock_for(!opts.read_only);
  return f;
}

std::optional<std::string> extra_option(const CreateOptions& c, const std::string& key) {
  std::optional<std::string> v;
  for (const auto& [k, val] : c.extra)
    if (k == key) v = val;
  return v;
}

bool extra_bool(const CreateOptions& c, const std::string& key, bool def) {
  auto v = extra_option(c, key);
  if (!v) return def;
  if (*v == "on" || *v == "true" || *v == "yes") return true;
  if (*v == "off" || *v == "false" || *v == "no") return false;
  fail("Parameter '{}' expects 'on' or 'off'", key);
}

ForeignImage::ForeignImage(std::string format, std::string filename, const OpenOptions& opts)
    : format_(std::move(format)), filename_(std::move(filename)), read_only_(opts.read_only) {}

void ForeignImage::check_range(const char* what, uint64_t offset, uint64_t length) const {
  if (offset > size_ || length > size_ - offset)
    throw Error(fmt::format("{} {}: offset {} length {} is beyond the end of the image ({} bytes)", what, filename_,
                            offset, length, size_), EINVAL);
}

void ForeignImage::read(uint64_t offset, std::span<uint8_t> buf) {
  check_range("read", offset, buf.size());
  size_t done = 0;
  while (done < buf.size()) {
    const uint64_t pos = offset + done;
    Map m;
    {
      std::lock_guard<std::mutex> g(mu_);
      m = map(pos, buf.size() - done);
      if (m.length == 0) throw Error(fmt::format("read {}: no mapping at offset {}", filename_, pos), EIO);
      m.length = std::min<uint64_t>(m.length, buf.size() - done);
      if (m.kind == Map::Opaque) {
        read_opaque(pos, buf.subspan(done, m.length), m);
        done += m.length;
        continue;
      }
    }
    auto part = buf.subspan(done, m.length);
    switch (m.kind) {
      case Map::Unallocated:
        if (backing_) {
          const uint64_t bs = backing_->size();
          const uint64_t in = pos < bs ? std::min<uint64_t>(part.size(), bs - pos) : 0;
          if (in) backing_->read(pos, part.subspan(0, in));
          std::memset(part.data() + in, 0, part.size() - in);
        } else {
          std::memset(part.data(), 0, part.size());
        }
        break;
      case Map::Zero: std::memset(part.data(), 0, part.size()); break;
      case Map::Data: m.file->pread_full(m.host_offset, part); break;
      case Map::Opaque: break;
    }
    done += m.length;
  }
}

void ForeignImage::read_opaque(uint64_t offset, std::span<uint8_t>, const Map&) {
  throw Error(fmt::format("read {} at {}: unsupported cluster type", filename_, offset), EIO);
}

void ForeignImage::write(uint64_t offset, std::span<const uint8_t> buf) {
  if (read_only_) throw Error(fmt::format("write {}: image is read-only", filename_), EROFS);
  check_range("write", offset, buf.size());
  std::lock_guard<std::mutex> g(mu_);
  write_locked(offset, buf);
}

void ForeignImage::write_locked(uint64_t, std::span<const uint8_t>) {
  throw Error(fmt::format("write {}: the {} driver does not support writes", filename_, format_), ENOTSUP);
}

void ForeignImage::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (read_only_) throw Error(fmt::format("write {}: image is read-only", filename_), EROFS);
  check_range("write zeroes", offset, length);
  std::lock_guard<std::mutex> g(mu_);
  write_zeroes_locked(offset, length, may_unmap);
}

void ForeignImage::write_zeroes_locked(uint64_t offset, uint64_t length, bool) {
  std::vector<uint8_t> zero(std::min<uint64_t>(length, 1 << 20), 0);
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min<uint64_t>(zero.size(), length - done);
    write_locked(offset + done, std::span<const uint8_t>(zero.data(), n));
    done += n;
  }
}

void ForeignImage::discard(uint64_t offset, uint64_t length) {
  if (read_only_) throw Error(fmt::format("discard {}: image is read-only", filename_), EROFS);
  check_range("discard", offset, length);   // a hint: these formats keep the data
}

void ForeignImage::flush() {
  if (read_only_) return;
  std::lock_guard<std::mutex> g(mu_);
  flush_locked();
}

void ForeignImage::flush_locked() {
  for (auto* f : files_) f->sync();
}

Extent ForeignImage::block_status(uint64_t offset, uint64_t max_length) {
  if (offset >= size_)
    throw Error(fmt::format("block status {}: offset {} is beyond the end", filename_, offset), EINVAL);
  const uint64_t want = std::min(max_length, size_ - offset);
  Extent e;
  e.offset = offset;
  std::unique_lock<std::mutex> g(mu_);
  Map m = map(offset, want);
  if (m.length == 0) throw Error(fmt::format("block status {}: no mapping at offset {}", filename_, offset), EIO);
  m.length = std::min(m.length, want);
  // Merge following ranges of the same kind (and, for data, contiguous in the same file).
  while (offset + m.length < offset + want && m.kind != Map::Data) {
    Map n = map(offset + m.length, want - m.length);
    if (n.length == 0 || n.kind != m.kind) break;
    m.length += std::min(n.length, want - m.length);
  }
  while (m.kind == Map::Data && m.length < want) {
    Map n = map(offset + m.length, want - m.length);
    if (n.length == 0 || n.kind != Map::Data || n.file != m.file || n.host_offset != m.host_offset + m.length ||
        n.recurse != m.recurse)
      break;
    m.length += std::min(n.length, want - m.length);
  }
  g.unlock();
  e.length = m.length;
  switch (m.kind) {
    case Map::Unallocated:
      if (backing_ && offset < backing_->size()) {
        Extent b = backing_->block_status(offset, std::min(m.length, backing_->size() - offset));
        b.depth += 1;
        return b;
      }
      e.zero = true;
      e.depth = backing_ ? 1 : 0;
      return e;
    case Map::Zero:
      e.zero = true;
      e.allocated = true;
      return e;
    case Map::Opaque:
      e.data = true;
      e.allocated = true;
      e.compressed = true;
      return e;
    case Map::Data:
      e.data = true;
      e.allocated = true;
      e.host_offset = m.host_offset;
      if (m.file && m.file != files_.front()) e.host_file = m.file->path();
      if (m.recurse && m.file) {
        // qemu recurses into the file: its holes are "zero" (file-posix's SEEK_DATA/SEEK_HOLE).
        const int fd = m.file->fd();
        const off_t data = ::lseek(fd, static_cast<off_t>(m.host_offset), SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
          e.zero = true;
        } else if (data >= 0 && static_cast<uint64_t>(data) > m.host_offset) {
          e.zero = true;
          e.length = std::min<uint64_t>(e.length, static_cast<uint64_t>(data) - m.host_offset);
        } else if (data >= 0) {
          const off_t hole = ::lseek(fd, static_cast<off_t>(m.host_offset), SEEK_HOLE);
          if (hole > static_cast<off_t>(m.host_offset))
            e.length = std::min<uint64_t>(e.length, static_cast<uint64_t>(hole) - m.host_offset);
        }
      }
      return e;
  }
  return e;
}

uint64_t ForeignImage::file_allocated_bytes() {
  uint64_t total = 0;
  for (auto* f : files_) total += f->allocated_bytes();
  return total;
}

void ForeignImage::resize(uint64_t, bool) { throw Error("Image format driver does not support resize", ENOTSUP); }

void ForeignImage::open_backing(const std::string& name, const std::string& format, const OpenOptions& opts) {
  if (name.empty() || !opts.open_backing) return;
  OpenOptions b = opts;
  b.read_only = true;
  b.format = format;
  const std::string path = resolve_backing_path(filename_, name);
  OpenContext local;
  OpenContext& ctx = ForeignOpenScope::current ? *ForeignOpenScope::current : local;
  note_open(ctx, files_.front()->fd(), filename_);   // throws on a loop back to this image
  if (ctx.depth >= qcow2::kMaxBackingDepth) fail("Backing chain of '{}' is too deep", filename_);
  backing_ = block::open_backing_file(path, b, ctx);
}

}  // namespace vireo::block
