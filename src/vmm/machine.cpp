#include "vmm/machine.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "acpi/tables.h"
#include "common/error.h"
#include "common/layout.h"
#include "vmm/commands.h"
#include "vmm/control.h"

namespace vireo::vmm {

const char* run_state_name(RunState s) {
  switch (s) {
    case RunState::Running: return "running";
    case RunState::Paused: return "paused";
    case RunState::ShuttingDown: return "shutting-down";
    case RunState::Shutoff: return "shutoff";
    case RunState::Crashed: return "crashed";
  }
  return "?";
}

Machine::Machine(const config::VmConfig& cfg, kvm::KvmSystem& kvm, const RestoreSpec* restore)
    : cfg_(cfg), kvm_(kvm) {
  cfg_.validate();
  const uint32_t max = kvm_.max_vcpus();
  if (cfg_.cpus > max) fail("--cpus {}: KVM allows at most {} vCPUs", cfg_.cpus, max);

  MemoryConfig mc = cfg_.memory;
  mc.name = "vireo-ram-" + cfg_.name.substr(0, 200);  // memfd names are limited to 249 bytes
  if (restore) mc.private_file = restore->dir + "/memory";
  mem_ = std::make_unique<GuestMemory>(mc);

  vm_ = std::make_unique<kvm::Vm>(kvm_);
  vm_->set_tss_and_identity_map(layout::kKvmTss, layout::kKvmIdentityMap);
  vm_->create_irqchip();
  try {
    vm_->create_pit();
  } catch (const Error& e) {
    // Test guests and Linux (LAPIC timer, kvm-clock) run without an i8254; say so and carry on.
    std::cerr << "vireo-vmm: warning: " << e.what() << " (no i8254 PIT)" << std::endl;
  }
  uint32_t slot = 0;
  for (const auto& r : mem_->regions()) vm_->set_memory_region(slot++, r.gpa, r.size, r.host);

  if (!cfg_.boot_log.empty()) {
    boot_log_fd_.reset(::open(cfg_.boot_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!boot_log_fd_) throw_errno("--boot-log " + cfg_.boot_log);
  }

  MachineEvents ev;
  ev.exit = [this](int code, const std::string& reason) { request_exit(code, reason, RunState::Shutoff); };
  ev.boot_log = [this](const std::string& line) { boot_log(line); };
  dm_ = std::make_unique<DeviceManager>(*vm_, *mem_, std::move(ev));
  if (restore) {
    plan_.kind = snapshot_kernel_kind(restore->state);
    dm_->create_devices(cfg_, plan_.kind);
    restore_snapshot(*restore);
  } else {
    dm_->create_devices(cfg_, boot::probe_kernel(cfg_.boot.kernel, cfg_.arch == cpu::Arch::X86_64));
    load_and_setup_vcpus();
  }
  commands_ = std::make_unique<MachineCommands>(*this);
}

Machine::~Machine() {
  {
    std::lock_guard lock(mu_);
    exit_requested_ = true;
    kick_all();
  }
  cv_.notify_all();
  for (auto& s : vcpus_)
    if (s->thread.joinable()) s->thread.join();
  loop_.stop();
  loop_.join();
  commands_.reset();
  dm_.reset();  // devices stop while KVM and RAM still exist
}

void Machine::boot_log(const std::string& line) {
  std::lock_guard lock(log_mu_);
  const std::string l = line + "\n";
  const int fd = boot_log_fd_ ? boot_log_fd_.get() : STDERR_FILENO;
  [[maybe_unused]] ssize_t n = ::write(fd, l.data(), l.size());
}

// ---------------------------------------------------------------------------------------------------------
// Control

void Machine::request_exit(int code, const std::string& reason, RunState final_state) {
  {
    std::lock_guard lock(mu_);
    if (exit_requested_) return;
    exit_requested_ = true;
    exit_code_ = code;
    reason_ = reason;
    state_ = final_state;
    kick_all();
  }
  cv_.notify_all();
}

void Machine::pause(const std::string& reason) {
  std::lock_guard serial(lifecycle_mu_);
  {
    std::unique_lock lk(mu_);
    if (exit_requested_ || (state_ != RunState::Running && state_ != RunState::ShuttingDown))
      throw InvalidStateError(std::string("cannot pause: VM is ") + run_state_name(state_));
    pause_requested_ = true;
    kick_all();
    // vCPUs leave KVM_RUN within microseconds of the kick; one that is still inside a device access after
    // this long is stuck, and the pause is refused rather than reported as done.
    const bool parked = cv_.wait_for(lk, std::chrono::seconds(5),
                                     [&] { return paused_vcpus_ >= live_vcpus_ || exit_requested_; });
    if (exit_requested_) {
      pause_requested_ = false;
      throw InvalidStateError(std::string("cannot pause: VM is ") + run_state_name(state_));
    }
    if (!parked) {
      std::string stuck;
      for (size_t i = 0; i < vcpus_.size(); ++i)
        if (vcpus_[i]->started.load() && !vcpus_[i]->parked) stuck += (stuck.empty() ? "" : ", ") + std::to_string(i);
      pause_requested_ = false;
      lk.unlock();
      cv_.notify_all();
      fail("pause: vCPU {} did not stop within 5 s; the VM keeps running", stuck);
    }
  }
  // Every vCPU is parked: no guest access can race with the devices quiescing.
  dm_->pause_devices();
  std::lock_guard lock(mu_);
  prev_state_ = state_;
  state_ = RunState::Paused;
  reason_ = reason;
}

void Machine::resume() {
  std::lock_guard serial(lifecycle_mu_);
  {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Paused || exit_requested_)
      throw InvalidStateError(std::string("cannot resume: VM is ") + run_state_name(state_));
  }
  dm_->resume_devices();
  {
    std::lock_guard lock(mu_);
    pause_requested_ = false;
    state_ = prev_state_;
    reason_ = state_ == RunState::ShuttingDown ? "shutdown" : "unpaused";
  }
  cv_.notify_all();
}

void Machine::request_shutdown() {
  {
    std::lock_guard lock(mu_);
    if (exit_requested_) return;
    if (state_ == RunState::Paused) prev_state_ = RunState::ShuttingDown;
    else state_ = RunState::ShuttingDown;
    reason_ = "shutdown";
  }
  dm_->press_power_button();
}

RunState Machine::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::string Machine::state_reason() const {
  std::lock_guard lock(mu_);
  return reason_;
}

// ---------------------------------------------------------------------------------------------------------
// Running

int Machine::run() {
  // Signals: SIGTERM/SIGINT/SIGHUP end the VM cleanly (exit 0).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd) throw_errno("signalfd");
  const int sfd_raw = sfd.get();
  loop_.add(sfd_raw, EPOLLIN, [this, sfd_raw](uint32_t) {
    signalfd_siginfo si{};
    while (::read(sfd_raw, &si, sizeof si) == sizeof si) {
      request_exit(kExitOk, fmt::format("stopped by {}", sigabbrev_np(static_cast<int>(si.ssi_signo))),
                   RunState::Shutoff);
    }
  });
  signal_fds_.push_back(std::move(sfd));
  std::unique_ptr<ControlServer> control;
  if (!cfg_.api_socket.empty()) control = std::make_unique<ControlServer>(loop_, cfg_.api_socket, *commands_);
  dm_->attach_io(loop_);
  loop_.start();

  {
    std::lock_guard lock(mu_);
    live_vcpus_ = static_cast<uint32_t>(vcpus_.size());
    // A VM restored with --paused starts parked (its devices were paused by restore_snapshot).
    if (state_ == RunState::Paused) pause_requested_ = true;
  }
  for (uint32_t i = 0; i < vcpus_.size(); ++i) {
    vcpus_[i]->thread = std::thread([this, i] { vcpu_loop(i); });
    pthread_setname_np(vcpus_[i]->thread.native_handle(), fmt::format("vcpu{}", i).c_str());
  }
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return exit_requested_ || live_vcpus_ == 0; });
    if (!exit_requested_) {
      // Every vCPU stopped without asking for an exit (cannot normally happen): treat as a crash.
      exit_requested_ = true;
      exit_code_ = kExitCrash;
      state_ = RunState::Crashed;
      reason_ = "all vCPUs stopped";
    }
    kick_all();
  }
  cv_.notify_all();
  for (auto& s : vcpus_)
    if (s->thread.joinable()) s->thread.join();
  loop_.stop();
  loop_.join();
  control.reset();
  std::lock_guard lock(mu_);
  return exit_code_;
}

}  // namespace vireo::vmm
