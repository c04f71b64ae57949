// vireo/virtio: device-specific snapshot state (the VirtioDevice hooks save_device/restore_device/
// held_chains) of virtio-net and virtio-balloon. blk, console and rng have none beyond the common state:
// their requests are drained by pause() (console input not yet delivered stays in the host's backend).
#include <fmt/format.h>

#include "common/error.h"
#include "virtio/balloon.h"
#include "virtio/net.h"

namespace vireo::virtio {

using nlohmann::json;
using namespace net_bits;
using namespace balloon_bits;

// ---------------------------------------------------------------- net

uint16_t NetDevice::held_chains(uint16_t q) const {
  if (q % 2 != 0 || q / 2 >= pairs_) return 0;
  return static_cast<uint16_t>(held_[q / 2].size());
}

json NetDevice::save_device() { return {{"active_pairs", active_pairs_}, {"guest_offloads", guest_offloads_}}; }

void NetDevice::restore_device(JsonReader& r) {
  const uint16_t n = r.uint<uint16_t>("active_pairs");
  const uint64_t g = r.u64("guest_offloads");
  if (n == 0 || n > pairs_) fail("{}: {} active pairs, the device has {}", r.key_path("active_pairs"), n, pairs_);
  const uint64_t offload_bits = bit(kFGuestCsum) | bit(kFGuestTso4) | bit(kFGuestTso6) | bit(kFGuestEcn);
  if (g & ~offload_bits) fail("{}: 0x{:x} is not a set of guest offloads", r.key_path("guest_offloads"), g);
  set_active_pairs(n);
  apply_guest_offloads(g);
}

// ---------------------------------------------------------------- balloon

uint16_t BalloonDevice::held_chains(uint16_t q) const { return role(q) == Role::Stats && stats_chain_ ? 1 : 0; }

json BalloonDevice::save_device() {
  json stats = json::array();
  for (const auto& [tag, value] : stats_) stats.push_back(json::array({tag, value}));
  return {{"stats", stats}, {"discarded", discarded_}};
}

void BalloonDevice::restore_device(JsonReader& r) {
  const json& stats = r.array("stats", 64);
  std::map<uint16_t, uint64_t> m;
  for (size_t i = 0; i < stats.size(); ++i) {
    const json& e = stats[i];
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() || e[0].get<uint64_t>() > 0xffff ||
        !e[1].is_number_unsigned())
      fail("{}[{}]: expected [tag, value]", r.key_path("stats"), i);
    m[e[0].get<uint16_t>()] = e[1].get<uint64_t>();
  }
  const uint64_t discarded = r.u64("discarded");
  stats_ = std::move(m);
  discarded_ = discarded;
}

}  // namespace vireo::virtio
