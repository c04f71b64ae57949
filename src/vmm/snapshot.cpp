// vireo/vmm: snapshot-save and --restore for the Machine (docs/vmm.md, "Snapshots"). The file format is
// snapshot_format.h; this file decides what goes in and in which order it comes back.
//
// Save (VM paused: vCPUs parked with their last I/O completed, devices quiesced with in-flight requests
// drained): config.json, memory, then state.bin, each temp + fsync + rename, then the folder is fsynced.
// Restore: guest RAM maps the memory file MAP_PRIVATE (pages come in on first touch: restore time does not
// grow with RAM), vCPUs are created with the same CPUID as at boot and get their KVM state, then the
// irqchip/PIT, the devices, and the clock last.
#include <fmt/format.h>

#include <chrono>
#include <iostream>

#include "common/error.h"
#include "common/file.h"
#include "cpu/cpu_model.h"
#include "vmm/commands.h"
#include "vmm/machine.h"
#include "vmm/snapshot_format.h"

namespace vireo::vmm {

using nlohmann::json;

namespace {

boot::KernelKind kernel_kind_from_name(const std::string& s, const std::string& what) {
  for (auto k : {boot::KernelKind::TestGuestElf64, boot::KernelKind::PvhElf, boot::KernelKind::LinuxBzImage})
    if (s == boot::kernel_kind_name(k)) return k;
  fail("{}: '{}' is not a kernel kind", what, s);
}

kvm::PvmMode pvm_mode_from_name(const std::string& s, const std::string& what) {
  for (auto m : {kvm::PvmMode::NotPvm, kvm::PvmMode::Emulated, kvm::PvmMode::Native})
    if (s == kvm::pvm_mode_name(m)) return m;
  fail("{}: '{}' is not a PVM mode", what, s);
}

}  // namespace

boot::KernelKind snapshot_kernel_kind(const json& state) {
  JsonReader r(state, "state");
  return kernel_kind_from_name(r.str("kernel_kind", 64), "state: kernel_kind");
}

kvm::VcpuStateLayout& Machine::vcpu_state_layout() {
  if (!state_layout_) state_layout_ = kvm::probe_vcpu_state(kvm_, *vm_, *vcpus_.at(0)->vcpu);
  return *state_layout_;
}

void Machine::save_snapshot(const std::string& dir) {
  {
    const RunState s = state();
    if (s == RunState::Running || s == RunState::ShuttingDown) pause("save");
  }
  std::lock_guard serial(lifecycle_mu_);
  {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Paused || exit_requested_)
      throw InvalidStateError(std::string("cannot save: VM is ") + run_state_name(state_));
  }
  snapshot::prepare_dir(dir);

  json body;
  body["memory"] = {{"size", mem_->size()}, {"file", snapshot::kMemoryFile}};
  body["kernel_kind"] = boot::kernel_kind_name(plan_.kind);
  body["long_mode_entry"] = plan_.long_mode_entry;
  body["pvm_mode"] = kvm::pvm_mode_name(pvm_mode_);
  json vcpus = json::array();
  auto& layout = vcpu_state_layout();
  for (auto& s : vcpus_) vcpus.push_back(snapshot::vcpu_to_json(kvm::save_vcpu(*s->vcpu, layout)));
  body["vcpus"] = std::move(vcpus);
  body["devices"] = dm_->save_state();
  // The clock last: it is what the guest saw when it stopped.
  body["vm"] = snapshot::vm_to_json(kvm::save_vm(*vm_));

  atomic_write_file(dir + "/" + snapshot::kConfigFile, config::to_json(cfg_).dump(2) + "\n");
  snapshot::write_memory(dir, mem_->memfd(), mem_->host_base(), mem_->size());
  // state.bin last: its presence is what makes the folder a snapshot.
  atomic_write_file(dir + "/" + snapshot::kStateFile, snapshot::encode_state(body), 0600);
  fsync_parent_dir(dir + "/" + snapshot::kStateFile);
}

void Machine::restore_snapshot(const RestoreSpec& spec) {
  JsonReader body(spec.state, "state");
  {
    JsonReader m = body.object("memory");
    const uint64_t size = m.u64("size");
    if (size != mem_->size()) fail("state: memory.size {} does not match config.json's {}", size, mem_->size());
    if (m.str("file", 64) != snapshot::kMemoryFile) fail("state: memory.file: expected '{}'", snapshot::kMemoryFile);
    m.finish();
  }
  body.skip("kernel_kind");  // read by snapshot_kernel_kind before the devices were created
  plan_.long_mode_entry = body.boolean("long_mode_entry");
  pvm_mode_ = pvm_mode_from_name(body.str("pvm_mode", 64), "state: pvm_mode");

  const json& saved = body.array("vcpus", config::kMaxVcpus);
  if (saved.size() != cfg_.cpus) fail("state: {} vCPUs saved, config.json has {}", saved.size(), cfg_.cpus);
  std::vector<kvm::VcpuState> states;
  for (size_t i = 0; i < saved.size(); ++i) {
    JsonReader r(saved[i], fmt::format("state: vcpus[{}]", i));
    states.push_back(snapshot::vcpu_from_json(r));
  }
  JsonReader vmr = body.object("vm");
  const kvm::VmState vm_state = snapshot::vm_from_json(vmr);

  // Same CPUID as the VM booted with (it is a function of the configuration), then the saved state.
  const auto supported = kvm_.supported_cpuid();
  for (uint32_t i = 0; i < cfg_.cpus; ++i) {
    auto slot = std::make_unique<VcpuSlot>();
    slot->vcpu = std::make_unique<kvm::Vcpu>(kvm_, *vm_, i);
    slot->vcpu->set_cpuid(cpu::build_cpuid(supported, cfg_.cpu, i, cfg_.cpus, cfg_.arch));  // i686: no LM again
    try {
      kvm::restore_vcpu(*slot->vcpu, states[i]);
    } catch (const Error& e) {
      fail("state: vCPU {}: {}", i, e.what());
    }
    vcpus_.push_back(std::move(slot));
  }
  kvm::restore_vm(*vm_, vm_state);
  dm_->restore_state(body.at("devices"));
  kvm::restore_clock(*vm_, vm_state);
  body.finish();

  std::lock_guard lock(mu_);
  reason_ = "restored";
  if (spec.paused) {
    state_ = RunState::Paused;
    prev_state_ = RunState::Running;
    dm_->pause_devices();
  }
}

void add_snapshot_commands(MachineCommands& cmds, Machine& m) {
  cmds.add_command("snapshot-save", [&m](const json& args) {
    if (!args.contains("path") || !args["path"].is_string() || args["path"].get<std::string>().empty())
      invalid_argument("snapshot-save: 'path' (a folder, absent or empty) is required");
    for (auto it = args.begin(); it != args.end(); ++it)
      if (it.key() != "path") invalid_argument("snapshot-save: unknown argument '" + it.key() + "'");
    const auto t0 = std::chrono::steady_clock::now();
    m.save_snapshot(args["path"].get<std::string>());
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    return CommandReply{{{"path", args["path"]}, {"time_us", us.count()}}};
  });
}

}  // namespace vireo::vmm
