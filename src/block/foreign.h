// vireo/block: the common skeleton of the cluster-mapped foreign formats (vmdk, vhdx, vpc, vdi, qed) and of
// raw luks: range checks, the read loop over a per-format mapping (metadata under the image mutex, data
// I/O outside it), block status with qemu's semantics, backing files, allocated size over all files.
#pragma once
#include <memory>
#include <mutex>
#include <vector>

#include "block/block.h"
#include "block/file.h"
#include "block/formats.h"

namespace vireo::block {

class ForeignImage : public BlockImage, public ImageDetails {
 public:
  std::string format() const override { return format_; }
  const std::string& filename() const override { return filename_; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  void read(uint64_t offset, std::span<uint8_t> buf) override;
  void write(uint64_t offset, std::span<const uint8_t> buf) override;
  void write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  void discard(uint64_t offset, uint64_t length) override;
  void flush() override;
  Extent block_status(uint64_t offset, uint64_t max_length) override;
  BlockImage* backing() override { return backing_.get(); }
  uint64_t file_allocated_bytes() override;
  void resize(uint64_t new_size, bool allow_shrink) override;

 protected:
  // How the range starting at a guest offset is stored. `length` > 0 bytes, within one cluster/grain.
  struct Map {
    enum Kind {
      Unallocated,   // not in this image: reads from the backing file or as zeroes; qemu map "present": false
      Zero,          // reads as zeroes, "present": true (zero grains, vdi/vpc unallocated blocks)
      Data,          // at host_offset in *file
      Opaque,        // data without a host offset (compressed grains): read_opaque() reads it
    } kind = Unallocated;
    uint64_t length = 0;
    uint64_t host_offset = 0;
    HostFile* file = nullptr;
    bool recurse = false;   // Data: holes of the host file read as zero and are reported "zero" (vmdk flat)
  };

  ForeignImage(std::string format, std::string filename, const OpenOptions& opts);
  // Called with mu_ held. offset < size(); the result may be shorter than max_len but never 0.
  virtual Map map(uint64_t offset, uint64_t max_len) = 0;
  // Reads an Opaque range (mu_ held).
  virtual void read_opaque(uint64_t offset, std::span<uint8_t> buf, const Map& m);
  // Writes (mu_ held, range checked, image writable). Default: formats without write support.
  virtual void write_locked(uint64_t offset, std::span<const uint8_t> buf);
  // Zeroes; default writes zero buffers through write_locked.
  virtual void write_zeroes_locked(uint64_t offset, uint64_t length, bool may_unmap);
  virtual void flush_locked();

  // Opens the backing file named in the image (relative to this image's directory) when opts ask for it.
  void open_backing(const std::string& name, const std::string& format, const OpenOptions& opts);
  // Files whose allocated size counts for "disk size" (the image file first).
  std::vector<HostFile*> files_;
  void check_range(const char* what, uint64_t offset, uint64_t length) const;

  std::string format_, filename_;
  uint64_t size_ = 0;
  bool read_only_ = true;
  std::unique_ptr<BlockImage> backing_;
  mutable std::mutex mu_;
};

// Opens one host file of an image with the options' locking (qemu takes locks on every extent file).
std::unique_ptr<HostFile> open_host_file(const std::string& path, const OpenOptions& opts);

// Little-endian field access for the formats here (vmdk, vhdx, vdi and qed are little endian).
inline uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }
inline void put_le16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline uint32_t rd_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
inline uint64_t rd_be64(const uint8_t* p) { return uint64_t(rd_be32(p)) << 32 | rd_be32(p + 4); }
inline void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}
inline void put_be64(uint8_t* p, uint64_t v) { put_be32(p, uint32_t(v >> 32)); put_be32(p + 4, uint32_t(v)); }
inline void put_be16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline uint16_t rd_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// Value of an option in CreateOptions::extra (last one wins), or nullopt.
std::optional<std::string> extra_option(const CreateOptions& c, const std::string& key);
bool extra_bool(const CreateOptions& c, const std::string& key, bool def);

}  // namespace vireo::block
