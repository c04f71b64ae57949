// qcow2: the public Qcow2Image operations (locking, range checks) and resize/info/backing changes.
// The driver is split by concern into qcow2_*.cpp; see qcow2_internal.h and docs/block.md.
#include "block/qcow2_internal.h"

namespace vireo::block {

// -------------------------------------------------------------------------------------------------
// Public API

std::string Qcow2Image::format() const { return "qcow2"; }
const std::string& Qcow2Image::filename() const { return s_->filename; }
uint64_t Qcow2Image::size() const { return s_->size; }
bool Qcow2Image::read_only() const { return s_->ro; }
uint32_t Qcow2Image::cluster_size() const { return static_cast<uint32_t>(s_->cs); }
bool Qcow2Image::is_dirty() const { return s_->incompat & kIncompatDirty; }
bool Qcow2Image::is_corrupt() const { return s_->incompat & kIncompatCorrupt; }
BlockImage* Qcow2Image::backing() { return s_->backing.get(); }
uint64_t Qcow2Image::file_allocated_bytes() { return s_->file->allocated_bytes(); }

namespace {
void check_range(const std::string& name, const char* what, uint64_t off, uint64_t len, uint64_t size) {
  if (off > size || len > size - off)
    throw Error(fmt::format("{} {}: offset {} length {} is beyond the end of the image ({} bytes)", what, name,
                            off, len, size), EINVAL);
}
}  // namespace

void Qcow2Image::read(uint64_t offset, std::span<uint8_t> buf) {
  std::vector<std::pair<uint64_t, std::span<uint8_t>>> io;
  {
    std::lock_guard g(s_->mu);
    check_range(s_->filename, "read", offset, buf.size(), s_->size);
    s_->read_locked(offset, buf, &io);
  }
  for (auto& [host, dst] : io) s_->file->pread_full(host, dst);
}

void Qcow2Image::write(uint64_t offset, std::span<const uint8_t> buf) {
  std::lock_guard g(s_->mu);
  check_range(s_->filename, "write", offset, buf.size(), s_->size);
  if (buf.empty()) return;
  s_->write_locked(offset, buf);
}

void Qcow2Image::write_zeroes(uint64_t offset, uint64_t length, bool) {
  std::lock_guard g(s_->mu);
  check_range(s_->filename, "write zeroes", offset, length, s_->size);
  if (length == 0) return;
  s_->zero_clusters(offset, length, false);
}

void Qcow2Image::discard(uint64_t offset, uint64_t length) {
  std::lock_guard g(s_->mu);
  check_range(s_->filename, "discard", offset, length, s_->size);
  if (length == 0) return;
  s_->zero_clusters(offset, length, true);
}

void Qcow2Image::flush() {
  std::lock_guard g(s_->mu);
  if (s_->ro) return;
  s_->flush_metadata();
  if (s_->data_written) {
    s_->file->sync();
    s_->data_written = false;
  }
}

void Qcow2Image::resize(uint64_t new_size, bool allow_shrink) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  if (s.ro) throw Error(fmt::format("resize {}: image is read-only", s.filename), EROFS);
  if (new_size % 512) fail("The new size must be a multiple of 512");
  if (new_size == s.size) return;
  s.prepare_write();
  if (new_size < s.size) {
    if (!allow_shrink) fail("Use the --shrink option to perform a shrink operation.");
    if (!s.snaps.empty()) fail("Can't shrink an image with internal snapshots");
    // Zero the tail of the last remaining cluster, then drop every cluster past the end.
    uint64_t cend = div_round_up(new_size, s.cs) * s.cs;
    if (cend > new_size && new_size < s.size) {
      std::vector<uint8_t> z(std::min(cend, s.size) - new_size, 0);
      s.write_locked(new_size, z);
    }
    for (uint64_t ci = cend / s.cs; ci < div_round_up(s.size, s.cs);) {
      uint64_t l1i = ci / s.l2_entries(), l2i = ci % s.l2_entries();
      uint64_t span_end = (l1i + 1) * s.l2_entries();
      if (s.l1[l1i] & kL1OffsetMask) {
        auto* t = &s.writable_l2(l1i);
        for (uint64_t k = l2i; k < s.l2_entries(); k++) {
          uint64_t e = s.l2_word(*t, k);
          s.free_entry(e);
          if (e) s.set_l2_word(*t, k, 0);
          if (s.extended_l2() && t->w[k * 2 + 1]) {
            t->w[k * 2 + 1] = 0;
            t->dirty = true;
          }
        }
        if (l2i == 0) {
          s.free_clusters_later(s.l1[l1i] & kL1OffsetMask, s.cs);
          s.l1[l1i] = 0;
          s.dirty_l1_sectors.insert(l1i * 8 / 512);
        }
      }
      ci = span_end;
    }
    s.flush_metadata();
  } else {
    s.grow_l1(div_round_up(new_size, s.l2_span()));
  }
  s.size = new_size;
  s.write_header();
  s.file->sync();
}

Qcow2Info Qcow2Image::info() const {
  std::lock_guard g(s_->mu);
  const State& s = *s_;
  Qcow2Info i;
  i.version = s.version;
  i.compat = s.version >= 3 ? "1.1" : "0.10";
  i.compression_type = s.compression_type ? "zstd" : "zlib";
  i.lazy_refcounts = s.compat & kCompatLazyRefcounts;
  i.refcount_bits = s.refcount_bits();
  i.corrupt = s.incompat & kIncompatCorrupt;
  i.dirty = s.incompat & kIncompatDirty;
  i.extended_l2 = s.extended_l2();
  for (const auto& e : s.exts)
    if (e.type == kExtBitmaps) i.has_bitmaps_extension = true;
  i.cluster_size = static_cast<uint32_t>(s.cs);
  i.backing_file = s.backing_name;
  i.backing_format = s.backing_fmt;
  i.l1_size = s.l1_size;
  i.l1_table_offset = s.l1_offset;
  i.refcount_table_offset = s.rt_offset;
  i.refcount_table_clusters = s.rt_clusters;
  i.incompatible_features = s.incompat;
  i.compatible_features = s.compat;
  i.autoclear_features = s.autoclear;
  i.encrypt = s.crypt_method != 0;
  if (s.crypt) i.encrypt_info = s.crypt->info();
  return i;
}

void Qcow2Image::set_backing(const std::string& backing_file, const std::string& backing_format) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  if (s.ro) throw Error(fmt::format("change backing file of {}: image is read-only", s.filename), EROFS);
  if (backing_file.size() > kMaxBackingName) fail("Backing file name too long");
  s.flush_metadata();
  s.backing_name = backing_file;
  s.backing_fmt = backing_file.empty() ? "" : backing_format;
  s.write_header();
  s.file->sync();
  s.backing.reset();
  if (!backing_file.empty() && s.opts.open_backing) {
    OpenOptions bo = s.opts;
    bo.read_only = true;
    bo.format = s.backing_fmt;
    bo.for_repair = false;
    OpenContext ctx;
    note_open(ctx, s.file->fd(), s.filename);
    s.backing = open_backing_file(resolve_backing_path(s.filename, backing_file), bo, ctx);
  }
}

void Qcow2Image::make_empty() {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  s.flush_metadata();
  s.file->sync();
  std::vector<uint64_t> old = s.l1;
  for (size_t i = 0; i < s.l1.size(); i++) {
    if (s.l1[i]) {
      s.l1[i] = 0;
      s.dirty_l1_sectors.insert(i * 8 / 512);
    }
  }
  s.write_l1_sectors();
  s.file->sync();
  s.walk_tree(old, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, -1);
  }, nullptr, nullptr);
  s.write_refcount_blocks();
  s.file->sync();
}

}  // namespace vireo::block
