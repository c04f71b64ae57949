#include "virtio/rng.h"

#include <sys/random.h>

#include <cerrno>

namespace vireo::virtio {

namespace {
constexpr uint32_t kMaxPerRequest = 64 * 1024;  // bound the work one guest buffer can ask for
}

RngDevice::RngDevice(GuestMemory& mem, std::string id) : VirtioDevice(mem, std::move(id), kTypeRng, 1, 256) {}

RngDevice::~RngDevice() { shutdown(); }

void RngDevice::process_queue(uint16_t q) {
  Virtqueue* vq = queue(q);
  if (!vq) return;
  std::vector<uint8_t> buf;
  do {
    vq->disable_notifications();
    while (auto chain = vq->pop()) {
      uint32_t want = static_cast<uint32_t>(std::min<uint64_t>(chain->writable_bytes, kMaxPerRequest));
      buf.resize(want);
      size_t got = 0;
      while (got < want) {
        ssize_t n = ::getrandom(buf.data() + got, want - got, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          break;
        }
        got += static_cast<size_t>(n);
      }
      copy_to_segments(mem_, chain->writable, 0, std::span<const uint8_t>(buf.data(), got));
      complete(q, *chain, static_cast<uint32_t>(got));
    }
  } while (vq->enable_notifications());
}

}  // namespace vireo::virtio
