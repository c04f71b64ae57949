// Crypto known answers, LUKS headers (every check with its exact text), qcow2 LUKS/AES images written by
// qemu-img/qemu-io read by the block layer, and hostile vhdx/vpc/qed/vdi headers.
#include <gtest/gtest.h>

#include <cstring>

#include "block/crypto.h"
#include "block/formats.h"
#include "block/luks.h"
#include "block/qcow2.h"
#include "block/secret.h"
#include "block/vhdx.h"
#include "block/vmdk.h"
#include "common/error.h"
#include "unit/block/helpers.h"

using namespace vireo::block;
using blocktest::TempDir;

namespace {

std::vector<uint8_t> unhex(const std::string& h) {
  std::vector<uint8_t> v;
  for (size_t i = 0; i + 1 < h.size(); i += 2) v.push_back(static_cast<uint8_t>(std::stoul(h.substr(i, 2), nullptr, 16)));
  return v;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const vireo::Error& e) {
    return e.what();
  }
  return "(no error)";
}

void secret(const std::string& id, const std::string& v) {
  if (!has_secret(id)) add_secret(id, v);
}

}  // namespace

TEST(Crypto, Pbkdf2Sha256KnownAnswer) {
  // RFC 7914 section 11, PBKDF2-HMAC-SHA256 ("passwd", "salt", 1 iteration, 64 bytes).
  const std::string p = "passwd", s = "salt";
  std::vector<uint8_t> out(64);
  crypto::pbkdf2(crypto::Hash::SHA256, std::span(reinterpret_cast<const uint8_t*>(p.data()), p.size()),
                 std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 1, out);
  EXPECT_EQ(out, unhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"));
}

TEST(Crypto, XtsAes256KnownAnswer) {
  // IEEE 1619 XTS-AES-128 vector 1 uses 2x16-byte zero keys; ours is aes-128 xts: key 32 zero bytes.
  std::vector<uint8_t> key(32, 0), data(32, 0), iv(16, 0);
  crypto::Cipher c(crypto::CipherAlg::AES128, crypto::CipherMode::XTS, key);
  c.encrypt(iv, data);
  EXPECT_EQ(data, unhex("917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e"));
  c.decrypt(iv, data);
  EXPECT_EQ(data, std::vector<uint8_t>(32, 0));
}

TEST(Crypto, EssivNeedsMatchingKeySize) {
  EXPECT_EQ(error_of([] { crypto::essiv_cipher_for(crypto::CipherAlg::AES128, crypto::Hash::SHA1); }),
            "No AES cipher with key size 20 available");
  EXPECT_EQ(crypto::essiv_cipher_for(crypto::CipherAlg::AES128, crypto::Hash::SHA256), crypto::CipherAlg::AES256);
}

TEST(Luks, AfSplitMergeRoundTrip) {
  std::vector<uint8_t> key(64), split(64 * 4000), back(64);
  crypto::random_bytes(key);
  luks::af_split(crypto::Hash::SHA256, key, 4000, split);
  luks::af_merge(crypto::Hash::SHA256, split, 4000, back);
  EXPECT_EQ(key, back);
}

class LuksHeaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    luks::CreateParams p;
    p.iter_time_ms = 1;
    image_.assign(2 << 20, 0);
    luks::Volume::create(p, "pw", [&](uint64_t off, std::span<const uint8_t> b) {
      std::memcpy(image_.data() + off, b.data(), b.size());
    });
  }
  std::string corrupt(const std::function<void(luks::Header&)>& f) {
    luks::Header h = luks::parse_header(std::span<const uint8_t>(image_.data(), luks::kHeaderSize));
    f(h);
    auto raw = luks::serialize_header(h);
    return error_of([&] { luks::parse_params(luks::parse_header(raw)); });
  }
  std::vector<uint8_t> image_;
};

TEST_F(LuksHeaderTest, EveryCheckHasQemusText) {
  EXPECT_EQ(corrupt([](luks::Header& h) { h.version = 2; }), "LUKS version 2 is not supported");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.payload_offset_sector = 1; }), "LUKS payload is overlapping with the header");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.mk_iterations = 0; }), "LUKS key iteration count is zero");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.slots[3].stripes = 5; }), "Keyslot 3 is corrupted (stripes 5 != 4000)");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.slots[2].active = 1; }), "Keyslot 2 state (active/disable) is corrupted");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.slots[0].iterations = 0; }), "Keyslot 0 iteration count is zero");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.slots[0].key_offset_sector = 1; }),
            "Keyslot 0 is overlapping with the LUKS header");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.slots[7].key_offset_sector = 4000; }),
            "Keyslot 7 is overlapping with the encrypted payload");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.slots[5].key_offset_sector = h.slots[4].key_offset_sector; }),
            "Keyslots 4 and 5 are overlapping in the header");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.cipher_name = "foo"; }), "Algorithm 'foo' with key size 32 bytes not supported");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.hash_spec = "sha2566"; }), "Hash algorithm 'sha2566' not supported");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.cipher_mode = "xts"; }), "Unexpected cipher mode string format 'xts'");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.cipher_mode = "xts-plain65"; }), "IV generator 'plain65' not supported");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.cipher_mode = "foo-plain64"; }), "Cipher mode 'foo' not supported");
  EXPECT_EQ(corrupt([](luks::Header& h) { h.cipher_mode = "xts-essiv"; }), "Missing IV generator hash specification");
  std::vector<uint8_t> bad = image_;
  bad[0] = 'X';
  EXPECT_EQ(error_of([&] { luks::parse_header(std::span<const uint8_t>(bad.data(), 592)); }), "Volume is not in LUKS format");
  std::memset(bad.data() + 8, 'a', 32);
  bad[0] = 'L';
  EXPECT_EQ(error_of([&] { luks::parse_header(std::span<const uint8_t>(bad.data(), 592)); }),
            "LUKS header cipher name is not NUL terminated");
}

TEST_F(LuksHeaderTest, UnlocksWithThePasswordOnly) {
  const auto read = [&](uint64_t off, std::span<uint8_t> b) { std::memcpy(b.data(), image_.data() + off, b.size()); };
  EXPECT_NE(luks::Volume::open(read, std::string("pw"))->cipher(), nullptr);
  EXPECT_EQ(error_of([&] { luks::Volume::open(read, std::string("nope")); }), "Invalid password, cannot unlock any keyslot");
  EXPECT_EQ(luks::Volume::open(read, std::nullopt)->cipher(), nullptr);
}

TEST(QemuEncrypted, ReadsQcow2LuksAndAesWrittenByQemu) {
  ASSERT_TRUE(blocktest::have_qemu_img()) << "qemu-img (qemu-utils, scripts/setup.sh) is the oracle";
  TempDir d;
  const std::string S = "--object secret,id=sec0,data=abc123";
  secret("sec0", "abc123");
  for (const std::string fmt : {"luks", "aes"}) {
    const std::string p = d.path(fmt + ".qcow2");
    auto r = blocktest::run("qemu-img create -q " + S + " -f qcow2 -o encrypt.format=" + fmt +
                            ",encrypt.key-secret=sec0" + (fmt == "luks" ? ",encrypt.iter-time=10" : "") + " " + p +
                            " 4M");
    ASSERT_EQ(r.status, 0) << r.out;
    r = blocktest::run("qemu-io " + S + " --image-opts driver=qcow2,file.filename=" + p +
                       ",encrypt.key-secret=sec0 -c 'write -P 7 1000 70000' -c 'write -P 9 3M 64k'");
    ASSERT_EQ(r.status, 0) << r.out;
    OpenOptions o = blocktest::ro();
    EXPECT_EQ(error_of([&] { open_image(p, o); }), "Parameter 'encrypt.key-secret' is required for cipher");
    o.key_secret = "sec0";
    auto img = open_image(p, o);
    std::vector<uint8_t> buf(70000);
    img->read(1000, buf);
    EXPECT_EQ(buf, std::vector<uint8_t>(70000, 7)) << fmt;
    std::vector<uint8_t> b2(65536);
    img->read(3 << 20, b2);
    EXPECT_EQ(b2, std::vector<uint8_t>(65536, 9)) << fmt;
    auto* q = dynamic_cast<Qcow2Image*>(img.get());
    ASSERT_TRUE(q);
    EXPECT_TRUE(q->info().encrypt);
    EXPECT_EQ(q->info().encrypt_info["format"], fmt);
    EXPECT_EQ(q->check(RepairMode::None).corruptions, 0u);
    EXPECT_EQ(q->check(RepairMode::None).leaks, 0u);
  }
  // A wrong key: qemu's text.
  add_secret("bad", "wrong");
  OpenOptions o = blocktest::ro();
  o.key_secret = "bad";
  EXPECT_EQ(error_of([&] { open_image(d.path("luks.qcow2"), o); }), "Invalid password, cannot unlock any keyslot");
}

TEST(QemuEncrypted, Qcow2LuksAndAesWrittenHereAreReadByQemuIo) {
  ASSERT_TRUE(blocktest::have_qemu_img()) << "qemu-img (qemu-utils, scripts/setup.sh) is the oracle";
  TempDir d;
  secret("sec0", "abc123");
  // Legacy AES too: qemu-img 7.2 creates and writes it, so vireo-img does (IVs from guest offsets).
  for (const std::string fmt : {"luks", "aes"}) {
    const std::string p = d.path(fmt + ".qcow2");
    CreateOptions c;
    c.size = 4 << 20;
    c.extra = {{"encrypt.format", fmt}, {"encrypt.key-secret", "sec0"}};
    if (fmt == "luks") c.extra.emplace_back("encrypt.iter-time", "10");
    create_image(p, c);
    OpenOptions o = blocktest::rw();
    o.key_secret = "sec0";
    {
      auto img = open_image(p, o);
      img->write(1000, std::vector<uint8_t>(70000, 5));
      img->write(2 << 20, std::vector<uint8_t>(512, 6));
      img->write(2000, std::vector<uint8_t>(100, 8));   // rewrite inside an allocated cluster
      img->flush();
    }
    auto r = blocktest::run("qemu-io --object secret,id=sec0,data=abc123 --image-opts driver=qcow2,file.filename=" +
                            p + ",encrypt.key-secret=sec0 -c 'read -P 5 1000 1000' -c 'read -P 8 2000 100' -c "
                            "'read -P 5 2100 68900' -c 'read -P 6 2M 512' -c 'read -P 0 0 1000'");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out.find("Pattern verification failed"), std::string::npos) << fmt << r.out;
    r = blocktest::run("qemu-img check --object secret,id=sec0,data=abc123 --image-opts driver=qcow2,file.filename=" +
                       p + ",encrypt.key-secret=sec0");
    EXPECT_EQ(r.status, 0) << r.out;
  }
}

TEST(HostileVhdx, HeadersAndRegionsGiveOneLineErrors) {
  ASSERT_TRUE(blocktest::have_qemu_img()) << "qemu-img (qemu-utils, scripts/setup.sh) is the oracle";
  TempDir d;
  const std::string p = d.path("a.vhdx");
  ASSERT_EQ(blocktest::run("qemu-img create -q -f vhdx -o block_size=1M " + p + " 4M").status, 0);
  const auto good = blocktest::read_file(p);
  const auto open_patched = [&](size_t off, std::vector<uint8_t> bytes) {
    auto b = good;
    std::copy(bytes.begin(), bytes.end(), b.begin() + static_cast<ptrdiff_t>(off));
    blocktest::write_file(p, b);
    return error_of([&] { open_image(p, blocktest::ro()); });
  };
  EXPECT_EQ(open_patched(65536 + 8, {1, 2, 3}) == "(no error)", true);   // one damaged header copy is fine
  auto b = good;
  b[65536 + 8] ^= 1;
  b[131072 + 8] ^= 1;
  blocktest::write_file(p, b);
  EXPECT_EQ(error_of([&] { open_image(p, blocktest::ro()); }), "No valid VHDX header found");
  b = good;
  b[196608 + 20] ^= 1;
  b[262144 + 20] ^= 1;
  blocktest::write_file(p, b);
  EXPECT_EQ(error_of([&] { open_image(p, blocktest::ro()); }), "VHDX region table checksum is invalid");
  // Metadata: a block size that is not a power of two.
  const uint64_t md = 3 << 20;
  EXPECT_EQ(open_patched(md + 65536, {0, 0, 0x30, 0}), "VHDX block size 3145728 is invalid (a power of two from 1 MiB to 256 MiB)");
  EXPECT_EQ(open_patched(md + 65544, {0, 0, 0, 0, 0, 0, 0, 1}), "VHDX virtual disk size 72057594037927936 is invalid");
  EXPECT_EQ(open_patched(md + 65568, {0, 1, 0, 0}), "VHDX logical sector size 256 is invalid");
}

TEST(HostileVmdk, DescriptorLines) {
  EXPECT_EQ(error_of([] { vmdk::parse_descriptor("createType=\"monolithicFlat\"\nRW 100 FLAT \"x\"\n"); }),
            "Invalid extent line: RW 100 FLAT \"x\"");
  EXPECT_EQ(error_of([] { vmdk::parse_descriptor("RW 100 SPARSE \"x\" 7\n"); }), "Invalid extent line: RW 100 SPARSE \"x\" 7");
  auto d = vmdk::parse_descriptor("CID=fffffffe\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n"
                                  "RW 100 FLAT \"a\" 0\nRDONLY 5 FLAT \"b\" 0\nRW 0 FLAT \"c\" 0\nRW 7 ZERO \"d\"\n");
  ASSERT_EQ(d.extents.size(), 1u);   // RW lines of supported types with sectors > 0 only, as qemu
  EXPECT_EQ(*d.cid, 0xfffffffeu);
  EXPECT_EQ(d.create_type, "twoGbMaxExtentFlat");
}

TEST(HostileVmdk, SparseHeaderChecks) {
  std::vector<uint8_t> s(512, 0);
  std::memcpy(s.data(), "KDMV", 4);
  const auto put32 = [&](size_t o, uint32_t v) { for (int i = 0; i < 4; ++i) s[o + i] = uint8_t(v >> (8 * i)); };
  const auto put64 = [&](size_t o, uint64_t v) { for (int i = 0; i < 8; ++i) s[o + i] = uint8_t(v >> (8 * i)); };
  put32(4, 1);
  put64(12, 2048);
  put64(20, 128);
  put32(44, 512);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "(no error)");
  put32(4, 4);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "Unsupported VMDK version 4");
  put32(4, 3);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, true); }), "VMDK version 3 must be read only");
  put32(4, 1);
  put32(44, 513);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "L2 table size too big");
  put32(44, 0);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "L1 entry size is invalid");
  put32(44, 512);
  put64(64, 1 << 20);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "File truncated, expecting at least 536870912 bytes");
  put64(64, 0);
  put64(20, 0x400000);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "Invalid granularity, image may be corrupt");
  put64(20, 1);
  put64(12, 1ULL << 40);
  EXPECT_EQ(error_of([&] { vmdk::parse_sparse_header(s, 1 << 20, false); }), "L1 size too big");
}
