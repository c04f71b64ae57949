// vireo/devices: the lifecycle every device a VM owns implements, on top of its guest-facing interface
// (BusDevice registers, a PCI function, a virtio device). The DeviceManager (src/vmm/device_manager.h) calls
// these for all devices at once; the shapes follow Cloud Hypervisor's Pausable and Snapshottable.
//
// - pause()/resume(): after pause() returns the device does not write guest RAM, raise interrupts or run
//   work on its own threads (in-flight I/O is completed first), so a paused VM can be saved or migrated
//   consistently. vCPUs are already parked when pause() is called, so no guest access races with it.
// - save_state()/restore_state(): a versioned state. save_state() is called on a paused device;
//   restore_state() on a freshly created device of the same configuration, before any vCPU runs. State comes
//   from files and the network: restore_state() validates every value (JsonReader throws one-line Errors)
//   and never trusts sizes or indexes it reads.
// - stop(): called once before the device is destroyed, after the vCPUs have stopped: stop worker threads
//   and wait for them (the buses and guest memory still exist).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>

#include "common/json_reader.h"

namespace vireo {

class Device {
 public:
  virtual ~Device() = default;

  virtual void pause() {}
  virtual void resume() {}

  // 0 = the device has no state worth saving (save/restore are not called).
  virtual uint32_t state_version() const { return 0; }
  virtual nlohmann::json save_state() { return nlohmann::json::object(); }
  // `version` is the saved one: 1..state_version() (older versions are converted, newer ones refused by the
  // caller). Throws Error.
  virtual void restore_state(JsonReader& state, uint32_t version) {
    (void)state;
    (void)version;
  }

  virtual void stop() {}
};

}  // namespace vireo
