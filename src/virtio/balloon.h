// vireo/virtio: virtio-balloon (5.5): inflate (pages given back to the host with GuestMemory::discard),
// deflate, the statistics queue, and free page reporting. Queue numbering follows the negotiated features:
// inflateq 0, deflateq 1, then statsq (STATS_VQ), then reporting_vq (PAGE_REPORTING).
#pragma once
#include <map>

#include "virtio/virtio_device.h"

namespace vireo::virtio {

namespace balloon_bits {
inline constexpr int kFMustTellHost = 0, kFStatsVq = 1, kFDeflateOnOom = 2, kFFreePageHint = 3,
                     kFPagePoison = 4, kFPageReporting = 5;
inline constexpr uint64_t kPageSize = 4096;
}  // namespace balloon_bits

class BalloonDevice : public VirtioDevice {
 public:
  BalloonDevice(GuestMemory& mem, std::string id);
  ~BalloonDevice() override;
  std::string type_name() const override { return "virtio-balloon"; }

  void set_target_pages(uint32_t pages);         // config num_pages + config interrupt
  uint32_t actual_pages() const;                 // what the guest reports in `actual`
  std::map<uint16_t, uint64_t> stats() const;    // last statistics (tag -> value)
  void request_stats();                          // hands the stats buffer back so the guest refreshes it
  uint64_t discarded_bytes() const;              // total returned to the host (inflate + reporting)

 protected:
  uint64_t features() const override;
  void process_queue(uint16_t q) override;
  void device_reset() override;
  void config_write(uint64_t offset, std::span<const uint8_t> data) override;
  // Snapshot: statistics and the discarded total; the held stats buffer is handed back and popped again.
  uint16_t held_chains(uint16_t q) const override;
  nlohmann::json save_device() override;
  void restore_device(JsonReader& r) override;

 private:
  enum class Role { Inflate, Deflate, Stats, Reporting, None };
  Role role(uint16_t q) const;
  void discard_range(uint64_t gpa, uint64_t len);

  std::map<uint16_t, uint64_t> stats_;
  std::optional<DescChain> stats_chain_;
  uint64_t discarded_ = 0;
};

}  // namespace vireo::virtio
