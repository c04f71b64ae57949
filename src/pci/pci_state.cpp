// vireo/pci: saved state of PCI functions (config space, BARs), the host bridge's address latch and MSI-X
// tables. State files are untrusted: everything is checked before the function is touched.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "pci/msix.h"
#include "pci/pci.h"

namespace vireo::pci {

using nlohmann::json;

namespace {
constexpr size_t kSavedConfig = 256;  // the conventional header + capabilities; nothing of ours lives above
}

json PciFunction::save_config_state() {
  std::lock_guard lock(cfg_mu_);
  json bars = json::array();
  for (const auto& b : bars_) bars.push_back(b.addr);
  return {{"config", json::binary(std::vector<uint8_t>(cfg_.begin(), cfg_.begin() + kSavedConfig))}, {"bars", bars}};
}

void PciFunction::restore_config_state(JsonReader& r) {
  const auto& cfg = r.bytes("config", kSavedConfig);
  const json& bars = r.array("bars", 6);
  if (bars.size() != 6) fail("{}: {} BARs, expected 6", r.key_path("bars"), bars.size());
  std::array<uint64_t, 6> addr{};
  std::lock_guard lock(cfg_mu_);
  for (size_t i = 0; i < kSavedConfig; ++i) {
    // 0x06/0x07 (status) hold no saved state of ours; everything else read-only must be what we built.
    if (i == 0x06 || i == 0x07) continue;
    if ((cfg[i] & ~wmask_[i]) != (cfg_[i] & ~wmask_[i]))
      fail("{}: read-only byte 0x{:02x} is 0x{:02x}, this device has 0x{:02x} (a different device?)",
           r.key_path("config"), i, cfg[i], cfg_[i]);
  }
  for (size_t i = 0; i < 6; ++i) {
    if (!bars[i].is_number_unsigned()) fail("{}[{}]: expected an unsigned number", r.key_path("bars"), i);
    addr[i] = bars[i].get<uint64_t>();
    const Bar& b = bars_[i];
    const bool ok = b.size == 0 ? addr[i] == 0
                                : (addr[i] & (b.size - 1)) == 0 && (b.kind != BarKind::Io || addr[i] <= 0xffff) &&
                                      (b.kind == BarKind::Mem64 || addr[i] <= 0xffffffffull);
    if (!ok) fail("{}[{}]: 0x{:x} is not a valid address for this BAR", r.key_path("bars"), i, addr[i]);
  }
  for (size_t i = 0; i < kSavedConfig; ++i) cfg_[i] = static_cast<uint8_t>((cfg_[i] & ~wmask_[i]) | (cfg[i] & wmask_[i]));
  for (size_t i = 0; i < 6; ++i) bars_[i].addr = addr[i];
  command_ = cfg16(0x04);
  update_mappings();
}

json PciHostBridge::save_state() {
  std::lock_guard lock(mu_);
  return {{"config_address", config_address_}};
}

void PciHostBridge::restore_state(JsonReader& r, uint32_t) {
  const uint32_t a = r.uint<uint32_t>("config_address");
  std::lock_guard lock(mu_);
  config_address_ = a;
}

json Msix::save() const {
  std::lock_guard lock(mu_);
  json entries = json::array(), pending = json::array();
  for (size_t v = 0; v < table_.size(); ++v) {
    entries.push_back(json::array({table_[v].address, table_[v].data, table_[v].masked}));
    if (pending_[v]) pending.push_back(v);
  }
  return {{"entries", entries}, {"pending", pending}};
}

void Msix::restore(JsonReader& r) {
  const json& entries = r.array("entries", 2048);
  const json& pending = r.array("pending", 2048);
  if (entries.size() != table_.size())
    fail("{}: {} MSI-X vectors saved, this device has {}", r.key_path("entries"), entries.size(), table_.size());
  std::vector<Entry> table(table_.size());
  std::vector<bool> pend(table_.size());
  for (size_t v = 0; v < entries.size(); ++v) {
    const json& e = entries[v];
    if (!e.is_array() || e.size() != 3 || !e[0].is_number_unsigned() || !e[1].is_number_unsigned() ||
        e[1].get<uint64_t>() > 0xffffffffull || !e[2].is_boolean())
      fail("{}[{}]: expected [address, data, masked]", r.key_path("entries"), v);
    table[v] = Entry{e[0].get<uint64_t>(), e[1].get<uint32_t>(), e[2].get<bool>()};
  }
  for (size_t i = 0; i < pending.size(); ++i) {
    if (!pending[i].is_number_unsigned() || pending[i].get<uint64_t>() >= table_.size())
      fail("{}[{}]: not a vector of this device", r.key_path("pending"), i);
    pend[pending[i].get<size_t>()] = true;
  }
  std::lock_guard lock(mu_);
  table_ = std::move(table);
  pending_ = std::move(pend);
}

}  // namespace vireo::pci
