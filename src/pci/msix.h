// vireo/pci: MSI-X state (PCI 3.0 6.8.2): the capability's message control, the vector table and the
// pending-bit array. Thread-safe. The owner maps table/PBA into a BAR and turns deliveries into MSIs.
#pragma once
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/json_reader.h"

namespace vireo::pci {

class Msix {
 public:
  struct Entry {
    uint64_t address = 0;
    uint32_t data = 0;
    bool masked = true;
  };
  static constexpr uint16_t kControlEnable = 0x8000, kControlFunctionMask = 0x4000;

  explicit Msix(uint16_t vectors);  // 1..2048
  uint16_t vectors() const { return static_cast<uint16_t>(table_.size()); }

  // Capability bytes (id 0x11, next, control, table offset|BIR, PBA offset|BIR) and its writable mask.
  std::vector<uint8_t> capability(uint8_t table_bir, uint32_t table_off, uint8_t pba_bir, uint32_t pba_off) const;
  static std::vector<uint8_t> capability_writable();
  uint64_t table_bytes() const { return 16ull * table_.size(); }
  uint64_t pba_bytes() const { return ((table_.size() + 63) / 64) * 8; }

  // The guest wrote message control (enable/function-mask bits). Returns vectors whose pending bit was
  // cleared because they became deliverable: the owner must deliver them now.
  std::vector<uint16_t> set_control(uint16_t control);
  bool enabled() const;

  // Table/PBA accesses (offset inside the table/PBA region; 4- or 8-byte accesses, others are ignored/0).
  // table_write returns the vectors that became deliverable (unmasked while pending) and sets *changed
  // to the entry whose address/data changed (or -1).
  void table_read(uint64_t offset, std::span<uint8_t> data) const;
  std::vector<uint16_t> table_write(uint64_t offset, std::span<const uint8_t> data, int* changed);
  void pba_read(uint64_t offset, std::span<uint8_t> data) const;

  Entry entry(uint16_t v) const;
  // A device wants to signal vector v: true = deliver now (with entry(v)), false = masked, now pending
  // (or v out of range / MSI-X disabled: nothing).
  bool trigger(uint16_t v);
  bool pending(uint16_t v) const;
  void reset();  // control 0, every entry masked, no pending bits

  // Table and pending bits (pci_state.cpp); message control lives in config space and is restored from
  // there with set_control(). restore() checks the vector count and throws Error.
  nlohmann::json save() const;
  void restore(JsonReader& r);

 private:
  bool deliverable(uint16_t v) const;  // mu_ held
  mutable std::mutex mu_;
  uint16_t control_ = 0;
  std::vector<Entry> table_;
  std::vector<bool> pending_;
};

}  // namespace vireo::pci
