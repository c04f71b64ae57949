// QMP-like balloon commands: `balloon {"value": <bytes the guest should keep>}` and `query-balloon` (the
// guest's current size, the virtio statistics it last reported, and bytes returned to the host).
#include <iterator>

#include "virtio/balloon.h"
#include "vmm/commands.h"
#include "vmm/machine.h"

namespace vireo::vmm {

using nlohmann::json;

void add_balloon_commands(MachineCommands& cmds, Machine& m) {
  virtio::BalloonDevice* b = m.devices().balloon();
  if (!b) return;
  const uint64_t ram_bytes = m.config().memory.size;
  constexpr uint64_t kPage = 4096;
  cmds.add_command("balloon", [b, ram_bytes](const json& args) {
    if (!args.contains("value") || !args["value"].is_number_unsigned())
      invalid_argument("balloon: 'value' (bytes, unsigned) is required");
    const uint64_t value = args["value"].get<uint64_t>();
    if (value == 0 || value > ram_bytes) invalid_argument(fmt::format("balloon: value must be in 1..{} bytes", ram_bytes));
    b->set_target_pages(static_cast<uint32_t>((ram_bytes - value) / kPage));
    return CommandReply{};
  });
  cmds.add_command("query-balloon", [b, ram_bytes](const json&) {
    static const char* names[] = {"stat-swap-in",      "stat-swap-out",         "stat-major-faults",
                                  "stat-minor-faults", "stat-free-memory",      "stat-total-memory",
                                  "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc",
                                  "stat-htlb-pgfail"};
    json stats = json::object();
    for (const auto& [tag, val] : b->stats())
      stats[tag < std::size(names) ? names[tag] : fmt::format("stat-tag-{}", tag)] = val;
    b->request_stats();
    return CommandReply{{{"actual", ram_bytes - uint64_t{b->actual_pages()} * kPage},
                         {"discarded_bytes", b->discarded_bytes()},
                         {"stats", stats}}};
  });
}

}  // namespace vireo::vmm
