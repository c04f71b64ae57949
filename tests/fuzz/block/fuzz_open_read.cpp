// libFuzzer target: an arbitrary file as a qcow2 (or raw) image, opened read-only, read, mapped, checked.
// Every input must end in success or a vireo::Error: never a crash, hang, or huge allocation.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "block/qcow2.h"
#include "common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("vireo-fuzz-image", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    vireo::block::OpenOptions o;
    o.read_only = true;
    o.force_share = true;
    o.open_backing = false;  // the fuzzer must not wander the host file system
    auto img = vireo::block::open_image(path, o);
    uint64_t sz = img->size();
    std::vector<uint8_t> buf(65536 * 2);
    const uint64_t probes[] = {0, 512, 65536 - 100, 1 << 20, sz / 2, sz > 70000 ? sz - 70000 : 0};
    for (uint64_t off : probes) {
      if (off >= sz) continue;
      uint64_t len = std::min<uint64_t>(buf.size(), sz - off);
      try {
        img->read(off, std::span<uint8_t>(buf.data(), len));
      } catch (const vireo::Error&) {
      }
      try {
        uint64_t pos = off;
        for (int i = 0; i < 8 && pos < sz; i++) {
          auto e = img->block_status(pos, sz - pos);
          if (e.length == 0) abort();  // must always make progress
          pos = e.offset + e.length;
        }
      } catch (const vireo::Error&) {
      }
    }
    if (auto* q = dynamic_cast<vireo::block::Qcow2Image*>(img.get())) {
      q->info();
      q->snapshots();
      q->check(vireo::block::RepairMode::None);
    }
  } catch (const vireo::Error&) {
  }
  close(fd);
  return 0;
}
