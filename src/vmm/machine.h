// vireo/vmm: one virtual machine: the KVM VM, guest RAM, the DeviceManager (every device, the buses, the
// resource allocator), the vCPU threads, and the run state the control socket reports. Built from one
// config::VmConfig.
//
// Threads: one per vCPU (KVM_RUN loop + exit dispatch, vcpu.cpp), one EventLoop ("vmm-io") for the control
// socket, serial input and signals; the caller's thread waits in run() for the VM to end.
// Kick: a vCPU is interrupted by setting kvm_run.immediate_exit and sending it SIGUSR1 (handler does nothing),
// so KVM_RUN returns EINTR whether the signal lands inside or just before it.
//
// Pause parks every vCPU (an error if one does not park in time) and then quiesces every device; while
// paused nothing writes guest RAM. Lifecycle operations (pause, resume, save) are serialized.
#pragma once
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "boot/boot.h"
#include "common/error.h"
#include "common/event_loop.h"
#include "config/vm_config.h"
#include "kvm/kvm.h"
#include "kvm/pvm.h"
#include "kvm/state.h"
#include "memory/guest_memory.h"
#include "vmm/device_manager.h"

namespace vireo::vmm {

enum class RunState { Running, Paused, ShuttingDown, Shutoff, Crashed };
const char* run_state_name(RunState s);  // "running", "paused", "shutting-down", "shutoff", "crashed"

// Exit codes (docs/vmm.md).
inline constexpr int kExitOk = 0, kExitStartup = 1, kExitReset = 2, kExitCrash = 3;

// The request does not fit the VM's state ("cannot pause: VM is paused"); the control socket answers
// InvalidState. Other Errors of lifecycle operations are Internal.
class InvalidStateError : public Error {
 public:
  using Error::Error;
};

class MachineCommands;
class ControlServer;

// What --restore DIR hands the Machine: the snapshot folder and its decoded state.bin body
// (snapshot_format.h); the configuration (config.json plus host overrides) is the Machine's cfg.
struct RestoreSpec {
  std::string dir;
  nlohmann::json state;
  bool paused = false;  // --paused: the vCPUs and devices stay parked until `resume`
};

class Machine {
 public:
  // Builds the VM from `cfg` (validated here again) and loads the kernel; does not start vCPUs. `kvm` must
  // outlive the machine. Throws Error on any failure, with everything created so far torn down.
  // With `restore`, guest RAM maps the snapshot's memory file (MAP_PRIVATE, lazily) and the vCPUs, the VM's
  // KVM state and every device come from the snapshot instead of the kernel (snapshot.cpp).
  Machine(const config::VmConfig& cfg, kvm::KvmSystem& kvm, const RestoreSpec* restore = nullptr);
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  // Serves the control socket (cfg.api_socket), starts the I/O loop and the vCPU threads, waits until the
  // VM ends, stops everything; returns the exit code (docs/vmm.md).
  int run();

  // ---- control (thread-safe; called from the control socket's loop thread or device callbacks)
  void request_exit(int code, const std::string& reason, RunState final_state);
  // Parks every vCPU, then quiesces every device. Throws InvalidStateError unless running (or shutting
  // down), Error if a vCPU did not park within 5 s (the VM then keeps running).
  void pause(const std::string& reason = "user");
  void resume();  // throws InvalidStateError unless paused
  void request_shutdown();  // ACPI power button; the guest decides
  // snapshot-save (snapshot.cpp): pauses the VM if it runs, writes the snapshot folder `dir` (absent or
  // empty; docs/vmm.md "Snapshots"), and leaves the VM paused. Throws InvalidStateError/Error.
  void save_snapshot(const std::string& dir);
  RunState state() const;
  std::string state_reason() const;

  const config::VmConfig& config() const { return cfg_; }
  DeviceManager& devices() { return *dm_; }
  GuestMemory& memory() { return *mem_; }
  EventLoop& io_loop() { return loop_; }
  kvm::PvmMode pvm_mode() const { return pvm_mode_; }
  const boot::BootPlan& boot_plan() const { return plan_; }
  // The control socket's command set (extension point: MachineCommands::add_command). Valid after
  // construction; served by run() when cfg.api_socket is set.
  MachineCommands& commands() { return *commands_; }

 private:
  struct VcpuSlot {
    std::unique_ptr<kvm::Vcpu> vcpu;
    std::thread thread;
    std::atomic<pthread_t> tid{};
    std::atomic<bool> started{false};
    bool parked = false;  // mu_: waiting because of a pause
    bool flushed = false;  // mu_: the pending I/O of its last exit has been completed (see vcpu_loop)
  };

  // vcpu.cpp
  void load_and_setup_vcpus();
  void setup_vcpu(uint32_t index, const std::vector<kvm_cpuid_entry2>& supported);
  void vcpu_loop(uint32_t index);
  bool handle_exit(uint32_t index, kvm::Vcpu& vcpu);  // false: stop this vCPU
  void crash(uint32_t index, kvm::Vcpu& vcpu, const std::string& what);
  void kick_all();  // mu_ held

  void boot_log(const std::string& line);
  // snapshot.cpp: vCPUs, KVM VM state and device state from a snapshot, instead of load_and_setup_vcpus.
  void restore_snapshot(const RestoreSpec& spec);
  kvm::VcpuStateLayout& vcpu_state_layout();  // probed once, on first save

  config::VmConfig cfg_;
  kvm::KvmSystem& kvm_;
  // Destruction order matters (reverse of declaration): the vCPUs and the loop stop first (destructor body),
  // then the devices go while KVM's VM fd and guest RAM still exist.
  std::unique_ptr<kvm::Vm> vm_;
  std::unique_ptr<GuestMemory> mem_;
  UniqueFd boot_log_fd_;
  std::mutex log_mu_;
  std::unique_ptr<DeviceManager> dm_;
  EventLoop loop_{"vmm-io"};
  std::unique_ptr<MachineCommands> commands_;
  boot::BootPlan plan_{};
  kvm::PvmMode pvm_mode_ = kvm::PvmMode::NotPvm;
  std::optional<kvm::VcpuStateLayout> state_layout_;

  std::vector<std::unique_ptr<VcpuSlot>> vcpus_;

  std::mutex lifecycle_mu_;  // one pause/resume/save at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;
  RunState state_ = RunState::Running;
  RunState prev_state_ = RunState::Running;  // state to return to on resume
  std::string reason_ = "booted";
  bool exit_requested_ = false;
  int exit_code_ = 0;
  bool pause_requested_ = false;
  uint32_t paused_vcpus_ = 0;  // vCPU threads parked because of a pause
  uint32_t live_vcpus_ = 0;    // vCPU threads still in their loop
  std::vector<UniqueFd> signal_fds_;
};

// Blocks the signals vireo-vmm handles on its own threads (SIGTERM/SIGINT/SIGHUP via signalfd, SIGUSR1 for
// kicks) and ignores SIGPIPE. Call in main() before any thread exists.
void setup_process_signals();

// The kernel kind recorded in a snapshot's state (decides the test-guest-only port 0x80). Throws Error.
boot::KernelKind snapshot_kernel_kind(const nlohmann::json& state);

}  // namespace vireo::vmm
