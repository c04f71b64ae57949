// vireo-img helpers that need no image: qemu-style sizes, option lists, create-option validation, the
// convert planner, check renderings and measure arithmetic.
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "img/check_format.h"
#include "img/convert_plan.h"
#include "img/img.h"

using namespace vireo;
using namespace vireo::img;

TEST(ImgQemuSize, ParsesSuffixesAndFractions) {
  EXPECT_EQ(parse_qemu_size("0"), 0u);
  EXPECT_EQ(parse_qemu_size("4096"), 4096u);
  EXPECT_EQ(parse_qemu_size("10b"), 10u);
  EXPECT_EQ(parse_qemu_size("64k"), 65536u);
  EXPECT_EQ(parse_qemu_size("64K"), 65536u);
  EXPECT_EQ(parse_qemu_size("1M"), 1048576u);
  EXPECT_EQ(parse_qemu_size("1.5M"), 1572864u);
  EXPECT_EQ(parse_qemu_size("2G"), 2147483648u);
  EXPECT_EQ(parse_qemu_size("1T"), 1ull << 40);
}

TEST(ImgQemuSize, RejectsJunkAndOverflow) {
  EXPECT_THROW(parse_qemu_size(""), Error);
  EXPECT_THROW(parse_qemu_size("1Q"), Error);
  EXPECT_THROW(parse_qemu_size("abc"), Error);
  EXPECT_THROW(parse_qemu_size("1.5"), Error);   // a fraction needs a unit
  EXPECT_THROW(parse_qemu_size("1MM"), Error);
  try {
    parse_qemu_size("8E");
    FAIL() << "8E must overflow";
  } catch (const Error& e) {
    EXPECT_EQ(e.sys_errno(), ERANGE);
  }
}

TEST(ImgSizeToStr, MatchesQemuRendering) {
  EXPECT_EQ(size_to_str(0), "0 B");
  EXPECT_EQ(size_to_str(4096), "4 KiB");
  EXPECT_EQ(size_to_str(200704), "196 KiB");
  EXPECT_EQ(size_to_str(1323008), "1.26 MiB");
  EXPECT_EQ(size_to_str(1073741824), "1 GiB");
  EXPECT_EQ(size_to_str(10485760), "10 MiB");
  EXPECT_EQ(size_to_str(1023 * 1024), "0.999 MiB");   // >= 1000 units switches to the next suffix
}

TEST(ImgOptionList, SplitsAndEscapesCommas) {
  auto o = parse_option_list("cluster_size=4k,backing_file=a,,b,lazy_refcounts");
  ASSERT_EQ(o.items.size(), 3u);
  EXPECT_EQ(o.get("cluster_size"), "4k");
  EXPECT_EQ(o.get("backing_file"), "a,b");
  EXPECT_EQ(o.get("lazy_refcounts"), "on");
  EXPECT_FALSE(o.help);
  EXPECT_TRUE(parse_option_list("help").help);
  EXPECT_TRUE(parse_option_list("?").help);
  auto later = parse_option_list("compat=0.10");
  merge_options(o, later);
  merge_options(o, parse_option_list("compat=1.1"));
  EXPECT_EQ(o.get("compat"), "1.1");   // the last one wins
}

namespace {
block::CreateOptions checked(const std::string& fmt, const std::string& opts) {
  auto c = create_options_from(fmt, parse_option_list(opts));
  validate_create_options(c);
  return c;
}
}  // namespace

TEST(ImgCreateOptions, ValidatesLikeQemu) {
  auto c = create_options_from("qcow2", parse_option_list(
      "cluster_size=2M,refcount_bits=64,compression_type=zstd,extended_l2=on,lazy_refcounts=on,size=1G"));
  EXPECT_EQ(c.cluster_size, 2u * 1024 * 1024);
  EXPECT_EQ(c.refcount_bits, 64u);
  EXPECT_EQ(c.compression_type, "zstd");
  EXPECT_TRUE(c.extended_l2);
  EXPECT_TRUE(c.lazy_refcounts);
  EXPECT_EQ(c.size, 1ull << 30);
  EXPECT_EQ(create_options_from("qcow2", parse_option_list("compat=v2")).compat, "0.10");
  EXPECT_THROW(checked("qcow2", "cluster_size=3000"), Error);
  EXPECT_THROW(checked("qcow2", "cluster_size=4M"), Error);
  EXPECT_THROW(checked("qcow2", "refcount_bits=3"), Error);
  EXPECT_THROW(checked("qcow2", "refcount_bits=128"), Error);
  EXPECT_THROW(checked("qcow2", "compat=0.10,lazy_refcounts=on"), Error);
  EXPECT_THROW(checked("qcow2", "compat=0.10,compression_type=zstd"), Error);
  EXPECT_THROW(checked("qcow2", "extended_l2=on,cluster_size=4k"), Error);
  EXPECT_THROW(checked("qcow2", "nonsense=1"), Error);
  EXPECT_THROW(checked("raw", "cluster_size=4k"), Error);
  EXPECT_THROW(create_options_from("nosuchformat", {}), Error);
}

TEST(ImgCreateOptions, FormattingLineOrderMatchesQemu) {
  auto given = parse_option_list("");
  auto c = create_options_from("qcow2", given);
  c.size = 1073741824;
  EXPECT_EQ(formatting_line("base.qcow2", c, given),
            "Formatting 'base.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib "
            "size=1073741824 lazy_refcounts=off refcount_bits=16");
  given = parse_option_list("compat=0.10,cluster_size=512,preallocation=metadata");
  c = create_options_from("qcow2", given);
  c.size = 1048576;
  EXPECT_EQ(formatting_line("x.qcow2", c, given),
            "Formatting 'x.qcow2', fmt=qcow2 cluster_size=512 extended_l2=off preallocation=metadata "
            "compression_type=zlib size=1048576 compat=0.10 lazy_refcounts=off refcount_bits=16");
  given = parse_option_list("preallocation=falloc");
  c = create_options_from("raw", given);
  c.size = 1048576;
  EXPECT_EQ(formatting_line("p.raw", c, given), "Formatting 'p.raw', fmt=raw size=1048576 preallocation=falloc");
}

TEST(ImgConvertPlan, ZeroDetectionAtGranularity) {
  std::vector<uint8_t> buf(16384, 0);
  buf[5000] = 1;   // second 4k block has data
  std::vector<Segment> segs{{0, 16384, SegKind::Data}};
  auto runs = plan_runs(segs, buf.data(), 0, 16384, 4096);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].kind, RunKind::Zero);
  EXPECT_EQ(runs[0].length, 4096u);
  EXPECT_EQ(runs[1].kind, RunKind::Data);
  EXPECT_EQ(runs[1].offset, 4096u);
  EXPECT_EQ(runs[1].length, 4096u);
  EXPECT_EQ(runs[2].kind, RunKind::Zero);
  EXPECT_EQ(runs[2].offset, 8192u);
  EXPECT_EQ(runs[2].length, 8192u);
}

TEST(ImgConvertPlan, SparseZeroDisablesScanAndBackingIsSkipped) {
  std::vector<uint8_t> buf(8192, 0);
  std::vector<Segment> segs{{0, 4096, SegKind::Backing}, {4096, 4096, SegKind::Zero}};
  auto runs = plan_runs(segs, buf.data(), 0, 8192, 0);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].kind, RunKind::Skip);
  EXPECT_EQ(runs[1].kind, RunKind::Data);   // -S 0 writes zero areas as data
  runs = plan_runs(segs, buf.data(), 0, 8192, 4096);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].kind, RunKind::Skip);
  EXPECT_EQ(runs[1].kind, RunKind::Zero);
  // A block mixing backing and own data must be written whole (with the content read through the chain).
  std::vector<Segment> mixed{{0, 2048, SegKind::Backing}, {2048, 6144, SegKind::Data}};
  runs = plan_runs(mixed, buf.data(), 0, 8192, 8192);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].kind, RunKind::Data);
}

TEST(ImgConvertPlan, NonZeroOffsetChunk) {
  std::vector<uint8_t> buf(4096, 7);
  std::vector<Segment> segs{{1 << 20, 4096, SegKind::Data}};
  auto runs = plan_runs(segs, buf.data(), 1 << 20, 4096, 512);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].offset, 1u << 20);
  EXPECT_EQ(runs[0].kind, RunKind::Data);
  EXPECT_TRUE(buffer_is_zero(std::vector<uint8_t>(1000, 0).data(), 1000));
  EXPECT_FALSE(buffer_is_zero(buf.data(), 1));
}

TEST(ImgCheckFormat, CleanImage) {
  block::CheckResult r;
  r.total_clusters = 16384;
  r.allocated_clusters = 16;
  r.image_end_offset = 1507328;
  EXPECT_EQ(check_human(r),
            "No errors were found on the image.\n"
            "16/16384 = 0.10% allocated, 0.00% fragmented, 0.00% compressed clusters\n"
            "Image end offset: 1507328\n");
  auto j = check_json(r, "top.qcow2", "qcow2");
  EXPECT_EQ(j["check-errors"], 0);
  EXPECT_EQ(j["allocated-clusters"], 16);
  EXPECT_FALSE(j.contains("leaks"));
  EXPECT_FALSE(j.contains("fragmented-clusters"));
  EXPECT_EQ(check_exit_status(r), 0);
}

TEST(ImgCheckFormat, LeaksCorruptionsAndRepair) {
  block::CheckResult r;
  r.total_clusters = 16;
  r.allocated_clusters = 1;
  r.leaks = 2;
  r.image_end_offset = 524288;
  EXPECT_EQ(check_human(r),
            "\n2 leaked clusters were found on the image.\n"
            "This means waste of disk space, but no harm to data.\n"
            "1/16 = 6.25% allocated, 0.00% fragmented, 0.00% compressed clusters\n"
            "Image end offset: 524288\n");
  EXPECT_EQ(check_exit_status(r), 3);
  r.corruptions = 1;
  EXPECT_EQ(check_exit_status(r), 2);
  r.check_errors = 1;
  EXPECT_EQ(check_exit_status(r), 1);
  block::CheckResult f;
  f.leaks_fixed = 2;
  f.total_clusters = 16;
  f.allocated_clusters = 1;
  f.image_end_offset = 393216;
  EXPECT_EQ(check_human(f),
            "The following inconsistencies were found and repaired:\n\n    2 leaked clusters\n    0 corruptions\n\n"
            "Double checking the fixed image now...\n"
            "No errors were found on the image.\n"
            "1/16 = 6.25% allocated, 0.00% fragmented, 0.00% compressed clusters\n"
            "Image end offset: 393216\n");
  EXPECT_EQ(check_json(f, "d.qcow2", "qcow2")["leaks-fixed"], 2);
}

TEST(ImgMeasure, MatchesQemuFigures) {
  // qemu-img measure --size 1G -O qcow2: 393216 required, 1074135040 fully allocated.
  EXPECT_EQ(qcow2_prealloc_size(1ull << 30, 65536, 4, false), 1074135040u);
  // 10 MiB: 10813440 fully allocated (qemu-img 7.2).
  EXPECT_EQ(qcow2_prealloc_size(10ull << 20, 65536, 4, false), 10813440u);
  EXPECT_EQ(qcow2_refcount_metadata_size(16388, 65536, 4), 131072u);
}

TEST(ImgCheckFormat, JsonKeysInQemusHashOrder) {
  // qemu-img check --output=json prints its QDict in bucket order: corruptions, corruptions-fixed,
  // check-errors, leaks, leaks-fixed (seen with a vhdx log replay and qcow2 repairs).
  block::CheckResult r;
  r.corruptions = 1;
  r.corruptions_fixed = 2;
  r.leaks = 3;
  r.leaks_fixed = 4;
  r.check_errors = 0;
  const auto j = check_json(r, "x.vhdx", "vhdx");
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"corruptions", "corruptions-fixed", "check-errors", "leaks", "leaks-fixed",
                                            "filename", "format"}));
}

TEST(ImgImageOpts, NamesAndSecretsAsQemu) {
  OpenSpec s;
  EXPECT_EQ(apply_image_opts("driver=qcow2,file.filename=a.qcow2", s), "a.qcow2");
  EXPECT_EQ(s.format, "qcow2");
  EXPECT_EQ(s.opts_name, "driver=qcow2,file.filename=a.qcow2");
  EXPECT_EQ(s.display_name, "");   // only driver and file: qemu names the image by its file
  OpenSpec q;
  EXPECT_EQ(apply_image_opts("driver=qcow2,file.driver=file,file.filename=a,,b.qcow2,encrypt.key-secret=k", q),
            "a,b.qcow2");
  EXPECT_EQ(q.key_secret, "k");
  EXPECT_EQ(q.display_name,
            R"(json:{"encrypt.key-secret": "k", "driver": "qcow2", "file": {"driver": "file", "filename": "a,b.qcow2"}})");
  OpenSpec l;
  apply_image_opts("driver=luks,file.filename=l.img,key-secret=s0", l);
  EXPECT_EQ(l.display_name, R"(json:{"driver": "luks", "file": {"driver": "file", "filename": "l.img"}, "key-secret": "s0"})");
  // Options a format does not have end the command with qemu's text.
  OpenSpec e;
  EXPECT_THROW(apply_image_opts("driver=luks,file.filename=l.img,encrypt.key-secret=s0", e), Exit);
  EXPECT_THROW(apply_image_opts("driver=qcow2", e), Exit);
  EXPECT_THROW(apply_image_opts("plain.qcow2", e), Exit);
}
