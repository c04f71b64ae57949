// Snapshot state of the virtio transports and devices: save on a paused device, restore into a fresh device
// of the same configuration over a copy of guest RAM, and the driver carries on as if nothing happened;
// inconsistent or hostile states are refused with one-line errors.
#include <gtest/gtest.h>

#include "unit/virtio/test_driver.h"
#include "virtio/balloon.h"
#include "virtio/rng.h"
#include "virtio/virtio_mmio.h"
#include "virtio/virtio_pci.h"

using namespace vireo;
using namespace vireo::virtio;
using namespace vireo::virtio::testing;
using nlohmann::json;

namespace {

constexpr uint64_t kBase = 0xD000'0000;
constexpr uint64_t kRing = 0x100000, kBuf = 0x200000;
constexpr uint64_t kModern = bit(kFVersion1) | bit(kFEventIdx) | bit(kFIndirectDesc);

void copy_ram(GuestMemory& from, GuestMemory& to) {
  std::vector<uint8_t> all(from.size());
  from.read(0, all);
  to.write(0, all);
}

template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

struct MmioRig {
  template <typename Make>
  explicit MmioRig(Make make) {
    dev = make(h.memory());
    mmio = std::make_shared<VirtioMmioDevice>(h, dev, kBase);
    h.mmio_bus().insert(kBase, VirtioMmioDevice::kWindowSize, mmio);
    dev->start();
    driver = std::make_unique<MmioDriver>(h, kBase);
  }
  ~MmioRig() {
    h.mmio_bus().remove(kBase);
    mmio->stop();
  }
  FakeHooks h;
  std::shared_ptr<VirtioDevice> dev;
  std::shared_ptr<VirtioMmioDevice> mmio;
  std::unique_ptr<MmioDriver> driver;
};

auto make_rng = [](GuestMemory& m) { return std::make_shared<RngDevice>(m, "rng0"); };

// A driven rng: two buffers used, then paused; returns its state.
json drive_and_save(MmioRig& a, GuestRing& ring) {
  EXPECT_TRUE(a.driver->init(kModern, {&ring}) & kStatusDriverOk);
  ring.set_desc(0, kBuf, 64, kDescFWrite);
  ring.set_desc(1, kBuf + 64, 64, kDescFWrite);
  ring.publish(0);
  ring.publish(1);
  a.driver->notify(0);
  EXPECT_TRUE(FakeHooks::wait_for([&] { return ring.used_idx() == 2; }));
  a.mmio->pause();
  return a.mmio->save_state();
}

TEST(VirtioState, MmioRngRoundTrip) {
  MmioRig a(make_rng);
  GuestRing ring_a(a.h.memory(), kRing, 8);
  const json st = drive_and_save(a, ring_a);
  // Through the file encoding and back, as snapshots do.
  const json decoded = json::from_cbor(json::to_cbor(st));
  ASSERT_EQ(decoded, st);

  MmioRig b(make_rng);
  GuestRing ring_b(b.h.memory(), kRing, 8);
  copy_ram(a.h.memory(), b.h.memory());
  JsonReader r(decoded, "state: rng0");
  b.mmio->restore_state(r, 1);
  r.finish();
  MmioDriver& d = *b.driver;
  EXPECT_EQ(d.status(), kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(d.reg(0x044), 1u);  // QueueReady
  EXPECT_EQ(d.reg(0x080), kRing);
  EXPECT_EQ(d.reg(0x060), a.driver->reg(0x060));  // interrupt status carried over
  EXPECT_EQ(b.h.line(b.mmio->irq()), a.h.line(a.mmio->irq()));
  // The driver goes on with the third buffer: the device continues at avail index 2, used index 2.
  ring_b.set_avail_idx(2);
  b.h.memory().write(kBuf + 128, std::vector<uint8_t>(64, 0));
  ring_b.set_desc(2, kBuf + 128, 64, kDescFWrite);
  ring_b.publish(2);
  d.notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ring_b.used_idx() == 3; }));
  EXPECT_EQ(ring_b.used(2).id, 2u);
  EXPECT_EQ(ring_b.used(2).len, 64u);
}

TEST(VirtioState, MmioRejectsInconsistentState) {
  MmioRig a(make_rng);
  GuestRing ring_a(a.h.memory(), kRing, 8);
  const json st = drive_and_save(a, ring_a);
  auto restore_into_fresh = [&](json s, bool with_ram) {
    MmioRig b(make_rng);
    if (with_ram) copy_ram(a.h.memory(), b.h.memory());
    JsonReader r(s, "state: rng0");
    return error_of([&] { b.mmio->restore_state(r, 1); });
  };
  // Guest RAM does not match (the used ring says 0): refused, not trusted.
  EXPECT_EQ(restore_into_fresh(st, false),
            "state: rng0.virtio.queues[0]: virtqueue: used idx 2 saved, the used ring in memory says 0");
  json s = st;
  s["virtio"]["queues"][0]["ring"]["last_avail"] = 200;
  EXPECT_EQ(restore_into_fresh(s, true), "state: rng0.virtio.queues[0]: virtqueue: 198 buffers in flight in a queue of 8");
  s = st;
  s["virtio"]["queues"][0]["size"] = 4096;
  EXPECT_EQ(restore_into_fresh(s, true), "state: rng0.virtio.queues[0].size: size 4096 above the maximum 256");
  s = st;
  s["virtio"]["queues"][0]["desc"] = uint64_t{1} << 40;
  EXPECT_NE(restore_into_fresh(s, true).find("outside guest RAM"), std::string::npos);
  s = st;
  s["virtio"]["driver_features"] = uint64_t{1} << 60;
  EXPECT_EQ(restore_into_fresh(s, true).rfind("state: rng0.virtio.driver_features: 0x1000000000000000 has bits", 0), 0u);
  s = st;
  s["virtio"]["queues"].push_back(s["virtio"]["queues"][0]);
  EXPECT_EQ(restore_into_fresh(s, true), "state: rng0.virtio.queues: 2 items, at most 1 allowed");
  s = st;
  s["transport"]["interrupt_status"] = 0x80;
  EXPECT_EQ(restore_into_fresh(s, true), "state: rng0.transport.interrupt_status: 0x80 is not an interrupt status");
  s = st;
  s["virtio"].erase("status");
  EXPECT_EQ(restore_into_fresh(s, true), "state: rng0.virtio.status: missing");
}

// Balloon: the held statistics buffer is handed back at save and popped again by the restored device.
TEST(VirtioState, BalloonHeldStatsBufferIsPoppedAgain) {
  auto make = [](GuestMemory& m) { return std::make_shared<BalloonDevice>(m, "balloon0"); };
  MmioRig a(make);
  GuestRing inflate(a.h.memory(), kRing, 8), deflate(a.h.memory(), kRing + 0x10000, 8),
      stats(a.h.memory(), kRing + 0x20000, 8);
  ASSERT_TRUE(a.driver->init(kModern | bit(balloon_bits::kFStatsVq), {&inflate, &deflate, &stats}) & kStatusDriverOk);
  // One statistic: tag 4 (free memory) = 12345.
  struct __attribute__((packed)) Stat {
    uint16_t tag;
    uint64_t val;
  } stat{4, 12345};
  a.h.memory().write_obj(kBuf, stat);
  stats.set_desc(0, kBuf, sizeof stat, 0);
  stats.publish(0);
  a.driver->notify(2);
  auto* ba = static_cast<BalloonDevice*>(a.dev.get());
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ba->stats().count(4) == 1; }));
  EXPECT_EQ(stats.used_idx(), 0);  // the device holds the buffer
  a.mmio->pause();
  const json st = a.mmio->save_state();
  EXPECT_EQ(st["virtio"]["queues"][2]["ring"]["last_avail"], 0);  // rewound over the held buffer

  MmioRig b(make);
  copy_ram(a.h.memory(), b.h.memory());
  JsonReader r(st, "state: balloon0");
  b.mmio->restore_state(r, 1);
  auto* bb = static_cast<BalloonDevice*>(b.dev.get());
  EXPECT_EQ(bb->stats().at(4), 12345u);
  // request_stats() answers the re-popped buffer: the used ring advances in the restored VM.
  ASSERT_TRUE(FakeHooks::wait_for([&] {
    bb->request_stats();
    return b.h.memory().read_obj<uint16_t>(stats.config().device_addr + 2) == 1;
  }));
}

// virtio-pci: config space, BAR, MSI-X table and vectors, doorbell ioeventfds and routes come back.
TEST(VirtioState, PciRngRoundTripWithMsix) {
  struct PciRig {
    FakeHooks h;
    std::shared_ptr<RngDevice> dev;
    std::unique_ptr<pci::PciHostBridge> bridge;
    std::shared_ptr<VirtioPciDevice> fn;
    PciRig() {
      dev = std::make_shared<RngDevice>(h.memory(), "rng0");
      bridge = std::make_unique<pci::PciHostBridge>(h.pio_bus(), h.mmio_bus());
      fn = std::make_shared<VirtioPciDevice>(h, dev);
      bridge->add_device(fn);
      dev->start();
    }
    ~PciRig() { fn->stop(); }
  };
  PciRig a;
  PciDriver da(a.h, 0x1040 + kTypeRng);
  GuestRing ring_a(a.h.memory(), kRing, 8);
  ASSERT_TRUE(da.init(kModern, {&ring_a}) & kStatusDriverOk);
  const uint8_t cap = da.msix_cap();
  const uint32_t table = da.cfg_read(da.slot(), cap + 4, 4) & ~7u;
  const uint64_t entry1 = da.bar() + table + 16;
  a.h.mmio_write(entry1, 0xfee00000, 4);
  a.h.mmio_write(entry1 + 8, 0x4051, 4);
  a.h.mmio_write(entry1 + 12, 0, 4);
  da.cfg_write(da.slot(), cap + 2, 0x8000, 2);
  da.set_common(22, 0, 2);
  da.set_common(26, 1, 2);
  ring_a.set_desc(0, kBuf, 32, kDescFWrite);
  ring_a.set_used_event(0);
  ring_a.publish(0);
  da.notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ring_a.used_idx() == 1; }));
  a.fn->pause();
  const json st = json::from_cbor(json::to_cbor(a.fn->save_state()));

  PciRig b;
  GuestRing ring_b(b.h.memory(), kRing, 8);
  copy_ram(a.h.memory(), b.h.memory());
  {
    JsonReader r(st, "state: rng0");
    b.fn->restore_state(r, 1);
  }
  PciDriver db(b.h, 0x1040 + kTypeRng);
  EXPECT_EQ(db.bar(), da.bar());
  EXPECT_EQ(db.cfg_read(db.slot(), cap + 2, 2) & 0x8000, 0x8000u);  // MSI-X enabled
  EXPECT_EQ(b.h.mmio_read(db.bar() + table + 24, 4), 0x4051u);      // entry 1 data
  db.set_common(22, 0, 2);
  EXPECT_EQ(db.common(26, 2), 1u);  // queue 0 -> vector 1
  EXPECT_EQ(db.common(28, 2), 1u);  // queue enabled
  ASSERT_EQ(b.h.ioevents.size(), 1u);
  EXPECT_EQ(b.h.ioevents[0].addr, db.bar() + VirtioPciDevice::kNotifyOff);
  ASSERT_EQ(b.h.irqfds.size(), 1u);  // the route for vector 1, made at restore
  const uint32_t gsi = b.h.irqfds.begin()->first;
  EXPECT_EQ(b.h.routes[gsi], (std::pair<uint64_t, uint32_t>{0xfee00000, 0x4051}));
  // Next request completes and interrupts through the restored route.
  ring_b.set_avail_idx(1);
  ring_b.set_desc(1, kBuf + 64, 32, kDescFWrite);
  ring_b.set_used_event(1);
  ring_b.publish(1);
  db.notify(0);
  ASSERT_TRUE(FakeHooks::wait_for([&] { return ring_b.used_idx() == 2; }));
  EXPECT_TRUE(FakeHooks::wait_for([&] { return b.h.take_irqfd(gsi); }));

  // A state from another kind of device is refused by its read-only config bytes.
  json other = st;
  auto cfg = other["pci"]["config"].get_binary();
  cfg[2] ^= 1;  // device id
  other["pci"]["config"] = json::binary(cfg);
  PciRig c;
  copy_ram(a.h.memory(), c.h.memory());
  JsonReader r(other, "state: rng0");
  EXPECT_EQ(error_of([&] { c.fn->restore_state(r, 1); }).rfind("state: rng0.pci.config: read-only byte 0x02 is 0x", 0), 0u);
}

}  // namespace
