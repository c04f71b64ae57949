// vireo/block: read support for three table-mapped formats people migrate from:
//   vpc  - Microsoft Virtual PC / Hyper-V VHD, fixed and dynamic (big-endian footer, dynamic header, BAT)
//   vdi  - VirtualBox VDI (little-endian header, block map of 1 MiB blocks)
//   qed  - QEMU Enhanced Disk (two-level tables, optional backing file)
// Every header field and table entry is bounds-checked; failures are one-line errors (qemu's texts where
// qemu has one).
#pragma once
#include <memory>
#include <span>
#include <string>

#include "block/block.h"

namespace vireo::block {

bool probe_vpc(std::span<const uint8_t> head);   // "conectix" at 0 (dynamic; fixed images probe as raw)
bool probe_vdi(std::span<const uint8_t> head);
bool probe_qed(std::span<const uint8_t> head);
std::unique_ptr<BlockImage> open_vpc(const std::string& path, const OpenOptions& opts);
std::unique_ptr<BlockImage> open_vdi(const std::string& path, const OpenOptions& opts);
std::unique_ptr<BlockImage> open_qed(const std::string& path, const OpenOptions& opts);

}  // namespace vireo::block
