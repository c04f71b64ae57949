#include "memory/guest_memory.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "common/size.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace vireo {

namespace {

constexpr uint64_t kHugePage = 2ull << 20;

// Free 2 MiB hugepages in the default pool, or -1 if the pool is not visible.
long free_hugepages() {
  std::ifstream f("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  long n = -1;
  if (f) f >> n;
  return f ? n : -1;
}

}  // namespace

GuestMemory::GuestMemory(const MemoryConfig& cfg) {
  if (!cfg.private_file.empty()) {
    map_private_file(cfg);
    return;
  }
  page_size_ = cfg.hugepages ? kHugePage : 4096;
  if (cfg.size == 0) fail("guest memory: size must not be 0");
  if (cfg.size % page_size_ != 0)
    fail("guest memory: size {} is not a multiple of {}", format_size(cfg.size), format_size(page_size_));
  // x86-64 guests address 52 bits physically at most; refuse absurd sizes before the kernel does.
  if (cfg.size > (1ull << 46)) fail("guest memory: size {} is too large", format_size(cfg.size));

  unsigned flags = MFD_CLOEXEC;
  if (cfg.hugepages) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  memfd_.reset(::memfd_create(cfg.name.c_str(), flags));
  if (!memfd_) throw_errno(cfg.hugepages ? "guest memory: memfd_create(MFD_HUGETLB)" : "guest memory: memfd_create");
  if (cfg.hugepages) {
    const long free = free_hugepages();
    const uint64_t need = cfg.size / kHugePage;
    if (free >= 0 && static_cast<uint64_t>(free) < need)
      fail("guest memory: {} hugepages of 2 MiB needed, {} free (reserve them in /proc/sys/vm/nr_hugepages)",
           need, free);
  }
  if (::ftruncate(memfd_.get(), static_cast<off_t>(cfg.size)) < 0)
    throw_errno(fmt::format("guest memory: resize memfd to {}", format_size(cfg.size)));

  int mflags = MAP_SHARED;
  if (!cfg.hugepages) mflags |= MAP_NORESERVE;  // hugetlb: reserve now so a shortage fails here, not at a fault
  void* p = ::mmap(nullptr, cfg.size, PROT_READ | PROT_WRITE, mflags, memfd_.get(), 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    if (cfg.hugepages && err == ENOMEM)
      fail("guest memory: cannot reserve {} of hugepages (not enough free 2 MiB pages)", format_size(cfg.size));
    throw_errno(fmt::format("guest memory: mmap {}", format_size(cfg.size)), err);
  }
  base_ = static_cast<uint8_t*>(p);
  total_ = cfg.size;
  if (cfg.thp && !cfg.hugepages) ::madvise(base_, total_, MADV_HUGEPAGE);  // advisory: ignore failure
  // Guest RAM must not end up in core dumps of the VMM (size, and guest secrets).
  ::madvise(base_, total_, MADV_DONTDUMP);
  if (cfg.prealloc) {
    if (::madvise(base_, total_, MADV_POPULATE_WRITE) < 0) {
      if (errno != EINVAL) {
        const int err = errno;
        ::munmap(base_, total_);
        base_ = nullptr;
        throw_errno(fmt::format("guest memory: preallocate {}", format_size(cfg.size)), err);
      }
      // Older kernels: touch every page.
      for (uint64_t off = 0; off < total_; off += page_size_) base_[off] = 0;
    }
  }

  lay_out_regions(cfg.size);
}

void GuestMemory::map_private_file(const MemoryConfig& cfg) {
  page_size_ = 4096;
  if (cfg.size == 0 || cfg.size % page_size_ != 0)
    fail("guest memory: size {} is not a non-zero multiple of 4 KiB", cfg.size);
  memfd_.reset(::open(cfg.private_file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!memfd_) throw_errno("guest memory: open " + cfg.private_file);
  struct stat st {};
  if (::fstat(memfd_.get(), &st) < 0) throw_errno("guest memory: stat " + cfg.private_file);
  if (!S_ISREG(st.st_mode)) fail("guest memory: {} is not a regular file", cfg.private_file);
  if (static_cast<uint64_t>(st.st_size) != cfg.size)
    fail("guest memory: {} has {} bytes, the VM has {} of RAM", cfg.private_file, st.st_size, cfg.size);
  // Writable private mapping of a read-only fd: copy-on-write pages, the snapshot file stays as it was.
  void* p = ::mmap(nullptr, cfg.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, memfd_.get(), 0);
  if (p == MAP_FAILED) throw_errno(fmt::format("guest memory: mmap {}", cfg.private_file));
  base_ = static_cast<uint8_t*>(p);
  total_ = cfg.size;
  private_ = true;
  ::madvise(base_, total_, MADV_DONTDUMP);
  lay_out_regions(cfg.size);
}

void GuestMemory::lay_out_regions(uint64_t size) {
  const uint64_t low = std::min<uint64_t>(size, layout::kLowRamEnd);
  regions_.push_back(MemoryRegion{0, low, base_, 0});
  if (size > low) regions_.push_back(MemoryRegion{layout::kHighRamStart, size - low, base_ + low, low});
}

GuestMemory::~GuestMemory() {
  if (base_) ::munmap(base_, total_);
}

const MemoryRegion* GuestMemory::find(uint64_t gpa, uint64_t len) const {
  for (const auto& r : regions_) {
    if (gpa < r.gpa) continue;
    const uint64_t off = gpa - r.gpa;
    if (off > r.size) continue;
    if (len > r.size - off) continue;
    return &r;
  }
  return nullptr;
}

bool GuestMemory::contains(uint64_t gpa, uint64_t len) const { return find(gpa, len) != nullptr; }

std::optional<std::span<uint8_t>> GuestMemory::slice(uint64_t gpa, uint64_t len) const {
  const MemoryRegion* r = find(gpa, len);
  if (!r) return std::nullopt;
  return std::span<uint8_t>(r->host + (gpa - r->gpa), len);
}

void GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
  const MemoryRegion* r = find(gpa, out.size());
  if (!r) throw GuestMemoryError(fmt::format("guest memory: access 0x{:x}+0x{:x} outside RAM", gpa, out.size()));
  if (!out.empty()) std::memcpy(out.data(), r->host + (gpa - r->gpa), out.size());
}

void GuestMemory::write(uint64_t gpa, std::span<const uint8_t> in) {
  const MemoryRegion* r = find(gpa, in.size());
  if (!r) throw GuestMemoryError(fmt::format("guest memory: access 0x{:x}+0x{:x} outside RAM", gpa, in.size()));
  if (!in.empty()) std::memcpy(r->host + (gpa - r->gpa), in.data(), in.size());
}

void GuestMemory::discard(uint64_t gpa, uint64_t len) {
  if (gpa % page_size_ != 0 || len % page_size_ != 0)
    throw GuestMemoryError(fmt::format("guest memory: discard 0x{:x}+0x{:x} is not {}-aligned", gpa, len,
                                       format_size(page_size_)));
  const MemoryRegion* r = find(gpa, len);
  if (!r) throw GuestMemoryError(fmt::format("guest memory: discard 0x{:x}+0x{:x} outside RAM", gpa, len));
  if (len == 0) return;
  if (private_) {
    // Private file mapping: dropping the copied pages frees them (they read back as the snapshot's bytes,
    // which a driver must not rely on either way).
    if (::madvise(r->host + (gpa - r->gpa), len, MADV_DONTNEED) < 0)
      throw_errno(fmt::format("guest memory: discard 0x{:x}+0x{:x}", gpa, len));
    return;
  }
  const uint64_t off = r->fd_offset + (gpa - r->gpa);
  if (::fallocate(memfd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(len)) < 0)
    throw_errno(fmt::format("guest memory: discard 0x{:x}+0x{:x}", gpa, len));
}

}  // namespace vireo
