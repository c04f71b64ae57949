#include "virtio/balloon.h"

#include <cstring>

namespace vireo::virtio {

using namespace balloon_bits;

BalloonDevice::BalloonDevice(GuestMemory& mem, std::string id)
    : VirtioDevice(mem, std::move(id), kTypeBalloon, 4, 256) {
  config_.assign(16, 0);
}

BalloonDevice::~BalloonDevice() { shutdown(); }

uint64_t BalloonDevice::features() const {
  return bit(kFStatsVq) | bit(kFDeflateOnOom) | bit(kFPageReporting);
}

BalloonDevice::Role BalloonDevice::role(uint16_t q) const {
  if (q == 0) return Role::Inflate;
  if (q == 1) return Role::Deflate;
  uint16_t next = 2;
  if (negotiated(kFStatsVq)) {
    if (q == next) return Role::Stats;
    ++next;
  }
  if (negotiated(kFPageReporting) && q == next) return Role::Reporting;
  return Role::None;
}

void BalloonDevice::set_target_pages(uint32_t pages) {
  std::lock_guard lock(mu_);
  std::memcpy(config_.data(), &pages, 4);
  config_changed();
}

uint32_t BalloonDevice::actual_pages() const {
  std::lock_guard lock(mu_);
  uint32_t v;
  std::memcpy(&v, config_.data() + 4, 4);
  return v;
}

std::map<uint16_t, uint64_t> BalloonDevice::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

uint64_t BalloonDevice::discarded_bytes() const {
  std::lock_guard lock(mu_);
  return discarded_;
}

void BalloonDevice::request_stats() {
  std::lock_guard lock(mu_);
  if (!stats_chain_ || !active()) return;
  for (uint16_t q = 2; q < num_queues(); ++q) {
    if (role(q) == Role::Stats) {
      complete(q, *stats_chain_, 0);
      stats_chain_.reset();
      return;
    }
  }
}

void BalloonDevice::device_reset() {
  stats_chain_.reset();
  stats_.clear();
  // num_pages (the host's target) survives a reset; actual is the driver's.
  std::memset(config_.data() + 4, 0, 12);
}

void BalloonDevice::config_write(uint64_t offset, std::span<const uint8_t> data) {
  // Only `actual` (offset 4) and poison_val (12) are driver-writable.
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t o = offset + i;
    if ((o >= 4 && o < 8) || (o >= 12 && o < 16)) config_[o] = data[i];
  }
}

void BalloonDevice::discard_range(uint64_t gpa, uint64_t len) {
  // Only whole pages inside RAM; anything else is ignored (a guest bug, not a reason to stop).
  uint64_t start = (gpa + kPageSize - 1) & ~(kPageSize - 1);
  uint64_t end = (gpa + len) & ~(kPageSize - 1);
  if (end <= start || !mem_.contains(start, end - start)) return;
  try {
    mem_.discard(start, end - start);
    discarded_ += end - start;
  } catch (const Error&) {
    // e.g. hugepage-backed RAM cannot drop 4 KiB pages: the balloon then only accounts.
  }
}

void BalloonDevice::process_queue(uint16_t q) {
  Virtqueue* vq = queue(q);
  if (!vq) return;
  Role r = role(q);
  do {
    vq->disable_notifications();
    while (auto chain = vq->pop()) {
      switch (r) {
        case Role::Inflate:
        case Role::Deflate: {
          if (chain->readable_bytes % 4 != 0 || chain->readable_bytes > 4 * 65536)
            throw QueueError(fmt::format("virtio-balloon: pfn array of {} bytes", chain->readable_bytes));
          std::vector<uint32_t> pfns(chain->readable_bytes / 4);
          copy_from_segments(mem_, chain->readable, 0,
                             std::span<uint8_t>(reinterpret_cast<uint8_t*>(pfns.data()), pfns.size() * 4));
          if (r == Role::Inflate) {
            // Coalesce runs of consecutive frames into one discard.
            size_t i = 0;
            while (i < pfns.size()) {
              size_t j = i + 1;
              while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1) ++j;
              discard_range(uint64_t{pfns[i]} * kPageSize, (j - i) * kPageSize);
              i = j;
            }
          }
          // Deflate: nothing to do, the pages fault back in on the guest's next touch.
          complete(q, *chain, 0);
          break;
        }
        case Role::Stats: {
          // Entries are packed {le16 tag; le64 val} (10 bytes). Keep the buffer until we want more.
          if (chain->readable_bytes > 10 * 64) throw QueueError("virtio-balloon: stats buffer too large");
          std::vector<uint8_t> raw(chain->readable_bytes);
          copy_from_segments(mem_, chain->readable, 0, raw);
          for (size_t off = 0; off + 10 <= raw.size(); off += 10) {
            uint16_t tag;
            uint64_t val;
            std::memcpy(&tag, &raw[off], 2);
            std::memcpy(&val, &raw[off + 2], 8);
            stats_[tag] = val;
          }
          if (stats_chain_) complete(q, *stats_chain_, 0);  // the driver sent a new one: release the old
          stats_chain_ = std::move(*chain);
          break;
        }
        case Role::Reporting: {
          for (const auto& s : chain->writable) discard_range(s.addr, s.len);
          complete(q, *chain, 0);
          break;
        }
        case Role::None:
          complete(q, *chain, 0);
          break;
      }
    }
  } while (vq->enable_notifications());
}

}  // namespace vireo::virtio
