// i8042, CMOS RTC, debug-exit and boot-marker through the PIO bus.
#include <gtest/gtest.h>

#include <ctime>
#include <memory>

#include "devices/boot_marker.h"
#include "devices/bus.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/rtc.h"

namespace vireo {
namespace {

uint8_t inb(Bus& b, uint64_t port) {
  uint8_t v = 0;
  b.read(port, std::span<uint8_t>(&v, 1));
  return v;
}
void outb(Bus& b, uint64_t port, uint8_t v) { b.write(port, std::span<const uint8_t>(&v, 1)); }

TEST(I8042, FeCommandResets) {
  Bus bus("pio");
  int resets = 0;
  bus.insert(0x60, 5, std::make_shared<I8042>([&] { ++resets; }));
  EXPECT_EQ(inb(bus, 0x64) & 0x01, 0);  // output buffer empty
  outb(bus, 0x64, 0xfe);
  EXPECT_EQ(resets, 1);
  outb(bus, 0x64, 0xff);  // pulse nothing (bit 0 set): no reset
  EXPECT_EQ(resets, 1);
}

TEST(I8042, OutputPortWriteWithResetBitLowResets) {
  Bus bus("pio");
  int resets = 0;
  bus.insert(0x60, 5, std::make_shared<I8042>([&] { ++resets; }));
  outb(bus, 0x64, 0xd1);
  EXPECT_EQ(inb(bus, 0x64) & 0x08, 0x08);  // waiting for the data byte
  outb(bus, 0x60, 0x01);                   // reset line released: no reset
  EXPECT_EQ(resets, 0);
  outb(bus, 0x64, 0xd1);
  outb(bus, 0x60, 0x00);
  EXPECT_EQ(resets, 1);
}

TEST(I8042, SelfTestAndCommandByte) {
  Bus bus("pio");
  bus.insert(0x60, 5, std::make_shared<I8042>(nullptr));
  outb(bus, 0x64, 0xaa);
  EXPECT_EQ(inb(bus, 0x64) & 0x01, 0x01);
  EXPECT_EQ(inb(bus, 0x60), 0x55);
  EXPECT_EQ(inb(bus, 0x64) & 0x01, 0x00);
  outb(bus, 0x64, 0x60);
  outb(bus, 0x60, 0x21);
  outb(bus, 0x64, 0x20);
  EXPECT_EQ(inb(bus, 0x60), 0x21);
}

struct RtcFixture : ::testing::Test {
  Bus bus{"pio"};
  time_t now = 1700000000;  // 2023-11-14 22:13:20 UTC, a Tuesday
  std::shared_ptr<CmosRtc> rtc = std::make_shared<CmosRtc>([this] { return now; });
  void SetUp() override { bus.insert(0x70, 2, rtc); }
  uint8_t reg(uint8_t i) {
    outb(bus, 0x70, i);
    return inb(bus, 0x71);
  }
  void set(uint8_t i, uint8_t v) {
    outb(bus, 0x70, i);
    outb(bus, 0x71, v);
  }
};

TEST_F(RtcFixture, BcdTimeByDefault) {
  EXPECT_EQ(reg(0x0b) & 0x04, 0);  // BCD
  EXPECT_EQ(reg(0x00), 0x20);      // seconds
  EXPECT_EQ(reg(0x02), 0x13);
  EXPECT_EQ(reg(0x04), 0x22);
  EXPECT_EQ(reg(0x07), 0x14);
  EXPECT_EQ(reg(0x08), 0x11);
  EXPECT_EQ(reg(0x09), 0x23);
  EXPECT_EQ(reg(0x32), 0x20);
  EXPECT_EQ(reg(0x06), 0x03);           // Tuesday = 3 (Sunday = 1)
  EXPECT_EQ(reg(0x0a) & 0x80, 0);       // no update in progress
  EXPECT_EQ(reg(0x0d), 0x80);           // valid
}

TEST_F(RtcFixture, BinaryAndTwelveHourModes) {
  set(0x0b, 0x04);  // binary, 12-hour
  EXPECT_EQ(reg(0x00), 20);
  EXPECT_EQ(reg(0x04), 0x80 | 10);  // 22h = 10 PM
  set(0x0b, 0x06);                  // binary, 24-hour
  EXPECT_EQ(reg(0x04), 22);
}

TEST_F(RtcFixture, GuestCanSetTheClock) {
  set(0x04, 0x05);  // 05h BCD
  EXPECT_EQ(reg(0x04), 0x05);
  now += 60;  // host time runs on; the offset is kept
  EXPECT_EQ(reg(0x04), 0x05);
  EXPECT_EQ(reg(0x02), 0x14);
}

TEST_F(RtcFixture, NmiBitAndRam) {
  outb(bus, 0x70, 0x80 | 0x20);
  EXPECT_TRUE(rtc->nmi_disabled());
  outb(bus, 0x71, 0x77);
  outb(bus, 0x70, 0x20);
  EXPECT_FALSE(rtc->nmi_disabled());
  EXPECT_EQ(inb(bus, 0x71), 0x77);
}

TEST(DebugExit, ByteEndsTheVm) {
  Bus bus("pio");
  int code = -1;
  bus.insert(DebugExit::kPort, 1, std::make_shared<DebugExit>([&](uint8_t c) { code = c; }));
  outb(bus, 0x501, 0x2a);
  EXPECT_EQ(code, 0x2a);
  const uint32_t wide = 0x12345607;
  EXPECT_FALSE(bus.write(0x501, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&wide), 4)));
  EXPECT_EQ(code, 0x2a);  // a 4-byte write at 0x501 is not wholly inside the 1-byte port
}

TEST(BootMarker, LogsIdAndTimestamp) {
  Bus bus("pio");
  std::vector<std::string> lines;
  uint64_t t = 1234;
  auto m = std::make_shared<BootMarker>([&] { return t; }, [&](const std::string& l) { lines.push_back(l); });
  bus.insert(BootMarker::kPort, 4, m);
  bus.insert(0x80, 1, m);
  const uint32_t id = 0x10203;
  bus.write(0x502, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&id), 4));
  t = 5678;
  outb(bus, 0x80, 7);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "boot-marker 66051 at 1234");
  EXPECT_EQ(lines[1], "boot-marker 7 at 5678");
  uint32_t count = 0;
  bus.read(0x502, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&count), 4));
  EXPECT_EQ(count, 2u);
  EXPECT_EQ(m->marks().size(), 2u);
}

TEST(BootMarker, ProcessClockAdvances) {
  const uint64_t a = micros_since_process_start();
  const uint64_t b = micros_since_process_start();
  EXPECT_LE(a, b);
  EXPECT_LT(a, 600'000'000u);  // sane: well under 10 minutes into this test binary
}

}  // namespace
}  // namespace vireo
