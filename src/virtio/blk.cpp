#include "virtio/blk.h"

#include <cstring>

namespace vireo::virtio {

using namespace blk;

namespace {

constexpr uint32_t kMaxDiscardSectors = 0x3fffff;  // 2 GiB - per segment
constexpr uint32_t kMaxWriteZeroesSectors = 0x3fffff;

template <typename T>
void put(std::vector<uint8_t>& cfg, size_t off, T v) {
  std::memcpy(cfg.data() + off, &v, sizeof v);
}

struct ReqHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(ReqHeader) == 16);

struct DiscardSegment {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};
static_assert(sizeof(DiscardSegment) == 16);

// The segments of `segs` from byte `offset`, `len` bytes long.
std::vector<Segment> sub_segments(const std::vector<Segment>& segs, uint64_t offset, uint64_t len) {
  std::vector<Segment> out;
  for (const auto& s : segs) {
    if (len == 0) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(s.len - offset, len);
    out.push_back({s.addr + offset, static_cast<uint32_t>(n)});
    len -= n;
    offset = 0;
  }
  return out;
}

}  // namespace

BlockDevice::BlockDevice(GuestMemory& mem, std::string id, std::unique_ptr<block::BlockBackend> backend,
                         const Config& cfg)
    : VirtioDevice(mem, std::move(id), kTypeBlock, cfg.num_queues ? cfg.num_queues : 1, cfg.queue_size),
      backend_(std::move(backend)),
      cfg_(cfg),
      read_only_(backend_->read_only()),
      capacity_bytes_(backend_->size() / kSectorSize * kSectorSize) {
  config_.assign(60, 0);
  put<uint64_t>(config_, 0, capacity_bytes_ / kSectorSize);  // capacity
  put<uint32_t>(config_, 12, cfg.queue_size - 2);            // seg_max
  put<uint32_t>(config_, 20, kSectorSize);                   // blk_size
  put<uint16_t>(config_, 34, num_queues());                  // num_queues
  put<uint32_t>(config_, 36, kMaxDiscardSectors);            // max_discard_sectors
  put<uint32_t>(config_, 40, 1);                             // max_discard_seg
  put<uint32_t>(config_, 44, 1);                             // discard_sector_alignment
  put<uint32_t>(config_, 48, kMaxWriteZeroesSectors);        // max_write_zeroes_sectors
  put<uint32_t>(config_, 52, 1);                             // max_write_zeroes_seg
  config_[56] = 1;                                           // write_zeroes_may_unmap
}

BlockDevice::~BlockDevice() {
  shutdown();
  backend_->drain();
}

uint64_t BlockDevice::features() const {
  uint64_t f = bit(kFSegMax) | bit(kFBlkSize) | bit(kFFlush) | bit(kFDiscard) | bit(kFWriteZeroes);
  if (read_only_) f |= bit(kFRo);
  if (num_queues() > 1) f |= bit(kFMq);
  return f;
}

void BlockDevice::quiesce() { backend_->drain(); }

void BlockDevice::process_queue(uint16_t q) {
  Virtqueue* vq = queue(q);
  if (!vq) return;
  do {
    vq->disable_notifications();
    while (auto chain = vq->pop()) handle(q, std::move(*chain));
  } while (vq->enable_notifications());
}

void BlockDevice::finish(uint16_t q, const DescChain& chain, uint8_t status, uint32_t data_written) {
  // The status byte is the last byte of the writable part.
  copy_to_segments(mem_, chain.writable, chain.writable_bytes - 1, std::span<const uint8_t>(&status, 1));
  complete(q, chain, data_written + 1);
}

void BlockDevice::handle(uint16_t q, DescChain chain) {
  ReqHeader h{};
  if (chain.readable_bytes < sizeof h) throw QueueError("virtio-blk: request without a 16-byte header");
  if (chain.writable_bytes < 1) throw QueueError("virtio-blk: request without a status byte");
  copy_from_segments(mem_, chain.readable, 0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&h), sizeof h));
  const uint64_t in_len = chain.writable_bytes - 1;          // device-writable data (before the status)
  const uint64_t out_len = chain.readable_bytes - sizeof h;  // device-readable data (after the header)

  auto submit = [&](block::IoRequest req, uint32_t written_on_success) {
    uint64_t gen = reset_generation();
    auto shared_chain = std::make_shared<DescChain>(std::move(chain));
    req.done = [this, q, gen, shared_chain, written_on_success](int result) {
      with_device_lock(gen, [&] {
        finish(q, *shared_chain, result == 0 ? kSOk : kSIoErr, result == 0 ? written_on_success : 0);
      });
    };
    backend_->submit(std::move(req));
  };
  auto to_iov = [&](const std::vector<Segment>& segs) {
    std::vector<iovec> iov;
    iov.reserve(segs.size());
    for (const auto& s : segs) {
      auto span = mem_.slice(s.addr, s.len);
      if (!span) throw QueueError("virtio-blk: buffer outside guest RAM");
      iov.push_back({span->data(), span->size()});
    }
    return iov;
  };
  auto in_range = [&](uint64_t sector, uint64_t bytes) {
    if (sector > capacity_bytes_ / kSectorSize) return false;
    uint64_t off = sector * kSectorSize;
    return bytes <= capacity_bytes_ - off;
  };

  switch (h.type) {
    case kTIn: {
      if (in_len % kSectorSize != 0 || !in_range(h.sector, in_len)) return finish(q, chain, kSIoErr, 0);
      if (in_len == 0) return finish(q, chain, kSOk, 0);
      block::IoRequest req;
      req.kind = block::IoKind::Read;
      req.offset = h.sector * kSectorSize;
      req.iov = to_iov(sub_segments(chain.writable, 0, in_len));
      return submit(std::move(req), static_cast<uint32_t>(in_len));
    }
    case kTOut: {
      if (read_only_ || out_len % kSectorSize != 0 || !in_range(h.sector, out_len)) return finish(q, chain, kSIoErr, 0);
      if (out_len == 0) return finish(q, chain, kSOk, 0);
      block::IoRequest req;
      req.kind = block::IoKind::Write;
      req.offset = h.sector * kSectorSize;
      req.iov = to_iov(sub_segments(chain.readable, sizeof h, out_len));
      return submit(std::move(req), 0);
    }
    case kTFlush: {
      if (!negotiated(kFFlush)) return finish(q, chain, kSUnsupp, 0);
      block::IoRequest req;
      req.kind = block::IoKind::Flush;
      return submit(std::move(req), 0);
    }
    case kTGetId: {
      uint8_t id[kIdBytes] = {};
      std::memcpy(id, cfg_.serial.data(), std::min<size_t>(cfg_.serial.size(), kIdBytes));
      size_t n = std::min<uint64_t>(in_len, kIdBytes);
      copy_to_segments(mem_, chain.writable, 0, std::span<const uint8_t>(id, n));
      return finish(q, chain, kSOk, static_cast<uint32_t>(n));
    }
    case kTDiscard:
    case kTWriteZeroes: {
      bool discard = h.type == kTDiscard;
      if (!negotiated(discard ? kFDiscard : kFWriteZeroes)) return finish(q, chain, kSUnsupp, 0);
      if (read_only_) return finish(q, chain, kSIoErr, 0);
      // We advertise max_*_seg = 1: exactly one 16-byte segment.
      if (out_len != sizeof(DiscardSegment)) return finish(q, chain, kSUnsupp, 0);
      DiscardSegment seg{};
      copy_from_segments(mem_, chain.readable, sizeof h, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&seg), sizeof seg));
      // Flags: bit 0 = unmap; other bits reserved. Unmap is only meaningful for write-zeroes.
      if ((seg.flags & ~1u) || (discard && (seg.flags & 1))) return finish(q, chain, kSUnsupp, 0);
      uint32_t max = discard ? kMaxDiscardSectors : kMaxWriteZeroesSectors;
      if (seg.num_sectors > max || !in_range(seg.sector, uint64_t{seg.num_sectors} * kSectorSize))
        return finish(q, chain, kSIoErr, 0);
      block::IoRequest req;
      req.kind = discard ? block::IoKind::Discard : block::IoKind::WriteZeroes;
      req.offset = seg.sector * kSectorSize;
      req.length = uint64_t{seg.num_sectors} * kSectorSize;
      req.may_unmap = seg.flags & 1;
      return submit(std::move(req), 0);
    }
    default:
      return finish(q, chain, kSUnsupp, 0);
  }
}

}  // namespace vireo::virtio
