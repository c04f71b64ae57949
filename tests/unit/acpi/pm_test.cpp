// ACPI PM device: PM1 status (write 1 to clear) / enable / control, the SCI, S5, the reset register, the PM
// timer, and hostile guest accesses.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "acpi/pm.h"
#include "common/error.h"

namespace vireo::acpi {
namespace {

struct Rig {
  std::vector<bool> sci;  // every set_sci call, in order
  int poweroffs = 0, resets = 0;
  uint64_t now = 1000;  // fake clock (ns)
  AcpiPm pm{AcpiPm::Hooks{
      .set_sci = [this](bool l) { sci.push_back(l); },
      .poweroff = [this] { poweroffs++; },
      .reset = [this] { resets++; },
      .clock_ns = [this] { return now; },
  }};

  uint32_t rd(uint64_t off, size_t size) {
    uint8_t b[4] = {0x5a, 0x5a, 0x5a, 0x5a};
    pm.read(off, std::span(b, size));
    uint32_t v = 0;
    for (size_t i = 0; i < size; i++) v |= static_cast<uint32_t>(b[i]) << (8 * i);
    return v;
  }
  void wr(uint64_t off, size_t size, uint32_t v) {
    uint8_t b[4];
    for (size_t i = 0; i < 4; i++) b[i] = static_cast<uint8_t>(v >> (8 * i));
    pm.write(off, std::span<const uint8_t>(b, size));
  }
};

TEST(AcpiPm, ResetState) {
  Rig r;
  EXPECT_EQ(r.rd(0, 2), 0u) << "PM1_STS";
  EXPECT_EQ(r.rd(2, 2), 0u) << "PM1_EN";
  EXPECT_EQ(r.rd(4, 2), kSciEn) << "PM1_CNT: SCI_EN set, ACPI mode";
  EXPECT_EQ(r.rd(6, 2), 0u);
  EXPECT_EQ(r.rd(12, 1), 0u) << "reset register reads 0";
  EXPECT_EQ(r.rd(13, 2), 0u);
  EXPECT_TRUE(r.sci.empty());
  EXPECT_EQ(r.pm.name(), "acpi-pm");
}

TEST(AcpiPm, PowerButtonWithoutEnableSetsStatusOnly) {
  Rig r;
  r.pm.press_power_button();
  EXPECT_EQ(r.rd(0, 2), kPwrBtnSts);
  EXPECT_EQ(r.rd(1, 1), 0x01u) << "high byte of PM1_STS";
  EXPECT_TRUE(r.sci.empty()) << "PWRBTN_EN clear: no SCI";
  EXPECT_FALSE(r.pm.sci_level());
  // Enabling it afterwards raises the SCI for the pending event.
  r.wr(2, 2, kPwrBtnEn);
  EXPECT_EQ(r.rd(2, 2), kPwrBtnEn);
  ASSERT_EQ(r.sci, std::vector<bool>{true});
  EXPECT_TRUE(r.pm.sci_level());
}

TEST(AcpiPm, StatusIsWriteOneToClear) {
  Rig r;
  r.wr(2, 2, kPwrBtnEn);
  r.pm.press_power_button();
  ASSERT_EQ(r.sci, std::vector<bool>{true});
  r.wr(0, 2, 0);  // writing 0 changes nothing
  EXPECT_EQ(r.rd(0, 2), kPwrBtnSts);
  r.wr(0, 2, 0xfeff);  // every other bit: nothing
  EXPECT_EQ(r.rd(0, 2), kPwrBtnSts);
  EXPECT_EQ(r.sci.size(), 1u);
  r.wr(0, 2, kPwrBtnSts);
  EXPECT_EQ(r.rd(0, 2), 0u);
  EXPECT_EQ(r.sci, (std::vector<bool>{true, false})) << "acknowledging lowers the SCI";
  // Writing 1s never sets status bits.
  r.wr(0, 2, 0xffff);
  EXPECT_EQ(r.rd(0, 2), 0u);
  // Byte access to the high byte clears it too.
  r.pm.press_power_button();
  r.wr(1, 1, 0x01);
  EXPECT_EQ(r.rd(0, 2), 0u);
  EXPECT_EQ(r.sci, (std::vector<bool>{true, false, true, false}));
}

TEST(AcpiPm, DisablingTheEventLowersTheSci) {
  Rig r;
  r.wr(2, 2, kPwrBtnEn);
  r.pm.press_power_button();
  r.wr(2, 2, 0);
  EXPECT_EQ(r.sci, (std::vector<bool>{true, false}));
  EXPECT_EQ(r.rd(0, 2), kPwrBtnSts) << "status stays until acknowledged";
}

TEST(AcpiPm, SciEnGatesTheSci) {
  Rig r;
  r.wr(4, 2, 0);  // SCI_EN off
  EXPECT_EQ(r.rd(4, 2), 0u);
  r.wr(2, 2, kPwrBtnEn);
  r.pm.press_power_button();
  EXPECT_TRUE(r.sci.empty());
  r.wr(4, 2, kSciEn);
  EXPECT_EQ(r.sci, std::vector<bool>{true});
}

TEST(AcpiPm, EnableKeepsOnlyDefinedBits) {
  Rig r;
  r.wr(2, 2, 0xffff);
  EXPECT_EQ(r.rd(2, 2), static_cast<uint32_t>(kTmrEn | kGblEn | kPwrBtnEn | kSlpBtnEn | kRtcEn | (1u << 14)));
  r.wr(3, 1, 0x00);  // byte write to the high half only
  EXPECT_EQ(r.rd(2, 2), static_cast<uint32_t>(kTmrEn | kGblEn));
}

TEST(AcpiPm, S5PowersOff) {
  Rig r;
  r.wr(4, 2, (kSlpTypS5 << kSlpTypShift) | kSlpEn | kSciEn);
  EXPECT_EQ(r.poweroffs, 1);
  EXPECT_EQ(r.resets, 0);
  EXPECT_EQ(r.rd(4, 2), (kSlpTypS5 << kSlpTypShift) | kSciEn) << "SLP_EN reads 0, SLP_TYP kept";
}

TEST(AcpiPm, S5AsOneByteWrite) {
  Rig r;
  r.wr(5, 1, 0x34);  // (5 << 2) | SLP_EN in the high byte
  EXPECT_EQ(r.poweroffs, 1);
  EXPECT_EQ(r.rd(4, 2), (5u << 10) | kSciEn);
}

TEST(AcpiPm, S5As32BitWriteFromPm1Evt) {
  Rig r;
  r.wr(2, 4, static_cast<uint32_t>((kSlpTypS5 << kSlpTypShift) | kSlpEn | kSciEn) << 16 | kPwrBtnEn);
  EXPECT_EQ(r.poweroffs, 1);
  EXPECT_EQ(r.rd(2, 2), kPwrBtnEn);
}

TEST(AcpiPm, OtherSleepTypesDoNothing) {
  Rig r;
  for (uint32_t typ = 0; typ < 8; typ++) {
    if (typ == kSlpTypS5) continue;
    r.wr(4, 2, (typ << kSlpTypShift) | kSlpEn | kSciEn);
    EXPECT_EQ(r.rd(4, 2), (typ << kSlpTypShift) | kSciEn);
  }
  EXPECT_EQ(r.poweroffs, 0);
  // SLP_TYP 5 without SLP_EN: only recorded.
  r.wr(4, 2, (kSlpTypS5 << kSlpTypShift) | kSciEn);
  EXPECT_EQ(r.poweroffs, 0);
  // A write to the low byte alone cannot carry SLP_EN (bit 13).
  r.wr(4, 1, 0xff);
  EXPECT_EQ(r.poweroffs, 0);
  EXPECT_EQ(r.resets, 0);
}

TEST(AcpiPm, ResetRegister) {
  Rig r;
  for (uint32_t v = 0; v < 256; v++) {
    if (v == kResetValue) continue;
    r.wr(12, 1, v);
  }
  EXPECT_EQ(r.resets, 0);
  r.wr(12, 1, kResetValue);
  EXPECT_EQ(r.resets, 1);
  r.wr(12, 4, 0xffffff00u | kResetValue);  // wider access: the byte at offset 12 decides
  EXPECT_EQ(r.resets, 2);
  r.wr(11, 2, static_cast<uint32_t>(kResetValue) << 8);
  EXPECT_EQ(r.resets, 3);
  r.wr(13, 1, kResetValue);  // not the reset register
  EXPECT_EQ(r.resets, 3);
  EXPECT_EQ(r.poweroffs, 0);
}

TEST(AcpiPm, PmTimerCounts3579545PerSecond) {
  Rig r;
  EXPECT_EQ(r.rd(8, 4), 0u);
  r.now += 1'000'000'000;
  EXPECT_EQ(r.rd(8, 4), 3579545u);
  r.now += 1'000;  // 1 us = 3.58 ticks
  EXPECT_EQ(r.rd(8, 4), 3579548u);
  EXPECT_EQ(r.rd(8, 2), 3579548u & 0xffff);
  EXPECT_EQ(r.rd(10, 2), 3579548u >> 16);
  EXPECT_EQ(r.rd(9, 1), (3579548u >> 8) & 0xff);
  r.wr(8, 4, 0);  // read-only
  EXPECT_EQ(r.rd(8, 4), 3579548u);
  // 32-bit wrap: after 2^32 ticks (~1200 s) it starts again; no overflow for days of uptime.
  r.now = 1000 + 5'000'000'000'000ull;  // 5000 s
  EXPECT_EQ(r.rd(8, 4), static_cast<uint32_t>(5000ull * 3579545ull));
  r.now = 1000 + 86'400'000'000'000ull * 30;  // 30 days
  EXPECT_EQ(r.rd(8, 4), static_cast<uint32_t>(86400ull * 30 * 3579545ull));
}

TEST(AcpiPm, DefaultClockAdvances) {
  AcpiPm pm(AcpiPm::Hooks{});
  uint32_t a = pm.pm_timer();
  uint32_t b = a;
  for (int i = 0; i < 1000000 && b == a; i++) b = pm.pm_timer();
  EXPECT_NE(a, b);
  pm.press_power_button();  // no hooks set: must not crash
  uint8_t s5[] = {0x34};
  pm.write(5, s5);
  uint8_t rst[] = {kResetValue};
  pm.write(12, rst);
}

TEST(AcpiPm, HostileAccessesNeverThrow) {
  Rig r;
  std::mt19937 rng(42);
  for (int i = 0; i < 20000; i++) {
    const uint64_t off = rng() % 20;  // including past the block
    const size_t size = std::array<size_t, 3>{1, 2, 4}[rng() % 3];
    if (rng() % 2) {
      uint8_t b[4];
      r.pm.read(off, std::span(b, size));
      for (size_t k = 0; k < size; k++) {
        if (off + k >= kPmBlockLen) {
          EXPECT_EQ(b[k], 0xff);
        }
      }
    } else {
      r.wr(off, size, static_cast<uint32_t>(rng()));
    }
    if (i % 97 == 0) r.pm.press_power_button();
  }
  // The SCI calls alternate (never two equal levels in a row).
  for (size_t i = 1; i < r.sci.size(); i++) EXPECT_NE(r.sci[i], r.sci[i - 1]);
  EXPECT_EQ(r.pm.sci_level(), r.sci.empty() ? false : r.sci.back());
}

// A VmHooks that records what install_pm does.
class FakeHooks : public VmHooks {
 public:
  Bus pio{"pio"}, mmio{"mmio"};
  std::vector<std::pair<uint32_t, bool>> lines;
  std::vector<DeviceInfo> devices;
  Bus& pio_bus() override { return pio; }
  Bus& mmio_bus() override { return mmio; }
  GuestMemory& memory() override { throw Error("no memory"); }
  void add_ioeventfd(AddressSpace, uint64_t, uint32_t, std::optional<uint64_t>, int) override {}
  void remove_ioeventfd(AddressSpace, uint64_t, uint32_t, std::optional<uint64_t>, int) override {}
  uint32_t allocate_irq_line() override { return 5; }
  void set_irq_line(uint32_t line, bool level) override { lines.emplace_back(line, level); }
  void add_irqfd(uint32_t, int) override {}
  void remove_irqfd(uint32_t, int) override {}
  uint32_t allocate_msi_gsi() override { return 24; }
  void set_msi_route(uint32_t, uint64_t, uint32_t) override {}
  void signal_msi(uint64_t, uint32_t) override {}
  void register_device(const DeviceInfo& info) override { devices.push_back(info); }
  void append_cmdline(const std::string&) override {}
};

TEST(AcpiPm, InstallWiresBusIrqAndQueryVm) {
  FakeHooks h;
  int off = 0, rst = 0;
  auto pm = install_pm(h, [&] { off++; }, [&] { rst++; });
  ASSERT_EQ(h.devices.size(), 1u);
  EXPECT_EQ(h.devices[0].type, "acpi");
  EXPECT_EQ(h.devices[0].id, "acpi0");
  EXPECT_EQ(h.devices[0].details,
            "io 0x600-0x60f sci 9 (pm1_evt 0x600, pm1_cnt 0x604, pm_tmr 0x608, reset 0x60c=0x06)");
  uint8_t b[2] = {};
  ASSERT_TRUE(h.pio.read(0x604, b));
  EXPECT_EQ(b[0], 1) << "SCI_EN";
  const uint8_t en[2] = {0x00, 0x01};
  ASSERT_TRUE(h.pio.write(0x602, en));
  pm->press_power_button();
  ASSERT_EQ(h.lines.size(), 1u);
  EXPECT_EQ(h.lines[0], std::make_pair(9u, true));
  const uint8_t ack[2] = {0x00, 0x01};
  ASSERT_TRUE(h.pio.write(0x600, ack));
  EXPECT_EQ(h.lines.back(), std::make_pair(9u, false));
  const uint8_t s5[2] = {0x01, 0x34};
  ASSERT_TRUE(h.pio.write(0x604, s5));
  EXPECT_EQ(off, 1);
  const uint8_t r6[1] = {0x06};
  ASSERT_TRUE(h.pio.write(0x60c, r6));
  EXPECT_EQ(rst, 1);
  // The block ends at 0x60f: 0x610 is someone else's.
  EXPECT_FALSE(h.pio.read(0x610, std::span(b, 1)));
  // A second device on the same ports is refused by the bus.
  EXPECT_THROW(install_pm(h, [] {}, [] {}), Error);
}

}  // namespace
}  // namespace vireo::acpi
