#include "virtio/virtqueue.h"

#include <atomic>
#include <cstring>

namespace vireo::virtio {

namespace {

uint16_t load16(const uint8_t* p) { return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_RELAXED); }
void store16(uint8_t* p, uint16_t v) { __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, __ATOMIC_RELAXED); }

uint8_t* area(GuestMemory& mem, uint64_t gpa, uint64_t len, uint64_t align, const char* what) {
  if (gpa % align != 0) throw QueueError(fmt::format("virtqueue: {} address {:#x} not {}-byte aligned", what, gpa, align));
  auto s = mem.slice(gpa, len);
  if (!s) throw QueueError(fmt::format("virtqueue: {} {:#x}+{:#x} outside guest RAM", what, gpa, len));
  return s->data();
}

}  // namespace

SplitQueue::SplitQueue(GuestMemory& mem, const QueueConfig& cfg, uint64_t features)
    : mem_(mem),
      size_(cfg.size),
      indirect_(features & bit(kFIndirectDesc)),
      event_idx_(features & bit(kFEventIdx)) {
  if (size_ == 0 || size_ > kMaxQueueSize || (size_ & (size_ - 1)) != 0)
    throw QueueError(fmt::format("virtqueue: size {} is not a power of two in 1..32768", size_));
  desc_ = area(mem, cfg.desc_addr, desc_table_bytes(size_), 16, "descriptor table");
  avail_ = area(mem, cfg.driver_addr, avail_ring_bytes(size_), 2, "available ring");
  used_ = area(mem, cfg.device_addr, used_ring_bytes(size_), 4, "used ring");
}

uint16_t SplitQueue::avail_idx() const {
  uint16_t idx = load16(avail_ + 2);
  // Ring entries and descriptors written before idx must be read after it.
  std::atomic_thread_fence(std::memory_order_acquire);
  return idx;
}

void SplitQueue::add_segment(const VringDesc& d, DescChain& chain, bool& seen_writable) {
  bool w = d.flags & kDescFWrite;
  if (!w && seen_writable) throw QueueError("virtqueue: device-readable descriptor after a device-writable one");
  if (!mem_.contains(d.addr, d.len))
    throw QueueError(fmt::format("virtqueue: buffer {:#x}+{:#x} outside guest RAM", d.addr, d.len));
  seen_writable |= w;
  if (d.len == 0) return;
  if (w) {
    chain.writable.push_back({d.addr, d.len});
    chain.writable_bytes += d.len;
  } else {
    chain.readable.push_back({d.addr, d.len});
    chain.readable_bytes += d.len;
  }
}

void SplitQueue::walk_indirect(const VringDesc& ref, DescChain& chain, bool& seen_writable) {
  if (!indirect_) throw QueueError("virtqueue: indirect descriptor without VIRTIO_F_INDIRECT_DESC");
  if (ref.flags & kDescFNext) throw QueueError("virtqueue: descriptor has both INDIRECT and NEXT");
  if (ref.len == 0 || ref.len % 16 != 0 || ref.len / 16 > kMaxQueueSize)
    throw QueueError(fmt::format("virtqueue: indirect table length {} invalid", ref.len));
  auto table = mem_.slice(ref.addr, ref.len);
  if (!table)
    throw QueueError(fmt::format("virtqueue: indirect table {:#x}+{:#x} outside guest RAM", ref.addr, ref.len));
  const uint32_t n = ref.len / 16;
  uint32_t i = 0;
  for (uint32_t count = 0;; ++count) {
    if (count >= n) throw QueueError("virtqueue: loop in indirect descriptor table");
    VringDesc d;
    std::memcpy(&d, table->data() + 16ull * i, sizeof d);  // copy first: the guest may change it
    if (d.flags & kDescFIndirect) throw QueueError("virtqueue: indirect descriptor inside an indirect table");
    add_segment(d, chain, seen_writable);
    if (!(d.flags & kDescFNext)) break;
    if (d.next >= n) throw QueueError(fmt::format("virtqueue: indirect next index {} >= table size {}", d.next, n));
    i = d.next;
  }
}

std::optional<DescChain> SplitQueue::pop() {
  uint16_t idx = avail_idx();
  uint16_t pending = static_cast<uint16_t>(idx - last_avail_);
  if (pending == 0) return std::nullopt;
  if (pending > size_)
    throw QueueError(fmt::format("virtqueue: available index jumped from {} to {} (queue size {})", last_avail_, idx, size_));
  uint16_t head = load16(avail_ + 4 + 2u * (last_avail_ % size_));
  if (head >= size_) throw QueueError(fmt::format("virtqueue: head index {} >= queue size {}", head, size_));

  DescChain chain;
  chain.id = head;
  bool seen_writable = false;
  uint16_t i = head;
  for (uint32_t count = 0;; ++count) {
    if (count >= size_) throw QueueError("virtqueue: descriptor chain longer than the queue (loop?)");
    VringDesc d;
    std::memcpy(&d, desc_ + 16u * i, sizeof d);
    ++chain.desc_count;
    if (d.flags & kDescFIndirect) {
      walk_indirect(d, chain, seen_writable);
      break;  // INDIRECT with NEXT was refused: the chain ends here
    }
    add_segment(d, chain, seen_writable);
    if (!(d.flags & kDescFNext)) break;
    if (d.next >= size_) throw QueueError(fmt::format("virtqueue: next index {} >= queue size {}", d.next, size_));
    i = d.next;
  }
  ++last_avail_;
  return chain;
}

void SplitQueue::push(const DescChain& chain, uint32_t written) {
  if (chain.id >= size_) throw QueueError("virtqueue: push of an invalid id");
  VringUsedElem e{chain.id, written};
  std::memcpy(used_ + 4 + 8u * (used_idx_ % size_), &e, sizeof e);
  // The element must be visible before the index.
  std::atomic_thread_fence(std::memory_order_release);
  ++used_idx_;
  store16(used_ + 2, used_idx_);
}

bool SplitQueue::should_notify() {
  // Our used idx store must be ordered before reading the driver's suppression state.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!event_idx_) {
    return !(load16(avail_) & kAvailFNoInterrupt);
  }
  uint16_t old = signalled_used_;
  bool valid = signalled_valid_;
  signalled_used_ = used_idx_;
  signalled_valid_ = true;
  if (!valid) return true;
  uint16_t used_event = load16(avail_ + 4 + 2u * size_);
  return need_event(used_event, used_idx_, old);
}

void SplitQueue::disable_notifications() {
  notifications_enabled_ = false;
  if (!event_idx_) store16(used_, kUsedFNoNotify);
  // With event idx, not moving avail_event forward is enough.
}

bool SplitQueue::enable_notifications() {
  notifications_enabled_ = true;
  if (event_idx_) {
    store16(used_ + 4 + 8u * size_, last_avail_);  // avail_event: notify when the next buffer is added
  } else {
    store16(used_, 0);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return static_cast<uint16_t>(load16(avail_ + 2) - last_avail_) != 0;
}

size_t copy_from_segments(const GuestMemory& mem, const std::vector<Segment>& segs, uint64_t offset,
                          std::span<uint8_t> out) {
  size_t done = 0;
  for (const auto& s : segs) {
    if (done == out.size()) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    size_t n = std::min<uint64_t>(s.len - offset, out.size() - done);
    mem.read(s.addr + offset, out.subspan(done, n));
    done += n;
    offset = 0;
  }
  return done;
}

size_t copy_to_segments(GuestMemory& mem, const std::vector<Segment>& segs, uint64_t offset,
                        std::span<const uint8_t> in) {
  size_t done = 0;
  for (const auto& s : segs) {
    if (done == in.size()) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    size_t n = std::min<uint64_t>(s.len - offset, in.size() - done);
    mem.write(s.addr + offset, in.subspan(done, n));
    done += n;
    offset = 0;
  }
  return done;
}

SplitQueue::State SplitQueue::state() const {
  return {last_avail_, used_idx_, signalled_used_, signalled_valid_, notifications_enabled_};
}

void SplitQueue::set_state(const State& s) {
  const uint16_t ring_used = load16(used_ + 2);
  if (ring_used != s.used_idx)
    throw QueueError(fmt::format("virtqueue: used idx {} saved, the used ring in memory says {}", s.used_idx, ring_used));
  const uint16_t in_flight = static_cast<uint16_t>(s.last_avail - s.used_idx);
  if (in_flight > size_) throw QueueError(fmt::format("virtqueue: {} buffers in flight in a queue of {}", in_flight, size_));
  const uint16_t ahead = static_cast<uint16_t>(avail_idx() - s.last_avail);
  if (ahead > size_)
    throw QueueError(fmt::format("virtqueue: avail idx runs {} ahead of last_avail {} (queue size {})", ahead, s.last_avail, size_));
  last_avail_ = s.last_avail;
  used_idx_ = s.used_idx;
  signalled_used_ = s.signalled_used;
  signalled_valid_ = s.signalled_valid;
  notifications_enabled_ = s.notifications_enabled;
}

}  // namespace vireo::virtio
