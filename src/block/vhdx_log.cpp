// VHDX log ([MS-VHDX] 2.3): finding the active log sequence and replaying it. The search follows QEMU's
// (block/vhdx-log.c) so both accept and refuse the same logs: entries are scanned as a circular buffer of
// 4 KiB sectors, an entry counts when its header, log GUID and CRC-32C are valid, a sequence is a run of
// entries with consecutive sequence numbers, and the sequence whose first entry has the highest number wins.
// Unlike QEMU, everything replay relies on is validated before the first byte is written, so a bad entry
// never leaves a half-replayed image.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "block/foreign.h"
#include "block/vhdx.h"
#include "common/error.h"

namespace vireo::block::vhdx {

namespace {

constexpr uint64_t kSector = 4096, kMiB = 1 << 20;

[[noreturn]] void invalid(const std::string& why) { throw Error(why, EINVAL); }

// Rounded up to 1 MiB; values near 2^64 saturate instead of wrapping.
uint64_t round_mib(uint64_t v) { return v > UINT64_MAX - kMiB ? UINT64_MAX : (v + kMiB - 1) / kMiB * kMiB; }

uint64_t next_pos(uint64_t pos, uint64_t length) { return pos + kSector >= length ? 0 : pos + kSector; }

// Descriptor sectors of an entry: the 64-byte header takes the place of two 32-byte descriptors.
uint64_t desc_sectors(uint64_t count) { return (count + 2 + 127) / 128; }

struct EntryHeader {
  uint32_t checksum = 0, entry_length = 0;
  uint64_t seq = 0;
  uint32_t descriptor_count = 0;
  uint64_t flushed_file_offset = 0, last_file_offset = 0;
};

// QEMU's vhdx_log_hdr_is_valid: a header that fails these is not an entry (the scan moves on a sector).
std::optional<EntryHeader> entry_header(const uint8_t* s, uint32_t log_length, const uint8_t* log_guid) {
  if (std::memcmp(s, "loge", 4) != 0) return std::nullopt;
  EntryHeader h;
  h.checksum = le32(s + 4);
  h.entry_length = le32(s + 8);
  h.seq = le64(s + 16);
  h.descriptor_count = le32(s + 24);
  h.flushed_file_offset = le64(s + 48);
  h.last_file_offset = le64(s + 56);
  if (h.entry_length > log_length || h.entry_length % kSector || h.entry_length == 0) return std::nullopt;
  if (h.seq == 0 || std::memcmp(s + 32, log_guid, 16) != 0) return std::nullopt;
  if (uint64_t(h.descriptor_count) * 32 > h.entry_length) return std::nullopt;
  return h;
}

// Reads the entry at `pos`. nullopt: no valid entry there. Throws for an entry whose header is valid but
// whose descriptors are not (QEMU fails the open with EINVAL then, rather than skipping the entry).
std::optional<LogEntry> read_entry(const LogReader& rd, uint64_t pos, uint32_t log_length, const uint8_t* guid) {
  std::vector<uint8_t> sec(kSector);
  rd(pos, sec);
  const auto h = entry_header(sec.data(), log_length, guid);
  if (!h) return std::nullopt;
  const uint64_t nsec = h->entry_length / kSector, ndesc = desc_sectors(h->descriptor_count);
  LogEntry e;
  e.pos = pos;
  e.seq = h->seq;
  e.flushed_file_offset = h->flushed_file_offset;
  e.last_file_offset = h->last_file_offset;
  e.sectors = nsec;
  // The descriptor sectors (which may wrap around the end of the log), checked as QEMU does.
  std::vector<uint8_t> descs(std::max(ndesc, nsec) * kSector);
  uint64_t p = pos;
  for (uint64_t i = 0; i < ndesc; ++i, p = next_pos(p, log_length)) rd(p, std::span(descs).subspan(i * kSector, kSector));
  uint64_t data_sectors = 0;
  for (uint32_t i = 0; i < h->descriptor_count; ++i) {
    const uint8_t* d = descs.data() + 64 + 32 * uint64_t(i);
    LogDescriptor ld;
    ld.file_offset = le64(d + 16);
    if (le64(d + 24) != h->seq)
      invalid(fmt::format("VHDX log entry {} descriptor {} has sequence number {}", h->seq, i, le64(d + 24)));
    if (ld.file_offset % kSector)
      invalid(fmt::format("VHDX log entry {} descriptor {} file offset {} is not 4 KiB aligned", h->seq, i,
                          ld.file_offset));
    if (std::memcmp(d, "zero", 4) == 0) {
      ld.zero = true;
      ld.length = le64(d + 8);
      if (ld.length % kSector)
        invalid(fmt::format("VHDX log entry {} zero descriptor {} length {} is not a multiple of 4 KiB", h->seq, i,
                            ld.length));
    } else if (std::memcmp(d, "desc", 4) == 0) {
      ld.trailing = le32(d + 4);
      ld.leading = le64(d + 8);
      data_sectors++;
    } else {
      invalid(fmt::format("VHDX log entry {} descriptor {} has an invalid signature", h->seq, i));
    }
    e.descs.push_back(ld);
  }
  // The CRC-32C covers the whole entry with the checksum field as zero.
  for (uint64_t i = ndesc; i < nsec; ++i, p = next_pos(p, log_length)) rd(p, std::span(descs).subspan(i * kSector, kSector));
  std::memset(descs.data() + 4, 0, 4);
  if (crc32c(std::span<const uint8_t>(descs.data(), nsec * kSector)) != h->checksum) return std::nullopt;
  if (ndesc + data_sectors > nsec)
    invalid(fmt::format("VHDX log entry {} is {} sectors long but its descriptors need {}", h->seq, nsec,
                        ndesc + data_sectors));
  // Data sectors follow the descriptor sectors in descriptor order.
  uint64_t dp = pos;
  for (uint64_t i = 0; i < ndesc; ++i) dp = next_pos(dp, log_length);
  for (auto& d : e.descs)
    if (!d.zero) {
      d.data_pos = dp;
      dp = next_pos(dp, log_length);
    }
  return e;
}

}  // namespace

std::vector<LogEntry> find_log_sequence(const LogReader& rd, uint32_t log_length, const uint8_t* log_guid) {
  if (log_length == 0 || log_length % kMiB) invalid(fmt::format("VHDX log length {} is not a multiple of 1 MiB", log_length));
  std::vector<LogEntry> best;
  uint64_t pos = 0;
  for (;;) {
    const uint64_t start = pos;
    auto e = read_entry(rd, pos, log_length, log_guid);
    if (!e) {
      pos = next_pos(pos, log_length);
    } else {
      std::vector<LogEntry> run;
      uint64_t used = 0;
      // A run never holds more sectors than the log: the cap stops a run going round the log forever.
      while (e && used + e->sectors <= log_length / kSector) {
        used += e->sectors;
        for (uint64_t i = 0; i < e->sectors; ++i) pos = next_pos(pos, log_length);
        const uint64_t want = e->seq + 1;
        run.push_back(std::move(*e));
        e = read_entry(rd, pos, log_length, log_guid);
        if (e && e->seq != want) e.reset();
      }
      if (best.empty() || run.front().seq > best.front().seq) best = std::move(run);
      // Resume right after the run (its end may be where the next run begins).
      if (pos <= start) break;
      continue;
    }
    if (pos <= start) break;
  }
  return best;
}

void check_log_replay(const LogReader& rd, const std::vector<LogEntry>& seq, uint64_t file_len, uint64_t log_offset,
                      uint32_t log_length) {
  std::vector<uint8_t> sec(kSector);
  for (const auto& e : seq) {
    // [MS-VHDX] 2.3.1.1: a file shorter than FlushedFileOffset has been truncated; replay must not use it.
    if (e.flushed_file_offset > file_len)
      invalid(fmt::format("VHDX log entry {} needs a file of {} bytes, the file has {} (truncated?)", e.seq,
                          e.flushed_file_offset, file_len));
    // LastFileOffset bounds every structure the entry refers to; a target beyond it would grow the file.
    // (A VHDX holds at most 64 TiB of data: a LastFileOffset past 128 TiB is not one a writer could leave.)
    if (e.last_file_offset > (uint64_t(1) << 47))
      throw Error(fmt::format("VHDX log entry {} LastFileOffset {} is too large", e.seq, e.last_file_offset), EFBIG);
    const uint64_t limit = std::max(file_len, round_mib(e.last_file_offset));
    for (size_t i = 0; i < e.descs.size(); ++i) {
      const auto& d = e.descs[i];
      if (d.length > limit || d.file_offset > limit - d.length)
        throw Error(fmt::format("VHDX log entry {} descriptor {} writes {}+{}, beyond the file's last offset {}", e.seq,
                                i, d.file_offset, d.length, limit),
                    EFBIG);
      if (d.file_offset < log_offset + log_length && log_offset < d.file_offset + d.length)
        invalid(fmt::format("VHDX log entry {} descriptor {} writes into the log itself", e.seq, i));
      if (d.zero) continue;
      rd(d.data_pos, sec);
      const uint64_t s = uint64_t(le32(sec.data() + 4)) << 32 | le32(sec.data() + 4092);
      if (std::memcmp(sec.data(), "data", 4) != 0 || s != e.seq)
        invalid(fmt::format("VHDX log entry {} data sector of descriptor {} is not part of the entry", e.seq, i));
    }
  }
}

void replay_log(HostFile& f, const LogReader& rd, const std::vector<LogEntry>& seq) {
  std::vector<uint8_t> sec(kSector), buf(kSector);
  const std::vector<uint8_t> zeroes(kMiB, 0);
  for (const auto& e : seq) {
    for (const auto& d : e.descs) {
      if (d.zero) {
        // Real zeroes, as QEMU writes them (the space stays allocated like the metadata it replaces).
        for (uint64_t done = 0; done < d.length;) {
          const uint64_t n = std::min<uint64_t>(kMiB, d.length - done);
          f.pwrite_full(d.file_offset + done, std::span<const uint8_t>(zeroes.data(), n));
          done += n;
        }
        continue;
      }
      // A data sector holds bytes 8..4091 of the target sector; the descriptor holds the first 8 and last 4.
      rd(d.data_pos, sec);
      put_le64(buf.data(), d.leading);
      std::memcpy(buf.data() + 8, sec.data() + 8, 4084);
      put_le32(buf.data() + 4092, d.trailing);
      f.pwrite_full(d.file_offset, buf);
    }
    // The file must be at least LastFileOffset long afterwards (rounded up to 1 MiB as QEMU does).
    if (f.length() < e.last_file_offset) f.truncate(round_mib(e.last_file_offset));
  }
  // Everything replayed is on disk before the caller empties the log in the headers.
  f.sync();
}

}  // namespace vireo::block::vhdx
