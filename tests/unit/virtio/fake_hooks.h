// Test helper: a VmHooks without KVM. Records ioeventfds/irqfds/routes/lines; mmio_write() behaves like
// KVM (a write matching an ioeventfd signals it and does not reach the bus).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "devices/vm_hooks.h"

namespace vireo::virtio::testing {

class FakeHooks : public VmHooks {
 public:
  explicit FakeHooks(uint64_t ram = 16 << 20)
      : pio_("pio"), mmio_("mmio"), mem_(MemoryConfig{.size = ram, .thp = false, .name = "fake-hooks"}) {}

  Bus& pio_bus() override { return pio_; }
  Bus& mmio_bus() override { return mmio_; }
  GuestMemory& memory() override { return mem_; }

  struct IoEvent {
    AddressSpace space;
    uint64_t addr;
    uint32_t len;
    std::optional<uint64_t> datamatch;
    int fd;
  };
  void add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> dm, int fd) override {
    std::lock_guard lock(mu);
    ioevents.push_back({space, addr, len, dm, fd});
  }
  void remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> dm, int fd) override {
    std::lock_guard lock(mu);
    for (auto it = ioevents.begin(); it != ioevents.end(); ++it) {
      if (it->space == space && it->addr == addr && it->len == len && it->datamatch == dm && it->fd == fd) {
        ioevents.erase(it);
        return;
      }
    }
    throw Error("fake hooks: removing an ioeventfd that is not registered");
  }
  uint32_t allocate_irq_line() override {
    std::lock_guard lock(mu);
    if (next_line > 23) throw Error("no irq line left");
    return next_line++;
  }
  void set_irq_line(uint32_t line, bool level) override {
    std::lock_guard lock(mu);
    lines[line] = level;
    if (level) ++line_raises[line];
    cv.notify_all();
  }
  void add_irqfd(uint32_t gsi, int fd) override {
    std::lock_guard lock(mu);
    irqfds[gsi] = fd;
  }
  void remove_irqfd(uint32_t gsi, int) override {
    std::lock_guard lock(mu);
    irqfds.erase(gsi);
  }
  uint32_t allocate_msi_gsi() override {
    std::lock_guard lock(mu);
    return next_gsi++;
  }
  void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) override {
    std::lock_guard lock(mu);
    routes[gsi] = {address, data};
  }
  void signal_msi(uint64_t, uint32_t) override {}
  void register_device(const DeviceInfo& info) override {
    std::lock_guard lock(mu);
    devices.push_back(info);
  }
  void append_cmdline(const std::string& text) override {
    std::lock_guard lock(mu);
    cmdline += (cmdline.empty() ? "" : " ") + text;
  }

  // Guest-side accesses.
  uint64_t mmio_read(uint64_t addr, unsigned size) {
    uint64_t v = 0;
    mmio_.read(addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
    return v;
  }
  void mmio_write(uint64_t addr, uint64_t v, unsigned size) {
    {
      std::lock_guard lock(mu);
      for (const auto& e : ioevents) {
        if (e.space == AddressSpace::Mmio && e.addr == addr && (e.len == 0 || e.len == size) &&
            (!e.datamatch || *e.datamatch == v)) {
          uint64_t one = 1;
          if (::write(e.fd, &one, 8) != 8) throw Error("ioeventfd write");
          ++ioeventfd_hits;
          return;
        }
      }
    }
    mmio_.write(addr, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), size));
  }
  uint32_t pio_read(uint64_t port, unsigned size) {
    uint32_t v = 0;
    pio_.read(port, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
    return v;
  }
  void pio_write(uint64_t port, uint32_t v, unsigned size) {
    pio_.write(port, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), size));
  }

  // Waits until pred() holds (polled), false on timeout.
  static bool wait_for(const std::function<bool()>& pred, int ms = 5000) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return pred();
  }
  // Consumes an irqfd signal for `gsi` (non-blocking); true if it had fired.
  bool take_irqfd(uint32_t gsi) {
    int fd;
    {
      std::lock_guard lock(mu);
      auto it = irqfds.find(gsi);
      if (it == irqfds.end()) return false;
      fd = it->second;
    }
    uint64_t v;
    return ::read(fd, &v, 8) == 8;
  }
  bool line(uint32_t l) {
    std::lock_guard lock(mu);
    return lines[l];
  }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<IoEvent> ioevents;
  std::map<uint32_t, bool> lines;
  std::map<uint32_t, int> line_raises;
  std::map<uint32_t, int> irqfds;
  std::map<uint32_t, std::pair<uint64_t, uint32_t>> routes;
  std::vector<DeviceInfo> devices;
  std::string cmdline;
  uint32_t next_line = 5, next_gsi = 24;
  int ioeventfd_hits = 0;

 private:
  Bus pio_, mmio_;
  GuestMemory mem_;
};

}  // namespace vireo::virtio::testing
