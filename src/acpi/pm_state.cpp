// vireo/acpi: the PM device's saved state (version 1), separate from the register logic in pm.cpp.
#include <nlohmann/json.hpp>

#include "acpi/pm.h"
#include "common/error.h"

namespace vireo::acpi {

nlohmann::json AcpiPm::save_state() {
  std::lock_guard lock(mu_);
  return {{"status", status_}, {"enable", enable_}, {"control", control_}, {"timer_ns", hooks_.clock_ns() - start_ns_}};
}

void AcpiPm::restore_state(JsonReader& r, uint32_t) {
  const uint16_t status = r.uint<uint16_t>("status"), enable = r.uint<uint16_t>("enable"),
                 control = r.uint<uint16_t>("control");
  const uint64_t elapsed = r.u64("timer_ns");
  std::lock_guard lock(mu_);
  const uint64_t now = hooks_.clock_ns();
  if (elapsed > now) fail("{}: {} ns is later than this host's clock allows", r.key_path("timer_ns"), elapsed);
  status_ = status, enable_ = enable, control_ = control;
  start_ns_ = now - elapsed;
  update_sci();
}

}  // namespace vireo::acpi
