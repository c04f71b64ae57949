// vireo/block: the raw driver (a plain file or block device).
#pragma once
#include <memory>
#include <mutex>

#include "block/block.h"
#include "block/file.h"

namespace vireo::block {

class RawImage : public BlockImage {
 public:
  static std::unique_ptr<RawImage> open(const std::string& path, const OpenOptions& opts);
  static void create(const std::string& path, const CreateOptions& opts);

  std::string format() const override { return "raw"; }
  const std::string& filename() const override { return filename_; }
  uint64_t size() const override;
  bool read_only() const override { return file_.read_only(); }
  void read(uint64_t offset, std::span<uint8_t> buf) override;
  void write(uint64_t offset, std::span<const uint8_t> buf) override;
  void write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  void discard(uint64_t offset, uint64_t length) override;
  void flush() override;
  Extent block_status(uint64_t offset, uint64_t max_length) override;
  BlockImage* backing() override { return nullptr; }
  uint64_t file_allocated_bytes() override { return file_.allocated_bytes(); }
  void resize(uint64_t new_size, bool allow_shrink) override;

  int fd() const { return file_.fd(); }

 private:
  RawImage(HostFile f, std::string name) : file_(std::move(f)), filename_(std::move(name)) {}
  void check_range(const char* what, uint64_t offset, uint64_t length) const;
  HostFile file_;
  std::string filename_;
  bool direct_ = false;
};

}  // namespace vireo::block
