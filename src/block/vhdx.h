// vireo/block: Microsoft VHDX ([MS-VHDX] v1.0): dynamic and fixed images, read and write. Headers and region
// tables are CRC-32C checked; a pending log is reported (not replayed). Metadata updates (BAT entries) are
// written after the data they point at has been synced; headers get a new sequence number and data write
// GUID on the first write, as the spec asks.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <vector>
#include <span>
#include <string>

#include "block/block.h"
#include "block/file.h"

namespace vireo::block::vhdx {

bool probe(std::span<const uint8_t> head);
std::unique_ptr<BlockImage> open(const std::string& path, const OpenOptions& opts);
void create(const std::string& path, const CreateOptions& c);
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

// The parsers the driver uses, exposed for tests and fuzzing: each validates one structure and throws a
// one-line Error naming what is wrong.
struct Header {
  uint64_t seq = 0;
  uint8_t file_write_guid[16]{}, data_write_guid[16]{}, log_guid[16]{};
  uint16_t log_version = 0, version = 1;
  uint32_t log_length = 0;
  uint64_t log_offset = 0;
};
// nullopt when the 4 KiB block is not a valid header (bad signature or checksum).
std::optional<Header> parse_header(std::span<const uint8_t> block4k);
struct Regions {
  uint64_t bat_offset = 0, bat_length = 0, meta_offset = 0, meta_length = 0;
};
Regions parse_region_table(std::span<const uint8_t> table64k, uint64_t file_len);
struct Metadata {
  uint32_t block_size = 0, logical_sector = 512, physical_sector = 512;
  uint64_t virtual_size = 0;
  bool has_parent = false, leave_blocks_allocated = false;
};
// `region` is the whole metadata region.
Metadata parse_metadata(std::span<const uint8_t> region);

// The log ([MS-VHDX] 2.3, vhdx_log.cpp).
struct LogDescriptor {
  bool zero = false;                 // "zero" (write `length` zero bytes) or "desc" (one 4 KiB data sector)
  uint64_t file_offset = 0, length = 4096;
  uint64_t leading = 0;              // data: bytes 0..7 and 4092..4095 of the sector, kept in the descriptor
  uint32_t trailing = 0;
  uint64_t data_pos = 0;             // data: position of its data sector in the log
};
struct LogEntry {
  uint64_t pos = 0, sectors = 0, seq = 0, flushed_file_offset = 0, last_file_offset = 0;
  std::vector<LogDescriptor> descs;
};
// Reads the 4 KiB sector at byte `pos` (< log length) of the log.
using LogReader = std::function<void(uint64_t pos, std::span<uint8_t> sector)>;
// The active log sequence (empty: nothing to replay). Throws Error (EINVAL) naming the defect when the log
// length is not a multiple of 1 MiB or an entry with a valid header has malformed descriptors.
std::vector<LogEntry> find_log_sequence(const LogReader& rd, uint32_t log_length, const uint8_t* log_guid);
// Everything replay relies on, before anything is written: FlushedFileOffset within the file (EINVAL), targets
// within LastFileOffset (EFBIG) and outside the log (EINVAL), data sectors of the entry (EINVAL).
void check_log_replay(const LogReader& rd, const std::vector<LogEntry>& seq, uint64_t file_len,
                      uint64_t log_offset, uint32_t log_length);
// Writes a checked sequence to its places, extends the file to LastFileOffset, and syncs.
void replay_log(HostFile& f, const LogReader& rd, const std::vector<LogEntry>& seq);

}  // namespace vireo::block::vhdx
