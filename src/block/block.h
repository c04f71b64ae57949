// vireo/block: the format-agnostic disk image interface (raw and qcow2 drivers).
//
// Every BlockImage is thread-safe: several threads may read/write/flush concurrently. Errors are thrown as
// vireo::Error with context ("read disk.qcow2 at 65536: input/output error"); sys_errno() carries the errno
// when one applies (the async backends complete with -errno, EIO when there is none).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace vireo::block {

struct OpenOptions {
  std::string format;          // "" = probe; "raw" | "qcow2" | a format of block/formats.h
  bool read_only = false;
  bool force_share = false;    // qemu-img -U: take no locks (read-only only; refused with read_only=false)
  bool direct = false;         // O_DIRECT (cache=none)
  bool open_backing = true;    // false: do not open the backing chain (rebase -u, info without chain)
  bool repair_dirty = true;    // qcow2: rebuild refcounts of a dirty (lazy refcounts) image on read-write open
  bool take_locks = true;      // false: skip QEMU-compatible OFD locking (tests only; force_share implies it)
  bool for_repair = false;     // qcow2: allow a read-write open of an image with the corrupt bit (check -r)
  // Encrypted images (qcow2 LUKS/AES, luks): id of the `--object secret` holding the passphrase (qcow2's
  // encrypt.key-secret, luks's key-secret; see block/secret.h). Backing files get the same id.
  std::string key_secret{};
  bool no_io = false;          // headers only (qemu's BDRV_O_NO_IO, used by info): an encrypted image opens
                               // without its key; reads and writes of such an image then fail
};

// One run of equal status, as `qemu-img map` reports it.
struct Extent {
  uint64_t offset = 0, length = 0;
  bool data = false, zero = false;        // qemu-img map's "data"/"zero"
  int depth = 0;                          // 0 = this image, 1 = its backing file, ...
  std::optional<uint64_t> host_offset;    // where the data lives in that file, if it is uncompressed data
  bool compressed = false;
  bool allocated = false;                 // qemu map's "present": some layer of the chain (the one at `depth`)
                                          // holds the range (data, zero cluster, compressed; raw: always)
  std::string host_file;                  // the file host_offset is in when it is not the image file itself
                                          // (vmdk extents); "" otherwise
};

class BlockImage {
 public:
  virtual ~BlockImage();
  virtual std::string format() const = 0;           // "raw" | "qcow2"
  virtual const std::string& filename() const = 0;  // the path it was opened with
  virtual uint64_t size() const = 0;                // virtual disk size
  virtual bool read_only() const = 0;

  // Reads beyond size() throw. Unallocated areas read from the backing chain or as zeroes.
  virtual void read(uint64_t offset, std::span<uint8_t> buf) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> buf) = 0;
  // Zeroes [offset, offset+length). may_unmap: the range may be deallocated (it reads as zeroes after).
  virtual void write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) = 0;
  // Hint: the range's content becomes unspecified-but-stable (raw: punch hole; qcow2: zero/unallocate).
  virtual void discard(uint64_t offset, uint64_t length) = 0;
  // Makes every completed write durable (metadata included).
  virtual void flush() = 0;

  // The first extent at `offset` (offset < size()), at most max_length long (clipped to size()).
  virtual Extent block_status(uint64_t offset, uint64_t max_length) = 0;
  virtual BlockImage* backing() = 0;                // nullptr if none (or not opened)
  virtual uint64_t file_allocated_bytes() = 0;      // "disk size" (st_blocks*512)
  virtual void resize(uint64_t new_size, bool allow_shrink) = 0;
};

// Opens `path`. Throws Error on a missing file, a bad image, a lock conflict with another user
// ("Failed to get "write" lock: is another process using the image [path]?"), ...
std::unique_ptr<BlockImage> open_image(const std::string& path, const OpenOptions& opts);

// "qcow2" if the file starts with the qcow2 magic, else "raw". Throws Error if it cannot be read.
std::string probe_format(const std::string& path);

// qemu-img create -o names.
struct CreateOptions {
  std::string format = "qcow2";   // raw | qcow2
  uint64_t size = 0;              // 0 with a backing file = the backing file's size
  std::string backing_file, backing_format;   // backing_file as written into the image (may be relative)
  uint32_t cluster_size = 65536;
  std::string compat = "1.1";     // "0.10" (v2) | "1.1" (v3); also accepts "v2"/"v3"
  bool lazy_refcounts = false;
  uint32_t refcount_bits = 16;
  std::string compression_type = "zlib";   // zlib | zstd (zstd needs compat 1.1)
  bool extended_l2 = false;
  std::string preallocation = "off";       // off | metadata | falloc | full
  // Format-specific -o options in the order given (vmdk subformat/adapter_type/..., vhdx, vpc, vdi, qed,
  // luks key-secret/cipher-alg/..., qcow2 encrypt.*), validated by the format driver.
  std::vector<std::pair<std::string, std::string>> extra;
};

// Creates (truncating) `path`. Validates the options with qemu-img-like messages ("Cluster size must be a
// power of two between 512 and 2048k", ...). A relative backing file is resolved against path's directory
// to find its size/format when size == 0.
void create_image(const std::string& path, const CreateOptions& opts);

// Resolves a backing file name stored in `image_path` the way qemu does: absolute names as they are,
// relative ones against the directory of image_path ("dir/top.qcow2" + "base.qcow2" -> "dir/base.qcow2").
std::string resolve_backing_path(const std::string& image_path, const std::string& backing_name);

}  // namespace vireo::block
