// The one platform resource allocator: fixed reservations, windows, IRQ lines, GSIs, overlaps by name.
#include "vmm/resources.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/layout.h"

namespace vireo::vmm {
namespace {

template <typename F>
std::string msg(F fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Resources, FixedReservationsRefuseOverlapsByName) {
  ResourceAllocator r;
  r.reserve_pio(0x3f8, 8, "serial0");
  r.reserve_pio(0x60, 5, "i8042");
  r.reserve_pio(0x400, 1, "a");
  r.reserve_pio(0x3f0, 8, "b");  // adjacent below: fine
  EXPECT_EQ(msg([&] { r.reserve_pio(0x3fc, 2, "x"); }), "resources: I/O 0x3fc-0x3fd for x overlaps serial0");
  EXPECT_EQ(msg([&] { r.reserve_pio(0x5e, 4, "y"); }), "resources: I/O 0x5e-0x61 for y overlaps i8042");
  EXPECT_EQ(msg([&] { r.reserve_pio(0xffff, 2, "z"); }), "resources: I/O ports 0xffff+2 for z beyond 0xffff");
  EXPECT_EQ(msg([&] { r.reserve_pio(0x10, 0, "e"); }), "resources: empty or wrapping I/O range for e");
  r.reserve_irq(4, "serial0");
  EXPECT_EQ(msg([&] { r.reserve_irq(4, "ide"); }), "resources: IRQ 4 for ide overlaps serial0");
  EXPECT_EQ(msg([&] { r.reserve_irq(24, "w"); }), "resources: IRQ 24 for w: the IOAPIC has 24 pins");
  r.reserve_mmio(0xfec00000, 0x1000, "ioapic");
  EXPECT_EQ(msg([&] { r.reserve_mmio(0xfebff000, 0x2000, "m"); }),
            "resources: MMIO 0xfebff000-0xfec00fff for m overlaps ioapic");
}

TEST(Resources, WindowsAreFilledNaturallyAlignedAroundReservations) {
  ResourceAllocator r;
  const Window w{0xC000'0000, 0x10'0000};
  EXPECT_EQ(r.allocate_mmio(w, 0x8000, "a"), 0xC000'0000u);
  EXPECT_EQ(r.allocate_mmio(w, 0x1000, "b"), 0xC000'8000u);
  EXPECT_EQ(r.allocate_mmio(w, 0x8000, "c"), 0xC001'0000u);  // natural alignment skips the gap after b
  r.reserve_mmio(0xC001'8000, 0x1000, "fixed");
  EXPECT_EQ(r.allocate_mmio(w, 0x1000, "d"), 0xC000'9000u);  // first fit in the gap
  EXPECT_EQ(r.allocate_mmio(w, 0x4000, "e"), 0xC000'C000u);
  EXPECT_EQ(r.allocate_mmio(w, 0x2000, "f", 0x1000), 0xC000'A000u);  // explicit alignment: fits after d
  EXPECT_EQ(msg([&] { r.allocate_mmio(w, 0x10'0000, "big"); }),
            "resources: no room for 1048576 bytes of MMIO for big in 0xc0000000-0xc00fffff");
  r.release(ResourceKind::Mmio, 0xC000'8000);
  EXPECT_EQ(r.allocate_mmio(w, 0x1000, "g"), 0xC000'8000u);
  EXPECT_EQ(r.allocate_pio({0xC000, 0x4000}, 0x20, "io"), 0xC000u);
}

TEST(Resources, IrqLinesAndGsis) {
  ResourceAllocator r(30);
  r.reserve_irq(5, "fixed");
  EXPECT_EQ(r.allocate_irq("a"), 6u);  // 5 is taken: next of layout::kDeviceIrqLines
  EXPECT_EQ(r.allocate_irq("b"), 7u);
  EXPECT_EQ(r.allocate_irq("c"), 10u);  // 8 (rtc) and 9 (ACPI SCI) are never handed out
  for (size_t i = 3; i < layout::kDeviceIrqLines.size() - 1; ++i) r.allocate_irq("more");
  EXPECT_EQ(msg([&] { r.allocate_irq("last"); }), "resources: no free interrupt line left for last");
  for (uint32_t g = 24; g < 30; ++g) EXPECT_EQ(r.allocate_gsi("msi"), g);
  EXPECT_EQ(msg([&] { r.allocate_gsi("msi"); }), "resources: all 30 GSIs in use (msi)");
  r.release(ResourceKind::Gsi, 26);
  EXPECT_EQ(r.allocate_gsi("msi"), 26u);
  EXPECT_EQ(r.grants().size(), 1u + (layout::kDeviceIrqLines.size() - 1) + 6u);
}

}  // namespace
}  // namespace vireo::vmm
