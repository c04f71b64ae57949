// vireo/devices: the PIO and MMIO buses. The VMM inserts devices at address ranges; vCPU exits are dispatched
// here. A device sees offsets relative to the start of its range and never another device.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>

#include "devices/device.h"

namespace vireo {

// A device with registers on a bus. Its lifecycle (pause, state) is the Device part.
class BusDevice : public Device {
 public:
  // `offset` is relative to the base the device was inserted at; data.size() is 1, 2, 4 or 8 (PIO: 1-4).
  // Values are guest-controlled: devices validate them. Reads must fill all of `data`.
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual std::string name() const = 0;
};

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Throws Error if [base, base+len) is empty or overlaps a range already inserted.
  void insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev);
  // Removes the range starting exactly at base (e.g. a PCI BAR being moved); false if none.
  bool remove(uint64_t base);

  // Dispatch an access. Returns false if no device covers [addr, addr+size) wholly; an unclaimed read
  // then fills data with 0xff (as an open bus does) and an unclaimed write is dropped.
  bool read(uint64_t addr, std::span<uint8_t> data) const;
  bool write(uint64_t addr, std::span<const uint8_t> data) const;

  const std::string& name() const { return name_; }

 private:
  struct Range {
    uint64_t len;
    std::shared_ptr<BusDevice> dev;
  };
  // Finds the device covering [addr, addr+size); returns it and the offset into its range.
  std::shared_ptr<BusDevice> lookup(uint64_t addr, uint64_t size, uint64_t* offset) const;

  std::string name_;
  mutable std::shared_mutex mu_;
  std::map<uint64_t, Range> ranges_;  // keyed by base
};

}  // namespace vireo
