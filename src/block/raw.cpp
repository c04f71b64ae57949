#include "block/raw.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "block/format.h"
#include "common/error.h"

namespace vireo::block {

std::unique_ptr<RawImage> RawImage::open(const std::string& path, const OpenOptions& opts) {
  HostFile f(path, opts.read_only, opts.direct);
  if (!opts.force_share && opts.take_locks) f.lock_for(!opts.read_only);
  auto img = std::unique_ptr<RawImage>(new RawImage(std::move(f), path));
  img->direct_ = opts.direct;
  return img;
}

namespace {
int probe_raw(std::span<const uint8_t>, const std::string&) { return 1; }
std::unique_ptr<BlockImage> open_raw(const std::string& path, const OpenOptions& opts, OpenContext&) {
  return RawImage::open(path, opts);
}
void create_raw(const std::string& path, const CreateOptions& opts) {
  if (!opts.backing_file.empty()) fail("'raw' does not support backing files");
  RawImage::create(path, opts);
}
}  // namespace

const FormatDriver kRawDriver = {"raw", probe_raw, open_raw, create_raw};

void RawImage::create(const std::string& path, const CreateOptions& opts) {
  HostFile f(path, false, false, true);
  const std::string& p = opts.preallocation;
  if (p != "off" && p != "falloc" && p != "full")
    fail("Invalid parameter '{}' for preallocation of raw (expected off, falloc or full)", p);
  f.truncate(opts.size);
  bool need_zeroes = p == "full";
  if (p == "falloc" && !f.allocate(0, opts.size)) need_zeroes = true;
  if (need_zeroes) {
    std::vector<uint8_t> zero(1 << 20, 0);
    for (uint64_t off = 0; off < opts.size; off += zero.size()) {
      uint64_t n = std::min<uint64_t>(zero.size(), opts.size - off);
      f.pwrite_full(off, std::span<const uint8_t>(zero.data(), n));
    }
  }
  f.sync();
}

// As qemu (file-posix counts whole sectors): a file whose length is not a multiple of 512 has a virtual
// size rounded up, and the bytes past its end read as zeroes.
uint64_t RawImage::size() const { return (file_.length() + 511) / 512 * 512; }

void RawImage::check_range(const char* what, uint64_t offset, uint64_t length) const {
  uint64_t sz = size();
  if (offset > sz || length > sz - offset)
    throw Error(fmt::format("{} {}: offset {} length {} is beyond the end of the image ({} bytes)", what,
                            filename_, offset, length, sz), EINVAL);
}

void RawImage::read(uint64_t offset, std::span<uint8_t> buf) {
  check_range("read", offset, buf.size());
  const uint64_t len = file_.length();
  const size_t in_file = offset >= len ? 0 : static_cast<size_t>(std::min<uint64_t>(buf.size(), len - offset));
  if (in_file) file_.pread_full(offset, buf.subspan(0, in_file));  // HostFile bounces unaligned O_DIRECT accesses
  std::fill(buf.begin() + static_cast<ptrdiff_t>(in_file), buf.end(), uint8_t{0});
}

void RawImage::write(uint64_t offset, std::span<const uint8_t> buf) {
  if (read_only()) throw Error(fmt::format("write {}: image is read-only", filename_), EROFS);
  check_range("write", offset, buf.size());
  file_.pwrite_full(offset, buf);
}

void RawImage::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (read_only()) throw Error(fmt::format("write {}: image is read-only", filename_), EROFS);
  check_range("write zeroes", offset, length);
  if (length == 0) return;
  if (may_unmap && file_.punch_hole(offset, length)) return;
  if (!direct_ && file_.zero_range(offset, length)) return;
  std::vector<uint8_t> zero(std::min<uint64_t>(length, 1 << 20), 0);
  for (uint64_t done = 0; done < length;) {
    uint64_t n = std::min<uint64_t>(zero.size(), length - done);
    write(offset + done, std::span<const uint8_t>(zero.data(), n));
    done += n;
  }
}

void RawImage::discard(uint64_t offset, uint64_t length) {
  if (read_only()) throw Error(fmt::format("discard {}: image is read-only", filename_), EROFS);
  check_range("discard", offset, length);
  file_.punch_hole(offset, length);
}

void RawImage::flush() {
  if (read_only()) return;
  file_.sync();
}

Extent RawImage::block_status(uint64_t offset, uint64_t max_length) {
  uint64_t sz = size();
  if (offset >= sz) throw Error(fmt::format("block status {}: offset {} is beyond the end", filename_, offset), EINVAL);
  uint64_t len = std::min(max_length, sz - offset);
  Extent e;
  e.offset = offset;
  e.depth = 0;
  e.allocated = true;
  off_t data = ::lseek(file_.fd(), static_cast<off_t>(offset), SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) {  // hole up to EOF
      e.length = len;
      e.data = false;
      e.zero = true;
      return e;
    }
    // SEEK_DATA unsupported: all data.
    e.length = len;
    e.data = true;
    e.host_offset = offset;
    return e;
  }
  if (static_cast<uint64_t>(data) > offset) {
    e.length = std::min<uint64_t>(len, static_cast<uint64_t>(data) - offset);
    e.data = false;
    e.zero = true;
    return e;
  }
  off_t hole = ::lseek(file_.fd(), static_cast<off_t>(offset), SEEK_HOLE);
  uint64_t end = hole < 0 ? sz : static_cast<uint64_t>(hole);
  e.length = std::min<uint64_t>(len, std::max<uint64_t>(end, offset + 1) - offset);
  e.data = true;
  e.zero = false;
  e.host_offset = offset;
  return e;
}

void RawImage::resize(uint64_t new_size, bool allow_shrink) {
  if (read_only()) throw Error(fmt::format("resize {}: image is read-only", filename_), EROFS);
  uint64_t cur = size();
  if (new_size < cur && !allow_shrink)
    fail("Use the --shrink option to perform a shrink operation.");
  file_.truncate(new_size);
}

}  // namespace vireo::block
