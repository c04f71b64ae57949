// Differencing and damaged VHD/VHDX headers: each case asserts its exact error (qemu 7.2's text where the
// open reports it) on images qemu-img created and this test then patched.
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

std::pair<std::string, int> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const vireo::Error& e) {
    return {e.what(), e.sys_errno()};
  }
  return {"(no error)", 0};
}

OpenOptions as_vpc() {
  auto o = blocktest::ro();
  o.format = "vpc";
  return o;
}

void reseal_footer(std::vector<uint8_t>& b) {
  uint32_t sum = 0;
  for (int i = 0; i < 512; ++i) sum += (i >= 64 && i < 68) ? 0 : b[i];
  put_be32(&b[64], ~sum);
  std::copy(b.begin(), b.begin() + 512, b.end() - 512);
}

// A metadata region with the five items qemu requires, then `extra` (GUID hex, flags) entries.
std::vector<uint8_t> metadata(uint32_t data_bits, bool page83 = true, bool locator = false) {
  std::vector<uint8_t> r(1 << 20, 0);
  std::memcpy(r.data(), "metadata", 8);
  struct Item {
    const char* guid;
    uint32_t len;
  };
  std::vector<Item> items = {{"3767a1ca36fa434db3b633f0aa44e76b", 8}, {"2442a52f1bcd7648b2115dbed83bf4b8", 8},
                             {"1dbf41816fa90947ba47f233a8faab5f", 4}, {"c748a3cd5d4471449cc9e9885251c556", 4}};
  if (page83) items.push_back({"ab12cabee6b2234593efc309e000c746", 16});
  if (locator) items.push_back({"2d5fd3a80bb34d45abf7d3d84834ab0c", 64});
  put_le16(&r[10], static_cast<uint16_t>(items.size()));
  uint32_t off = 65536;
  for (size_t i = 0; i < items.size(); ++i) {
    uint8_t* e = &r[32 + 32 * i];
    for (int k = 0; k < 16; ++k) e[k] = static_cast<uint8_t>(std::stoul(std::string(items[i].guid + 2 * k, 2), nullptr, 16));
    put_le32(e + 16, off);
    put_le32(e + 20, items[i].len);
    put_le32(e + 24, 4);
    off += 64;
  }
  put_le32(&r[65536], 1 << 20);   // block size
  put_le32(&r[65540], data_bits);
  put_le64(&r[65600], 8 << 20);   // virtual size
  put_le32(&r[65664], 512);       // logical sector
  put_le32(&r[65728], 512);       // physical sector
  return r;
}

}  // namespace

TEST(Differencing, VhdxMetadataWithAParentIsRefusedAsQemuDoes) {
  using R = std::pair<std::string, int>;
  EXPECT_EQ(error_of([] { vhdx::parse_metadata(metadata(0)); }), R("(no error)", 0));
  EXPECT_EQ(error_of([] { vhdx::parse_metadata(metadata(2, true, true)); }),
            R("Differencing VHDX images are not supported", ENOTSUP));
  EXPECT_EQ(error_of([] { vhdx::parse_metadata(metadata(2)); }),
            R("VHDX image has a parent but no parent locator", EINVAL));
  EXPECT_EQ(error_of([] { vhdx::parse_metadata(metadata(0, false)); }), R("VHDX metadata lacks a required item", ENOTSUP));
}

TEST(Differencing, VhdxOpenReportsQemusErrnoText) {
  ASSERT_TRUE(blocktest::have_qemu_img()) << "qemu-img (qemu-utils, scripts/setup.sh) is the oracle";
  TempDir d;
  const std::string p = d.path("a.vhdx");
  ASSERT_EQ(blocktest::run("qemu-img create -q -f vhdx -o block_size=1M " + p + " 4M").status, 0);
  auto b = blocktest::read_file(p);
  // File parameters are the first metadata item qemu writes; its data_bits word gets HasParent.
  const uint64_t md = le64(&b[196608 + 16 + 32 + 16]);
  const uint32_t fp = le32(&b[md + 32 + 16]);
  b[md + fp + 4] |= 2;
  blocktest::write_file(p, b);
  EXPECT_EQ(error_of([&] { open_image(p, blocktest::ro()); }),
            std::make_pair("Could not open '" + p + "': Invalid argument", EINVAL));
}

TEST(Differencing, DamagedVhdHeadersGiveQemusTexts) {
  ASSERT_TRUE(blocktest::have_qemu_img()) << "qemu-img (qemu-utils, scripts/setup.sh) is the oracle";
  TempDir d;
  const std::string p = d.path("a.vhd");
  ASSERT_EQ(blocktest::run("qemu-img create -q -f vpc " + p + " 8M").status, 0);
  ASSERT_EQ(blocktest::run("qemu-io -f vpc -c 'write -P 9 2M 4k' " + p).status, 0);
  const auto good = blocktest::read_file(p);
  const uint64_t dyn = rd_be64(&good[16]);
  const auto open_with = [&](const std::function<void(std::vector<uint8_t>&)>& change, bool reseal = true) {
    auto b = good;
    change(b);
    if (reseal) reseal_footer(b);
    blocktest::write_file(p, b);
    return error_of([&] { open_image(p, as_vpc()); }).first;
  };
  EXPECT_EQ(open_with([](auto&) {}), "(no error)");
  // A differencing disk (type 4) opens as a dynamic one, without a backing file (as qemu 7.2).
  EXPECT_EQ(open_with([](auto& b) { put_be32(&b[60], 4); }), "(no error)");
  {
    auto img = open_image(p, as_vpc());
    EXPECT_EQ(img->backing(), nullptr);
    std::vector<uint8_t> got(4096);
    img->read(2 << 20, got);
    EXPECT_EQ(got, std::vector<uint8_t>(4096, 9));
  }
  EXPECT_EQ(open_with([](auto& b) { b[20] ^= 1; }, false), "Incorrect header checksum");
  EXPECT_EQ(open_with([](auto& b) { std::memset(b.data(), 0, 512); std::memset(b.data() + b.size() - 512, 0, 512); }, false),
            "invalid VPC image");
  EXPECT_EQ(open_with([](auto& b) {
              put_be64(&b[48], 1ULL << 42);
              std::memcpy(&b[28], "win ", 4);
            }),
            "Could not open '" + p + "': File too large");
  EXPECT_EQ(open_with([](auto& b) { put_be64(&b[16], 1ULL << 30); }), "Invalid header magic");
  EXPECT_EQ(open_with([&](auto& b) { b[dyn + 7] = 'X'; }), "Invalid header magic");
  EXPECT_EQ(open_with([&](auto& b) { put_be32(&b[dyn + 32], 3000); }), "Invalid block size 3000");
  EXPECT_EQ(open_with([&](auto& b) { put_be32(&b[dyn + 28], 1); }), "Page table too small");
  EXPECT_EQ(open_with([&](auto& b) { put_be32(&b[dyn + 28], 0x7fffffff); }), "Max Table Entries too large (2147483647)");
  EXPECT_EQ(open_with([&](auto& b) { put_be64(&b[dyn + 16], 1ULL << 30); }),
            "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.");
  // The allocated block at 2 MiB lies past the end once the file loses its last MiB.
  EXPECT_EQ(open_with([](auto& b) { b.resize(b.size() - (1 << 20)); }),
            "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.");
}
