// vireo/memory: guest RAM. memfd-backed (so snapshots, migration and sharing can map it elsewhere), optional
// hugepages and THP, MAP_NORESERVE overcommit, and bounds-checked guest-physical accessors.
//
// Device code never does pointer arithmetic on guest addresses: it calls read/write/read_obj/write_obj, or
// slice() for zero-copy I/O, all of which check that [gpa, gpa+len) lies wholly inside one RAM region and
// throw GuestMemoryError otherwise (the caller marks its device broken; the VMM goes on).
#pragma once
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "common/layout.h"

namespace vireo {


class GuestMemoryError : public Error {
 public:
  using Error::Error;
};

struct MemoryConfig {
  uint64_t size = 0;         // bytes of RAM; must be a non-zero multiple of 4 KiB (2 MiB with hugepages)
  bool hugepages = false;    // back with MFD_HUGETLB (2 MiB pages); fails clearly if none are reserved
  bool thp = true;           // madvise(MADV_HUGEPAGE) on ordinary RAM
  bool prealloc = false;     // touch every page now instead of on first guest access
  std::string name = "vireo-ram";  // memfd name (visible in /proc/PID/fd)
  // Snapshot restore: map this file (exactly `size` bytes, the layout a snapshot's memory file has)
  // MAP_PRIVATE instead of creating a memfd. Pages are read from the file on first touch (lazy restore) and
  // copied on write, so the file is never modified; hugepages/prealloc do not apply.
  std::string private_file{};
};

struct MemoryRegion {
  uint64_t gpa = 0;          // guest-physical start
  uint64_t size = 0;
  uint8_t* host = nullptr;   // host mapping of the whole region
  uint64_t fd_offset = 0;    // offset of this region inside the memfd
};

class GuestMemory {
 public:
  // Lays out `cfg.size` bytes of RAM: up to kLowRamEnd at 0, the rest at kHighRamStart. One memfd backs all
  // regions. Throws Error with context (e.g. "guest memory: 64 hugepages needed, 0 free").
  explicit GuestMemory(const MemoryConfig& cfg);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  uint64_t size() const { return total_; }
  const std::vector<MemoryRegion>& regions() const { return regions_; }
  // The memfd backing RAM, or -1 for a private file mapping (a restored VM).
  int memfd() const { return private_ ? -1 : memfd_.get(); }
  const uint8_t* host_base() const { return base_; }  // the one mapping of all RAM, memfd/file offset order

  // True if [gpa, gpa+len) lies inside one RAM region (len 0 is true for any gpa inside RAM or at its end).
  bool contains(uint64_t gpa, uint64_t len) const;

  // Host view of [gpa, gpa+len) when it lies inside one region; std::nullopt otherwise. The span stays valid
  // for the lifetime of this object. The guest may change the bytes at any time: copy before validating.
  std::optional<std::span<uint8_t>> slice(uint64_t gpa, uint64_t len) const;

  // Bounds-checked copies; throw GuestMemoryError("guest memory: access 0x...+0x... outside RAM").
  void read(uint64_t gpa, std::span<uint8_t> out) const;
  void write(uint64_t gpa, std::span<const uint8_t> in);

  template <typename T>
  T read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    read(gpa, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof(T)));
    return v;
  }
  template <typename T>
  void write_obj(uint64_t gpa, const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write(gpa, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(T)));
  }

  // Returns guest pages to the host (balloon): MADV_REMOVE/FALLOC_FL_PUNCH_HOLE on the memfd range.
  // [gpa, gpa+len) must be page-aligned and inside one region.
  void discard(uint64_t gpa, uint64_t len);

 private:
  const MemoryRegion* find(uint64_t gpa, uint64_t len) const;
  void map_private_file(const MemoryConfig& cfg);
  void lay_out_regions(uint64_t size);

  UniqueFd memfd_;
  uint64_t total_ = 0;
  uint64_t page_size_ = 4096;
  bool private_ = false;  // base_ is a MAP_PRIVATE mapping of a snapshot's memory file
  std::vector<MemoryRegion> regions_;
  uint8_t* base_ = nullptr;  // one mapping of the whole memfd; regions point into it
};

}  // namespace vireo
