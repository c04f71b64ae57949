// vireo/virtio: virtio-blk (5.2): read, write, flush, discard, write-zeroes, GET_ID, read-only disks and
// several request queues, on top of a format-agnostic block::BlockBackend (thread pool or io_uring).
#pragma once
#include <memory>
#include <string>

#include "block/backend.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

namespace blk {
inline constexpr int kFSizeMax = 1, kFSegMax = 2, kFGeometry = 4, kFRo = 5, kFBlkSize = 6, kFFlush = 9,
                     kFTopology = 10, kFConfigWce = 11, kFMq = 12, kFDiscard = 13, kFWriteZeroes = 14;
inline constexpr uint32_t kTIn = 0, kTOut = 1, kTFlush = 4, kTGetId = 8, kTDiscard = 11, kTWriteZeroes = 13;
inline constexpr uint8_t kSOk = 0, kSIoErr = 1, kSUnsupp = 2;
inline constexpr uint32_t kIdBytes = 20;
inline constexpr uint32_t kSectorSize = 512;
}  // namespace blk

class BlockDevice : public VirtioDevice {
 public:
  struct Config {
    std::string serial;       // GET_ID (up to 20 bytes, not NUL-terminated when exactly 20)
    uint16_t num_queues = 1;
    uint16_t queue_size = 256;
    std::string details;      // for query-vm
  };
  BlockDevice(GuestMemory& mem, std::string id, std::unique_ptr<block::BlockBackend> backend, const Config& cfg);
  ~BlockDevice() override;

  std::string type_name() const override { return "virtio-blk"; }
  std::string details() const override { return cfg_.details; }

 protected:
  uint64_t features() const override;
  void process_queue(uint16_t q) override;
  void quiesce() override;

 private:
  void handle(uint16_t q, DescChain chain);
  void finish(uint16_t q, const DescChain& chain, uint8_t status, uint32_t data_written);

  std::unique_ptr<block::BlockBackend> backend_;
  Config cfg_;
  bool read_only_;
  uint64_t capacity_bytes_;
};

}  // namespace vireo::virtio
