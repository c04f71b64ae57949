// Shared by the format fuzz targets: an input as an anonymous file, opened read-only like `qemu-img info`,
// then read, mapped and checked. Every input must end in success or a vireo::Error.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "block/block.h"
#include "block/formats.h"
#include "common/error.h"

namespace fuzz {

struct MemFile {
  int fd = -1;
  std::string path;
  MemFile(const uint8_t* data, size_t size) {
    fd = memfd_create("vireo-fuzz", MFD_CLOEXEC);
    size_t done = 0;
    while (fd >= 0 && done < size) {
      ssize_t n = write(fd, data + done, size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  ~MemFile() {
    if (fd >= 0) close(fd);
  }
};

inline void exercise(vireo::block::BlockImage& img) {
  const uint64_t sz = img.size();
  std::vector<uint8_t> buf(1 << 17);
  const uint64_t probes[] = {0, 512, 65536 - 100, 1 << 20, sz / 2, sz > 70000 ? sz - 70000 : 0};
  for (uint64_t off : probes) {
    if (off >= sz) continue;
    const uint64_t len = std::min<uint64_t>(buf.size(), sz - off);
    try {
      img.read(off, std::span<uint8_t>(buf.data(), len));
    } catch (const vireo::Error&) {
    }
    try {
      uint64_t pos = off;
      for (int i = 0; i < 8 && pos < sz; i++) {
        auto e = img.block_status(pos, sz - pos);
        if (e.length == 0) abort();   // must always make progress
        pos = e.offset + e.length;
      }
    } catch (const vireo::Error&) {
    }
  }
  if (auto* d = dynamic_cast<vireo::block::ImageDetails*>(&img)) {
    d->format_specific();
    d->cluster_size();
    if (d->can_check()) {
      try {
        d->check(vireo::block::RepairMode::None);
      } catch (const vireo::Error&) {
      }
    }
  }
}

inline void open_and_exercise(const std::string& path, const char* format) {
  vireo::block::OpenOptions o;
  o.format = format;
  o.read_only = true;
  o.force_share = true;
  o.open_backing = false;   // never wander the host file system
  o.no_io = true;
  try {
    auto img = vireo::block::open_image(path, o);
    exercise(*img);
  } catch (const vireo::Error&) {
  }
}

}  // namespace fuzz
