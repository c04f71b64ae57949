// VHDX log ([MS-VHDX] 2.3): the sequence search and the replay checks on logs built here byte by byte, each
// defect asserted by its own error text and errno; and a crashed qemu-img image replayed on open.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "block/foreign.h"
#include "block/vhdx.h"
#include "common/error.h"
#include "unit/block/helpers.h"

using namespace vireo::block;
using blocktest::TempDir;

namespace {

constexpr uint64_t kMiB = 1 << 20;
const uint8_t kGuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

struct Desc {
  bool zero;
  uint64_t offset, length;   // zero: length; data: the sector's fill byte in `length`
};

// One log entry: header + descriptors + data sectors, CRC-32C over all of it.
std::vector<uint8_t> entry(uint64_t seq, const std::vector<Desc>& ds, uint64_t ffo, uint64_t lfo,
                           const uint8_t* guid = kGuid) {
  const uint64_t nd = (ds.size() + 2 + 127) / 128;
  uint64_t data = 0;
  for (const auto& d : ds) data += !d.zero;
  std::vector<uint8_t> b((nd + data) * 4096, 0);
  std::memcpy(b.data(), "loge", 4);
  put_le32(&b[8], static_cast<uint32_t>(b.size()));
  put_le64(&b[16], seq);
  put_le32(&b[24], static_cast<uint32_t>(ds.size()));
  std::memcpy(&b[32], guid, 16);
  put_le64(&b[48], ffo);
  put_le64(&b[56], lfo);
  uint64_t s = nd;
  for (size_t i = 0; i < ds.size(); ++i) {
    uint8_t* p = &b[64 + 32 * i];
    std::memcpy(p, ds[i].zero ? "zero" : "desc", 4);
    if (ds[i].zero) {
      put_le64(p + 8, ds[i].length);
    } else {
      std::memset(p + 4, static_cast<int>(ds[i].length), 12);   // trailing and leading bytes
      uint8_t* q = &b[s++ * 4096];
      std::memcpy(q, "data", 4);
      put_le32(q + 4, static_cast<uint32_t>(seq >> 32));
      std::memset(q + 8, static_cast<int>(ds[i].length), 4084);
      put_le32(q + 4092, static_cast<uint32_t>(seq));
    }
    put_le64(p + 16, ds[i].offset);
    put_le64(p + 24, seq);
  }
  put_le32(&b[4], vhdx::crc32c(b));
  return b;
}

void reseal(std::vector<uint8_t>& e) {
  put_le32(&e[4], 0);
  put_le32(&e[4], vhdx::crc32c(e));
}

struct Log {
  std::vector<uint8_t> bytes = std::vector<uint8_t>(kMiB, 0);
  void put(uint64_t at, const std::vector<uint8_t>& e) {
    for (size_t i = 0; i < e.size(); ++i) bytes[(at + i) % bytes.size()] = e[i];
  }
  vhdx::LogReader reader() const {
    return [this](uint64_t pos, std::span<uint8_t> s) { std::memcpy(s.data(), bytes.data() + pos, s.size()); };
  }
  std::vector<vhdx::LogEntry> find() const { return vhdx::find_log_sequence(reader(), kMiB, kGuid); }
};

std::pair<std::string, int> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const vireo::Error& e) {
    return {e.what(), e.sys_errno()};
  }
  return {"(no error)", 0};
}

}  // namespace

TEST(VhdxLog, EmptyStaleAndDamagedLogsHaveNothingToReplay) {
  Log l;
  EXPECT_TRUE(l.find().empty());
  const uint8_t other[16] = {9};
  l.put(0, entry(5, {{true, 8 << 20, 4096}}, 0, 0, other));   // another session's log GUID
  auto bad = entry(6, {{true, 8 << 20, 4096}}, 0, 0);
  bad[100] ^= 1;                                                 // CRC no longer matches
  l.put(8192, bad);
  EXPECT_TRUE(l.find().empty());
}

TEST(VhdxLog, FindsTheRunWithTheHighestSequenceNumber) {
  Log l;
  l.put(0, entry(20, {{false, 3 << 20, 0x11}, {true, 4 << 20, 8192}}, 0, 0));   // 2 sectors
  l.put(8192, entry(21, {{true, 5 << 20, 4096}}, 0, 0));
  l.put(64 << 10, entry(5, {{false, 3 << 20, 0x22}}, 0, 0));
  l.put((64 << 10) + 8192, entry(6, {{false, 3 << 20, 0x23}}, 0, 0));
  const auto s = l.find();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].seq, 20u);
  EXPECT_EQ(s[1].seq, 21u);
  ASSERT_EQ(s[0].descs.size(), 2u);
  EXPECT_FALSE(s[0].descs[0].zero);
  EXPECT_EQ(s[0].descs[0].data_pos, 4096u);   // the data sector follows the descriptor sector
  EXPECT_TRUE(s[0].descs[1].zero);
  EXPECT_EQ(s[0].descs[1].length, 8192u);
}

TEST(VhdxLog, NonConsecutiveNumbersEndARun) {
  Log l;
  l.put(0, entry(8, {{true, 5 << 20, 4096}}, 0, 0));
  l.put(4096, entry(10, {{true, 6 << 20, 4096}}, 0, 0));
  const auto s = l.find();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].seq, 10u);
}

TEST(VhdxLog, AnEntryMayWrapAroundTheEndOfTheLog) {
  Log l;
  l.put(kMiB - 4096, entry(7, {{false, 3 << 20, 0x5a}}, 0, 0));
  const auto s = l.find();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].pos, kMiB - 4096);
  EXPECT_EQ(s[0].descs[0].data_pos, 0u);
}

TEST(VhdxLog, MalformedDescriptorsAreErrors) {
  const auto err = [](const std::function<void(std::vector<uint8_t>&)>& mangle) {
    Log l;
    auto e = entry(3, {{false, 3 << 20, 0x71}, {true, 4 << 20, 4096}}, 0, 0);
    mangle(e);
    reseal(e);
    l.put(0, e);
    return error_of([&] { l.find(); });
  };
  using R = std::pair<std::string, int>;
  EXPECT_EQ(err([](auto& e) { std::memcpy(&e[64], "xxxx", 4); }),
            R("VHDX log entry 3 descriptor 0 has an invalid signature", EINVAL));
  EXPECT_EQ(err([](auto& e) { put_le64(&e[64 + 24], 4); }), R("VHDX log entry 3 descriptor 0 has sequence number 4", EINVAL));
  EXPECT_EQ(err([](auto& e) { put_le64(&e[64 + 16], 4097); }),
            R("VHDX log entry 3 descriptor 0 file offset 4097 is not 4 KiB aligned", EINVAL));
  EXPECT_EQ(err([](auto& e) { put_le64(&e[96 + 8], 100); }),
            R("VHDX log entry 3 zero descriptor 1 length 100 is not a multiple of 4 KiB", EINVAL));
  // Two data descriptors but one data sector in the entry.
  EXPECT_EQ(err([](auto& e) { std::memcpy(&e[96], "desc", 4); }),
            R("VHDX log entry 3 is 2 sectors long but its descriptors need 3", EINVAL));
  Log l;
  EXPECT_EQ(error_of([&] { vhdx::find_log_sequence(l.reader(), kMiB + 4096, kGuid); }),
            R("VHDX log length 1052672 is not a multiple of 1 MiB", EINVAL));
}

TEST(VhdxLog, ReplayChecksComeBeforeAnyWrite) {
  const uint64_t file = 10 * kMiB, log_off = kMiB;
  const auto err = [&](std::vector<uint8_t> e, uint64_t at = 0) {
    Log l;
    l.put(at, e);
    const auto s = l.find();
    EXPECT_EQ(s.size(), 1u);
    return error_of([&] { vhdx::check_log_replay(l.reader(), s, file, log_off, kMiB); });
  };
  using R = std::pair<std::string, int>;
  EXPECT_EQ(err(entry(3, {{false, 3 << 20, 1}}, file, file)), R("(no error)", 0));
  EXPECT_EQ(err(entry(3, {{false, 3 << 20, 1}}, file + kMiB, file)),
            R("VHDX log entry 3 needs a file of 11534336 bytes, the file has 10485760 (truncated?)", EINVAL));
  EXPECT_EQ(err(entry(3, {{true, file, 4096}}, file, file)),
            R("VHDX log entry 3 descriptor 0 writes 10485760+4096, beyond the file's last offset 10485760", EFBIG));
  EXPECT_EQ(err(entry(3, {{true, file, 4096}}, file, file + 1)), R("(no error)", 0));   // rounded up to 1 MiB
  EXPECT_EQ(err(entry(3, {{true, 0, UINT64_MAX - 4095}}, file, file)),
            R("VHDX log entry 3 descriptor 0 writes 0+18446744073709547520, beyond the file's last offset 10485760",
              EFBIG));
  EXPECT_EQ(err(entry(3, {{true, 0, 4096}}, file, uint64_t(1) << 50)),
            R("VHDX log entry 3 LastFileOffset 1125899906842624 is too large", EFBIG));
  EXPECT_EQ(err(entry(3, {{true, log_off + 4096, 4096}}, file, file)),
            R("VHDX log entry 3 descriptor 0 writes into the log itself", EINVAL));
  auto e = entry(3, {{false, 3 << 20, 1}}, file, file);
  put_le32(&e[4096 + 4092], 99);   // the data sector belongs to another entry
  reseal(e);
  EXPECT_EQ(err(e), R("VHDX log entry 3 data sector of descriptor 0 is not part of the entry", EINVAL));
  e = entry(3, {{false, 3 << 20, 1}}, file, file);
  std::memcpy(&e[4096], "dat!", 4);
  reseal(e);
  EXPECT_EQ(err(e), R("VHDX log entry 3 data sector of descriptor 0 is not part of the entry", EINVAL));
}

TEST(VhdxLog, CrashedQemuImageReplaysOnReadWriteOpenOnly) {
  ASSERT_TRUE(blocktest::have_qemu_img()) << "qemu-img (qemu-utils, scripts/setup.sh) is the oracle";
  TempDir d;
  const std::string p = d.path("a.vhdx");
  ASSERT_EQ(blocktest::run("qemu-img create -q -f vhdx -o block_size=1M " + p + " 4M").status, 0);
  auto b = blocktest::read_file(p);
  // The current header (higher sequence number) gets a log GUID, as a writer does before logging.
  const size_t h = le64(&b[65536 + 8]) >= le64(&b[131072 + 8]) ? 65536 : 131072;
  std::memcpy(&b[h + 48], kGuid, 16);
  put_le32(&b[h + 4], 0);
  put_le32(&b[h + 4], vhdx::crc32c(std::span<const uint8_t>(b.data() + h, 4096)));
  // Logged but not yet in place: block 1 allocated at the end of the file (its data written), BAT entry 1.
  const uint64_t len = b.size(), bat = le64(&b[196608 + 16 + 16]);
  b.resize(len + kMiB, 0x5a);
  std::vector<uint8_t> sector(b.begin() + static_cast<ptrdiff_t>(bat), b.begin() + static_cast<ptrdiff_t>(bat + 4096));
  put_le64(&sector[8], len | 6);
  auto e = entry(1, {{false, bat, 0}}, len, len + kMiB);
  std::memcpy(&e[4096 + 8], &sector[8], 4084);   // data sector carries bytes 8..4091, the descriptor the rest
  std::memcpy(&e[64 + 4], &sector[4092], 4);
  std::memcpy(&e[64 + 8], &sector[0], 8);
  reseal(e);
  std::copy(e.begin(), e.end(), b.begin() + static_cast<ptrdiff_t>(kMiB));
  blocktest::write_file(p, b);

  EXPECT_EQ(error_of([&] { open_image(p, blocktest::ro()); }).first,
            "VHDX image file '" + p + "' opened read-only, but contains a log that needs to be replayed\n"
            "To replay the log, run:\nqemu-img check -r all '" + p + "'");
  {
    auto img = open_image(p, blocktest::rw());
    std::vector<uint8_t> got(kMiB);
    img->read(kMiB, got);
    EXPECT_EQ(got, std::vector<uint8_t>(kMiB, 0x5a));
    auto* det = dynamic_cast<ImageDetails*>(img.get());
    ASSERT_NE(det, nullptr);
    EXPECT_EQ(det->check(RepairMode::All).corruptions_fixed, 1u);
  }
  auto after = blocktest::read_file(p);
  EXPECT_EQ(le64(&after[bat + 8]), len | 6);
  EXPECT_EQ(error_of([&] { open_image(p, blocktest::ro()); }).first, "(no error)");   // the log is empty now
  // A defective log fails the open with QEMU's errno text, and nothing is written.
  put_le64(&e[48], len + 64 * kMiB);   // FlushedFileOffset beyond the file: truncated
  reseal(e);
  std::copy(e.begin(), e.end(), b.begin() + static_cast<ptrdiff_t>(kMiB));
  blocktest::write_file(p, b);
  EXPECT_EQ(error_of([&] { open_image(p, blocktest::rw()); }),
            std::make_pair("Could not open '" + p + "': Invalid argument", EINVAL));
  EXPECT_EQ(blocktest::read_file(p), b);
}
