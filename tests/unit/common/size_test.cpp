#include "common/size.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace vireo {

TEST(ParseSize, Suffixes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("64M"), 64u << 20);
  EXPECT_EQ(parse_size("64MiB"), 64u << 20);
  EXPECT_EQ(parse_size("1G"), 1u << 30);
  EXPECT_EQ(parse_size("512k"), 512u << 10);
  EXPECT_EQ(parse_size("2T"), uint64_t{2} << 40);
  EXPECT_EQ(parse_size("7B"), 7u);
  EXPECT_EQ(parse_size("3", 1024), 3072u);
}

TEST(ParseSize, RejectsJunk) {
  EXPECT_THROW(parse_size(""), Error);
  EXPECT_THROW(parse_size("M"), Error);
  EXPECT_THROW(parse_size("-1"), Error);
  EXPECT_THROW(parse_size("12Q"), Error);
  EXPECT_THROW(parse_size("1MB2"), Error);
  EXPECT_THROW(parse_size("99999999999999999999"), Error);
  EXPECT_THROW(parse_size("16384P"), Error);
}

TEST(FormatSize, Units) {
  EXPECT_EQ(format_size(64u << 20), "64 MiB");
  EXPECT_EQ(format_size(1000), "1000 B");
  EXPECT_EQ(format_size(uint64_t{3} << 30), "3 GiB");
}

}  // namespace vireo
