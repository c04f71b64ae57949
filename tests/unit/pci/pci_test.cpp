// PCI host bridge: CF8/CFC and ECAM config access, BAR sizing/placement/relocation, command register
// decode, capability list, MSI-X table/PBA semantics.
#include "pci/pci.h"

#include <gtest/gtest.h>

#include <cstring>

#include "pci/msix.h"
#include "unit/virtio/fake_hooks.h"

using namespace vireo;
using namespace vireo::pci;
using vireo::virtio::testing::FakeHooks;

namespace {

class TestFunction : public PciFunction {
 public:
  TestFunction() : PciFunction("test", 0x1234, 0x5678, 0x020000, 7, 0xaaaa, 0xbbbb) {
    add_bar(0, BarKind::Mem32, 0x4000);
    add_bar(2, BarKind::Mem64, 0x100000, true);
    add_bar(4, BarKind::Io, 0x20);
    std::vector<uint8_t> cap{0x09, 0, 8, 1, 2, 3, 4, 5};
    std::vector<uint8_t> w(8, 0);
    w[7] = 0xff;
    cap_ = add_capability(cap, w);
    cap2_ = add_capability(std::vector<uint8_t>{0x05, 0, 0, 0});
  }
  uint8_t cap_, cap2_;
  std::vector<std::tuple<int, uint64_t, size_t>> reads, writes;
  std::vector<std::pair<std::optional<uint64_t>, std::optional<uint64_t>>> moves;

 protected:
  void bar_read(int index, uint64_t offset, std::span<uint8_t> data) override {
    reads.emplace_back(index, offset, data.size());
    std::memset(data.data(), 0x5a, data.size());
  }
  void bar_write(int index, uint64_t offset, std::span<const uint8_t> data) override {
    writes.emplace_back(index, offset, data.size());
  }
  void bar_moved(int index, std::optional<uint64_t> o, std::optional<uint64_t> n) override {
    if (index == 0) moves.emplace_back(o, n);
  }
};

class PciBus : public ::testing::Test {
 protected:
  PciBus() : bridge(h.pio_bus(), h.mmio_bus()) {
    fn = std::make_shared<TestFunction>();
    slot = bridge.add_device(fn);
  }
  uint32_t cf8_read(int s, uint16_t off, unsigned size) {
    h.pio_write(0xcf8, 0x8000'0000u | s << 11 | (off & 0xfc), 4);
    return h.pio_read(0xcfc + (off & 3), size);
  }
  void cf8_write(int s, uint16_t off, uint32_t v, unsigned size) {
    h.pio_write(0xcf8, 0x8000'0000u | s << 11 | (off & 0xfc), 4);
    h.pio_write(0xcfc + (off & 3), v, size);
  }
  uint64_t ecam(int s, uint16_t off) { return bridge.layout().ecam_base + (uint64_t(s) << 15) + off; }

  FakeHooks h;
  PciHostBridge bridge;
  std::shared_ptr<TestFunction> fn;
  uint8_t slot;
};

TEST_F(PciBus, IdentityThroughBothMechanisms) {
  EXPECT_EQ(slot, 1);
  EXPECT_EQ(cf8_read(slot, 0, 4), 0x56781234u);
  EXPECT_EQ(h.mmio_read(ecam(slot, 0), 4), 0x56781234u);
  EXPECT_EQ(cf8_read(slot, 2, 2), 0x5678u);
  EXPECT_EQ(cf8_read(slot, 0x08, 4), 0x02000007u);  // class + revision
  EXPECT_EQ(cf8_read(slot, 0x2c, 4), 0xbbbbaaaau);
  // Slot 0 is the host bridge (class 06 00 00).
  EXPECT_EQ(cf8_read(0, 0x08, 4) >> 8, 0x060000u);
  // Absent slots, functions and buses read all-ones.
  EXPECT_EQ(cf8_read(9, 0, 4), 0xffffffffu);
  EXPECT_EQ(h.mmio_read(ecam(slot, 0) + (1 << 12), 4), 0xffffffffu);  // function 1
  h.pio_write(0xcf8, 0x8001'0000u, 4);                                   // bus 1
  EXPECT_EQ(h.pio_read(0xcfc, 4), 0xffffffffu);
  // Without the enable bit, data reads float.
  h.pio_write(0xcf8, slot << 11, 4);
  EXPECT_EQ(h.pio_read(0xcfc, 4), 0xffffffffu);
  EXPECT_EQ(h.pio_read(0xcf8, 4), static_cast<uint32_t>(slot << 11));
}

TEST_F(PciBus, BarSizingAndPlacement) {
  uint32_t bar0 = cf8_read(slot, 0x10, 4);
  EXPECT_EQ(bar0 & 0xf, 0u);
  EXPECT_EQ(bar0 % 0x4000, 0u);
  EXPECT_GE(bar0, 0xC0000000u);
  // Sizing: write all-ones, read the size mask back.
  cf8_write(slot, 0x04, 0, 2);  // decode off, as Linux does while sizing
  cf8_write(slot, 0x10, 0xffffffff, 4);
  EXPECT_EQ(cf8_read(slot, 0x10, 4), ~0x3fffu);
  cf8_write(slot, 0x18, 0xffffffff, 4);
  cf8_write(slot, 0x1c, 0xffffffff, 4);
  EXPECT_EQ(cf8_read(slot, 0x18, 4), ~0xfffffu | 0xc);  // 64-bit, prefetchable
  EXPECT_EQ(cf8_read(slot, 0x1c, 4), 0xffffffffu);
  cf8_write(slot, 0x20, 0xffffffff, 4);
  EXPECT_EQ(cf8_read(slot, 0x20, 4), 0xffe1u);  // I/O: 16-bit decode, upper half hardwired 0
  EXPECT_EQ(cf8_read(slot, 0x14, 4), 0u);                           // unimplemented BAR
  // Place BAR0 somewhere else and enable decode: accesses reach the device there.
  cf8_write(slot, 0x10, 0xC800'0000, 4);
  cf8_write(slot, 0x04, kCommandMem, 2);
  EXPECT_EQ(h.mmio_read(0xC800'0010, 4), 0x5a5a5a5au);
  ASSERT_FALSE(fn->reads.empty());
  EXPECT_EQ(fn->reads.back(), std::make_tuple(0, uint64_t{0x10}, size_t{4}));
  EXPECT_EQ(h.mmio_read(bar0 + 0x10, 4), 0xffffffffu);  // old place: nothing
  // The move was reported (unmapped for sizing, then mapped at the new place).
  ASSERT_FALSE(fn->moves.empty());
  EXPECT_EQ(fn->moves.back().second, std::optional<uint64_t>(0xC800'0000));
  // Decode off: unmapped.
  cf8_write(slot, 0x04, 0, 2);
  EXPECT_EQ(h.mmio_read(0xC800'0010, 4), 0xffffffffu);
  EXPECT_EQ(fn->moves.back().second, std::nullopt);
}

TEST_F(PciBus, CapabilitiesAndWriteMasks) {
  EXPECT_TRUE(cf8_read(slot, 0x06, 2) & kStatusCapList);
  uint8_t p = static_cast<uint8_t>(cf8_read(slot, 0x34, 1));
  EXPECT_EQ(p, fn->cap_);
  EXPECT_EQ(cf8_read(slot, p, 1), 0x09u);
  EXPECT_EQ(cf8_read(slot, p + 1, 1), fn->cap2_);
  EXPECT_EQ(cf8_read(slot, fn->cap2_ + 1, 1), 0u);  // end of list
  // Only the masked byte is writable.
  cf8_write(slot, p + 4, 0xffffffff, 4);
  EXPECT_EQ(cf8_read(slot, p + 4, 4), 0xff040302u);
  // Vendor/device ids are read-only.
  cf8_write(slot, 0, 0, 4);
  EXPECT_EQ(cf8_read(slot, 0, 4), 0x56781234u);
  // Interrupt line is writable.
  cf8_write(slot, 0x3c, 0x0b, 1);
  EXPECT_EQ(cf8_read(slot, 0x3c, 1), 0x0bu);
}

TEST_F(PciBus, EcamAccessSizes) {
  EXPECT_EQ(h.mmio_read(ecam(slot, 0), 8), 0x56781234u | uint64_t(cf8_read(slot, 4, 4)) << 32);
  h.mmio_write(ecam(slot, 0x3c), 0x0a, 1);
  EXPECT_EQ(cf8_read(slot, 0x3c, 1), 0x0au);
  EXPECT_EQ(h.mmio_read(ecam(slot, 0x3d), 1), 0u);  // no interrupt pin on this function
}

TEST(PciMsix, TableMaskingAndPending) {
  Msix m(4);
  EXPECT_EQ(m.table_bytes(), 64u);
  EXPECT_EQ(m.pba_bytes(), 8u);
  auto cap = m.capability(0, 0x4000, 0, 0x6000);
  EXPECT_EQ(cap[0], 0x11);
  EXPECT_EQ(cap[2] | cap[3] << 8, 3);  // table size - 1
  // Disabled: triggers do nothing.
  EXPECT_FALSE(m.trigger(0));
  EXPECT_FALSE(m.pending(0));
  m.set_control(Msix::kControlEnable);
  // Entries start masked: pending.
  EXPECT_FALSE(m.trigger(1));
  EXPECT_TRUE(m.pending(1));
  uint64_t pba = 0;
  m.pba_read(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&pba), 8));
  EXPECT_EQ(pba, 2u);
  int changed = -1;
  uint32_t addr = 0xfee01000, data = 0x31, ctrl = 0;
  m.table_write(16, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&addr), 4), &changed);
  EXPECT_EQ(changed, 1);
  m.table_write(24, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&data), 4), &changed);
  auto fire = m.table_write(28, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&ctrl), 4), &changed);
  ASSERT_EQ(fire.size(), 1u);  // unmasking a pending vector delivers it
  EXPECT_EQ(fire[0], 1);
  EXPECT_FALSE(m.pending(1));
  EXPECT_EQ(m.entry(1).address, 0xfee01000u);
  EXPECT_EQ(m.entry(1).data, 0x31u);
  EXPECT_TRUE(m.trigger(1));
  // Function mask holds everything.
  m.set_control(Msix::kControlEnable | Msix::kControlFunctionMask);
  EXPECT_FALSE(m.trigger(1));
  EXPECT_TRUE(m.pending(1));
  EXPECT_EQ(m.set_control(Msix::kControlEnable), std::vector<uint16_t>{1});
  // Out-of-range vectors and bad accesses are ignored.
  EXPECT_FALSE(m.trigger(9));
  uint32_t v = 0x12345678;
  m.table_write(64, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4), &changed);
  m.table_write(2, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4), &changed);
  EXPECT_EQ(changed, -1);
  uint32_t r = 0;
  m.table_read(12, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&r), 4));
  EXPECT_EQ(r, 1u);  // entry 0 still masked
  EXPECT_THROW(Msix(0), Error);
}

}  // namespace
