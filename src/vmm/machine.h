// vireo/vmm: one virtual machine: KVM VM + guest RAM + buses + legacy devices + vCPU threads, and the run
// state the control socket reports. Implements VmHooks, the interface devices (virtio, ...) wire through.
//
// Threads: one per vCPU (KVM_RUN loop + exit dispatch), one EventLoop ("vmm-io") for the control socket,
// serial input and signals; the caller's thread waits in run() for the VM to end.
// Kick: a vCPU is interrupted by setting kvm_run.immediate_exit and sending it SIGUSR1 (handler does nothing),
// so KVM_RUN returns EINTR whether the signal lands inside or just before it.
#pragma once
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "boot/boot.h"
#include "common/event_loop.h"
#include "devices/boot_marker.h"
#include "devices/bus.h"
#include "devices/serial.h"
#include "devices/serial_backend.h"
#include "devices/vm_hooks.h"
#include "kvm/kvm.h"
#include "kvm/pvm.h"
#include "memory/guest_memory.h"
#include "vmm/options.h"

namespace vireo::vmm {

enum class RunState { Running, Paused, ShuttingDown, Shutoff, Crashed };
const char* run_state_name(RunState s);  // "running", "paused", "shutting-down", "shutoff", "crashed"

// Exit codes (docs/vmm.md).
inline constexpr int kExitOk = 0, kExitStartup = 1, kExitReset = 2, kExitCrash = 3;

class Machine : public VmHooks {
 public:
  // Builds the VM (does not start vCPUs). `kvm` must outlive the machine. Throws Error on any failure.
  // `wire_devices` (optional) runs after RAM, irqchip and the legacy devices exist and before the kernel is
  // loaded: the place to create further devices (virtio) through the VmHooks interface, including
  // append_cmdline().
  using DeviceWiring = std::function<void(Machine&)>;
  Machine(const VmmOptions& opts, kvm::KvmSystem& kvm, DeviceWiring wire_devices = nullptr);
  ~Machine() override;

  // Starts the I/O loop and the vCPU threads, waits until the VM ends, stops everything; returns the exit
  // code (docs/vmm.md).
  int run();

  // ---- control (thread-safe; called from the control socket's loop thread or signal handlers) ----
  void request_exit(int code, const std::string& reason, RunState final_state);
  bool pause();   // false if not running
  bool resume();  // false if not paused
  void request_shutdown();  // records it; ACPI power button once shutdown_hook is set
  RunState state() const;
  std::string state_reason() const;
  const VmmOptions& options() const { return opts_; }
  std::vector<DeviceInfo> devices() const;
  EventLoop& io_loop() { return loop_; }
  kvm::PvmMode pvm_mode() const { return pvm_mode_; }
  const boot::BootPlan& boot_plan() const { return plan_; }
  // Set by a future ACPI device: pressing the power button. Until then shutdown is only recorded.
  std::function<void()> shutdown_hook;

  // ---- VmHooks ----
  Bus& pio_bus() override { return pio_; }
  Bus& mmio_bus() override { return mmio_; }
  GuestMemory& memory() override { return *mem_; }
  void add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) override;
  void remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) override;
  uint32_t allocate_irq_line() override;
  void set_irq_line(uint32_t line, bool level) override;
  void add_irqfd(uint32_t gsi, int fd) override;
  void remove_irqfd(uint32_t gsi, int fd) override;
  uint32_t allocate_msi_gsi() override;
  void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) override;
  void signal_msi(uint64_t address, uint32_t data) override;
  void register_device(const DeviceInfo& info) override;
  void append_cmdline(const std::string& text) override;

 private:
  struct VcpuSlot {
    std::unique_ptr<kvm::Vcpu> vcpu;
    std::thread thread;
    std::atomic<pthread_t> tid{};
    std::atomic<bool> started{false};
  };

  void setup_devices();
  void load_and_setup_vcpus();
  void setup_vcpu(uint32_t index, const std::vector<kvm_cpuid_entry2>& supported);
  void vcpu_loop(uint32_t index);
  bool handle_exit(uint32_t index, kvm::Vcpu& vcpu);  // false: stop this vCPU
  void crash(uint32_t index, kvm::Vcpu& vcpu, const std::string& what);
  void kick_all();
  void boot_log(const std::string& line);

  VmmOptions opts_;
  kvm::KvmSystem& kvm_;
  std::unique_ptr<kvm::Vm> vm_;
  std::unique_ptr<GuestMemory> mem_;
  Bus pio_{"pio"}, mmio_{"mmio"};
  EventLoop loop_{"vmm-io"};
  boot::BootPlan plan_{};
  std::string cmdline_;
  kvm::PvmMode pvm_mode_ = kvm::PvmMode::NotPvm;

  std::unique_ptr<SerialBackend> serial_backend_;
  std::shared_ptr<Serial16550> serial_;
  std::shared_ptr<BootMarker> marker_;
  UniqueFd boot_log_fd_;
  std::mutex log_mu_;

  std::vector<std::unique_ptr<VcpuSlot>> vcpus_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  RunState state_ = RunState::Running;
  RunState prev_state_ = RunState::Running;  // state to return to on resume
  std::string reason_ = "booted";
  bool exit_requested_ = false;
  int exit_code_ = 0;
  bool pause_requested_ = false;
  uint32_t paused_vcpus_ = 0;    // vCPU threads parked because of a pause
  uint32_t live_vcpus_ = 0;      // vCPU threads still in their loop
  uint32_t next_irq_line_ = 5;   // free ISA/IOAPIC lines for devices (4 is COM1)
  std::vector<DeviceInfo> devices_;
  std::vector<UniqueFd> signal_fds_;
};

// Blocks the signals vireo-vmm handles on its own threads (SIGTERM/SIGINT/SIGHUP via signalfd, SIGUSR1 for
// kicks) and ignores SIGPIPE. Call in main() before any thread exists.
void setup_process_signals();

}  // namespace vireo::vmm
