#include "pci/msix.h"

#include <cstring>

#include "common/error.h"

namespace vireo::pci {

Msix::Msix(uint16_t vectors) : table_(vectors), pending_(vectors) {
  if (vectors == 0 || vectors > 2048) fail("msi-x: {} vectors (1..2048 allowed)", vectors);
}

std::vector<uint8_t> Msix::capability(uint8_t table_bir, uint32_t table_off, uint8_t pba_bir, uint32_t pba_off) const {
  std::vector<uint8_t> c(12, 0);
  c[0] = 0x11;
  uint16_t ctrl = static_cast<uint16_t>(table_.size() - 1);
  std::memcpy(&c[2], &ctrl, 2);
  uint32_t t = (table_off & ~7u) | (table_bir & 7), p = (pba_off & ~7u) | (pba_bir & 7);
  std::memcpy(&c[4], &t, 4);
  std::memcpy(&c[8], &p, 4);
  return c;
}

std::vector<uint8_t> Msix::capability_writable() {
  std::vector<uint8_t> w(12, 0);
  w[3] = 0xc0;  // enable + function mask
  return w;
}

bool Msix::enabled() const {
  std::lock_guard lock(mu_);
  return control_ & kControlEnable;
}

bool Msix::deliverable(uint16_t v) const {
  return (control_ & kControlEnable) && !(control_ & kControlFunctionMask) && !table_[v].masked;
}

std::vector<uint16_t> Msix::set_control(uint16_t control) {
  std::lock_guard lock(mu_);
  control_ = control & (kControlEnable | kControlFunctionMask);
  std::vector<uint16_t> out;
  for (uint16_t v = 0; v < table_.size(); ++v) {
    if (pending_[v] && deliverable(v)) {
      pending_[v] = false;
      out.push_back(v);
    }
  }
  return out;
}

void Msix::table_read(uint64_t offset, std::span<uint8_t> data) const {
  std::lock_guard lock(mu_);
  std::memset(data.data(), 0, data.size());
  if ((data.size() != 4 && data.size() != 8) || offset % data.size() != 0 || offset + data.size() > table_bytes()) return;
  for (size_t done = 0; done < data.size(); done += 4) {
    uint64_t off = offset + done;
    const Entry& e = table_[off / 16];
    uint32_t v = 0;
    switch (off % 16) {
      case 0: v = static_cast<uint32_t>(e.address); break;
      case 4: v = static_cast<uint32_t>(e.address >> 32); break;
      case 8: v = e.data; break;
      case 12: v = e.masked ? 1 : 0; break;
    }
    std::memcpy(data.data() + done, &v, 4);
  }
}

std::vector<uint16_t> Msix::table_write(uint64_t offset, std::span<const uint8_t> data, int* changed) {
  std::lock_guard lock(mu_);
  *changed = -1;
  std::vector<uint16_t> out;
  if ((data.size() != 4 && data.size() != 8) || offset % data.size() != 0 || offset + data.size() > table_bytes())
    return out;
  for (size_t done = 0; done < data.size(); done += 4) {
    uint64_t off = offset + done;
    uint16_t idx = static_cast<uint16_t>(off / 16);
    Entry& e = table_[idx];
    uint32_t v;
    std::memcpy(&v, data.data() + done, 4);
    switch (off % 16) {
      case 0: e.address = (e.address & ~0xffffffffull) | v; *changed = idx; break;
      case 4: e.address = (e.address & 0xffffffffull) | static_cast<uint64_t>(v) << 32; *changed = idx; break;
      case 8: e.data = v; *changed = idx; break;
      case 12:
        e.masked = v & 1;
        if (pending_[idx] && deliverable(idx)) {
          pending_[idx] = false;
          out.push_back(idx);
        }
        break;
    }
  }
  return out;
}

void Msix::pba_read(uint64_t offset, std::span<uint8_t> data) const {
  std::lock_guard lock(mu_);
  std::memset(data.data(), 0, data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t byte = offset + i;
    uint8_t b = 0;
    for (int bitn = 0; bitn < 8; ++bitn) {
      uint64_t v = byte * 8 + bitn;
      if (v < pending_.size() && pending_[v]) b |= 1 << bitn;
    }
    data[i] = b;
  }
}

Msix::Entry Msix::entry(uint16_t v) const {
  std::lock_guard lock(mu_);
  return v < table_.size() ? table_[v] : Entry{};
}

bool Msix::trigger(uint16_t v) {
  std::lock_guard lock(mu_);
  if (v >= table_.size() || !(control_ & kControlEnable)) return false;
  if (deliverable(v)) return true;
  pending_[v] = true;
  return false;
}

bool Msix::pending(uint16_t v) const {
  std::lock_guard lock(mu_);
  return v < pending_.size() && pending_[v];
}

void Msix::reset() {
  std::lock_guard lock(mu_);
  control_ = 0;
  for (auto& e : table_) e = Entry{};
  pending_.assign(pending_.size(), false);
}

}  // namespace vireo::pci
