#include "vmm/machine.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "common/error.h"
#include "cpu/cpu_model.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/rtc.h"

namespace vireo::vmm {

namespace {

constexpr int kKickSignal = SIGUSR1;

void kick_handler(int) {}

// MSR numbers set on every vCPU before it first runs.
constexpr uint32_t kMsrSysenterCs = 0x174, kMsrSysenterEsp = 0x175, kMsrSysenterEip = 0x176,
                   kMsrMiscEnable = 0x1a0, kMsrMtrrDefType = 0x2ff, kMsrStar = 0xc0000081,
                   kMsrLstar = 0xc0000082, kMsrCstar = 0xc0000083, kMsrSyscallMask = 0xc0000084,
                   kMsrKernelGsBase = 0xc0000102;

// Local APIC register offsets and delivery modes for LINT0/LINT1 (virtual-wire mode, as firmware leaves it).
constexpr size_t kApicLvtLint0 = 0x350, kApicLvtLint1 = 0x360;
constexpr uint32_t kApicDmExtInt = 0x700, kApicDmNmi = 0x400;

uint32_t apic_get(const kvm_lapic_state& s, size_t off) {
  uint32_t v;
  std::memcpy(&v, s.regs + off, 4);
  return v;
}
void apic_set(kvm_lapic_state& s, size_t off, uint32_t v) { std::memcpy(s.regs + off, &v, 4); }

}  // namespace

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

void setup_process_signals() {
  struct sigaction sa {};
  sa.sa_handler = kick_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
  sigaction(kKickSignal, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Machine::Machine(const VmmOptions& opts, kvm::KvmSystem& kvm, DeviceWiring wire_devices)
    : opts_(opts), kvm_(kvm), cmdline_(opts.cmdline) {
  const uint32_t max = kvm_.max_vcpus();
  if (opts_.cpus > max) fail("--cpus {}: KVM allows at most {} vCPUs", opts_.cpus, max);
  if (opts_.cpus > 255) fail("--cpus {}: at most 255 vCPUs are supported (xAPIC ids)", opts_.cpus);

  MemoryConfig mc = opts_.memory;
  mc.name = "vireo-ram-" + opts_.name.substr(0, 200);  // memfd names are limited to 249 bytes
  mem_ = std::make_unique<GuestMemory>(mc);

  vm_ = std::make_unique<kvm::Vm>(kvm_);
  vm_->set_tss_and_identity_map();
  vm_->create_irqchip();
  try {
    vm_->create_pit();
  } catch (const Error& e) {
    // Test guests and Linux (LAPIC timer, kvm-clock) run without an i8254; say so and carry on.
    std::cerr << "vireo-vmm: warning: " << e.what() << " (no i8254 PIT)" << std::endl;
  }
  uint32_t slot = 0;
  for (const auto& r : mem_->regions()) vm_->set_memory_region(slot++, r.gpa, r.size, r.host);

  if (!opts_.boot_log.empty()) {
    boot_log_fd_.reset(::open(opts_.boot_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!boot_log_fd_) throw_errno("--boot-log " + opts_.boot_log);
  }
  setup_devices();
  if (wire_devices) wire_devices(*this);
  load_and_setup_vcpus();
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
}

void Machine::boot_log(const std::string& line) {
  std::lock_guard lock(log_mu_);
  const std::string l = line + "\n";
  const int fd = boot_log_fd_ ? boot_log_fd_.get() : STDERR_FILENO;
  [[maybe_unused]] ssize_t n = ::write(fd, l.data(), l.size());
}

void Machine::setup_devices() {
  // COM1
  serial_backend_ = SerialBackend::open(opts_.serial);
  serial_ = std::make_shared<Serial16550>(
      "serial0", [this](bool level) { vm_->set_irq_line(Serial16550::kCom1Irq, level); },
      [this](std::span<const uint8_t> b) { serial_backend_->write(b); });
  pio_.insert(Serial16550::kCom1Base, 8, serial_);
  register_device({"serial", "serial0", fmt::format("io 0x3f8 irq 4 {}", serial_backend_->describe())});
  if (opts_.serial.kind == SerialSpec::Kind::Pty)
    std::cerr << "vireo-vmm: serial0: " << serial_backend_->describe().substr(4) << std::endl;

  pio_.insert(I8042::kDataPort, 5, std::make_shared<I8042>([this] {
                request_exit(kExitReset, "guest reset (i8042)", RunState::Shutoff);
              }));
  register_device({"i8042", "i8042", "io 0x60,0x64 (reset only)"});

  pio_.insert(CmosRtc::kBase, 2, std::make_shared<CmosRtc>());
  register_device({"rtc", "rtc", "io 0x70-0x71"});

  pio_.insert(DebugExit::kPort, 1, std::make_shared<DebugExit>([this](uint8_t code) {
                request_exit(code, fmt::format("debug-exit {}", code), RunState::Shutoff);
              }));
  register_device({"debug-exit", "debug-exit", "io 0x501"});

  marker_ = std::make_shared<BootMarker>(micros_since_process_start, [this](const std::string& l) { boot_log(l); });
  pio_.insert(BootMarker::kPort, 4, marker_);
  std::string marker_details = "io 0x502 (32-bit)";
  // Test guests also use port 0x80 (Cloud Hypervisor's debug port, one byte). Linux uses 0x80 for I/O
  // delays, so only test guests get it.
  if (boot::probe_kernel(opts_.kernel) == boot::KernelKind::TestGuestElf64) {
    pio_.insert(0x80, 1, marker_);
    marker_details += ", io 0x80 (8-bit)";
  }
  register_device({"boot-marker", "boot-marker", marker_details});
}

void Machine::load_and_setup_vcpus() {
  boot::BootConfig bc;
  bc.kernel_path = opts_.kernel;
  bc.initrd_path = opts_.initrd;
  bc.cmdline = cmdline_;
  bc.cpus = opts_.cpus;
  plan_ = boot::load(*mem_, bc);
  if (plan_.vcpus.size() != opts_.cpus)
    fail("boot: plan has {} vCPUs, {} requested", plan_.vcpus.size(), opts_.cpus);
  const auto supported = kvm_.supported_cpuid();
  if (auto w = cpu::unavailable_warning(supported, opts_.cpu); !w.empty()) std::cerr << "vireo-vmm: " << w << std::endl;
  for (uint32_t i = 0; i < opts_.cpus; ++i) setup_vcpu(i, supported);
}

void Machine::setup_vcpu(uint32_t index, const std::vector<kvm_cpuid_entry2>& supported) {
  auto slot = std::make_unique<VcpuSlot>();
  slot->vcpu = std::make_unique<kvm::Vcpu>(kvm_, *vm_, index);
  kvm::Vcpu& v = *slot->vcpu;
  const boot::VcpuInit& init = plan_.vcpus[index];

  v.set_cpuid(cpu::build_cpuid(supported, opts_.cpu, index, opts_.cpus));

  // Architectural reset values for the syscall MSRs (KVM's defaults already, stated explicitly), fast strings
  // on, MTRRs enabled with a write-back default (what firmware leaves). Each is best effort: a KVM that
  // refuses one (PVM virtualises some of them itself) keeps its own value.
  const std::pair<uint32_t, uint64_t> msrs[] = {
      {kMsrSysenterCs, 0}, {kMsrSysenterEsp, 0}, {kMsrSysenterEip, 0}, {kMsrStar, 0},
      {kMsrLstar, 0},      {kMsrCstar, 0},       {kMsrSyscallMask, 0}, {kMsrKernelGsBase, 0},
      {kMsrMiscEnable, 1}, {kMsrMtrrDefType, (1u << 11) | 6}};
  for (const auto& m : msrs) {
    try {
      v.set_msrs({m});
    } catch (const Error&) {
    }
  }

  kvm_sregs s = v.get_sregs();
  const boot::SpecialRegs& b = init.sregs;
  s.cs = b.cs, s.ds = b.ds, s.es = b.es, s.fs = b.fs, s.gs = b.gs, s.ss = b.ss, s.tr = b.tr, s.ldt = b.ldt;
  s.gdt = b.gdt, s.idt = b.idt;
  s.cr0 = b.cr0, s.cr3 = b.cr3, s.cr4 = b.cr4, s.efer = b.efer;
  if (init.runnable) v.set_sregs(s);
  if (init.runnable) v.set_regs(init.regs);

  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  v.set_fpu(fpu);

  kvm_lapic_state lapic = v.get_lapic();
  apic_set(lapic, kApicLvtLint0, (apic_get(lapic, kApicLvtLint0) & ~0x700u) | kApicDmExtInt);
  apic_set(lapic, kApicLvtLint1, (apic_get(lapic, kApicLvtLint1) & ~0x700u) | kApicDmNmi);
  v.set_lapic(lapic);

  // With the in-kernel irqchip KVM creates APs waiting for INIT/SIPI; the plan says which must run at once.
  v.set_mp_state(init.runnable ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED);

  const kvm::PvmMode m = kvm::apply_pvm_quirk(v, plan_.long_mode_entry && init.runnable, opts_.native);
  if (index == 0) {
    pvm_mode_ = m;
    if (auto note = kvm::pvm_emulation_note(m, plan_.long_mode_entry); !note.empty())
      std::cerr << "vireo-vmm: " << note << std::endl;
  }
  vcpus_.push_back(std::move(slot));
}

// ---------------------------------------------------------------------------------------------------------
// Running

void Machine::kick_all() {
  // mu_ held
  for (auto& s : vcpus_) {
    s->vcpu->set_immediate_exit(true);
    if (s->started.load()) pthread_kill(s->tid.load(), kKickSignal);
  }
}

void Machine::crash(uint32_t index, kvm::Vcpu& vcpu, const std::string& what) {
  std::string regs;
  try {
    regs = kvm::format_registers(vcpu.get_regs(), vcpu.get_sregs());
  } catch (const Error& e) {
    regs = std::string("(registers unavailable: ") + e.what() + ")";
  }
  std::cerr << fmt::format("vireo-vmm: guest crashed: vCPU {}: {}\n{}\n", index, what, regs) << std::flush;
  request_exit(kExitCrash, fmt::format("crashed: vCPU {}: {}", index, what), RunState::Crashed);
}

bool Machine::handle_exit(uint32_t index, kvm::Vcpu& vcpu) {
  kvm_run* run = vcpu.run_struct();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* base = reinterpret_cast<uint8_t*>(run);
      const uint32_t size = run->io.size;
      for (uint32_t i = 0; i < run->io.count; ++i) {
        uint8_t* p = base + run->io.data_offset + static_cast<size_t>(i) * size;
        if (run->io.direction == KVM_EXIT_IO_OUT)
          pio_.write(run->io.port, std::span<const uint8_t>(p, size));
        else
          pio_.read(run->io.port, std::span<uint8_t>(p, size));
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof run->mmio.data);
      if (run->mmio.is_write)
        mmio_.write(run->mmio.phys_addr, std::span<const uint8_t>(run->mmio.data, len));
      else
        mmio_.read(run->mmio.phys_addr, std::span<uint8_t>(run->mmio.data, len));
      return true;
    }
    case KVM_EXIT_HLT: {
      // Only without an in-kernel irqchip (then nothing can wake the vCPU but a kick): wait for one.
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(10), [&] { return exit_requested_ || pause_requested_; });
      return true;
    }
    case KVM_EXIT_IRQ_WINDOW_OPEN:
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_SHUTDOWN:
      crash(index, vcpu, "triple fault (KVM_EXIT_SHUTDOWN)");
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      crash(index, vcpu,
            fmt::format("KVM_EXIT_FAIL_ENTRY (hardware entry failure reason 0x{:x})",
                        static_cast<uint64_t>(run->fail_entry.hardware_entry_failure_reason)));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string data;
      for (uint32_t i = 0; i < run->internal.ndata && i < 16; ++i)
        data += fmt::format(" 0x{:x}", static_cast<uint64_t>(run->internal.data[i]));
      const char* sub = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (emulation failure)" : "";
      crash(index, vcpu, fmt::format("KVM_EXIT_INTERNAL_ERROR suberror {}{}{}{}", run->internal.suberror, sub,
                                     data.empty() ? "" : " data:", data));
      return false;
    }
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
          request_exit(kExitOk, "guest powered off", RunState::Shutoff);
          return false;
        case KVM_SYSTEM_EVENT_RESET:
          request_exit(kExitReset, "guest reset", RunState::Shutoff);
          return false;
        default:
          crash(index, vcpu, fmt::format("KVM_EXIT_SYSTEM_EVENT type {}", run->system_event.type));
          return false;
      }
    default:
      crash(index, vcpu, fmt::format("unexpected exit {} ({})", run->exit_reason, kvm::exit_reason_name(run->exit_reason)));
      return false;
  }
}

void Machine::vcpu_loop(uint32_t index) {
  VcpuSlot& slot = *vcpus_[index];
  kvm::Vcpu& vcpu = *slot.vcpu;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  {
    std::lock_guard lock(mu_);
    slot.tid.store(pthread_self());
    slot.started.store(true);
  }
  for (;;) {
    {
      std::unique_lock lk(mu_);
      if (exit_requested_) break;
      if (pause_requested_) {
        ++paused_vcpus_;
        cv_.notify_all();
        cv_.wait(lk, [&] { return !pause_requested_ || exit_requested_; });
        --paused_vcpus_;
        continue;
      }
    }
    bool exited;
    try {
      exited = vcpu.run();
    } catch (const Error& e) {
      crash(index, vcpu, e.what());
      break;
    }
    if (!exited) {
      vcpu.set_immediate_exit(false);
      continue;
    }
    bool go_on;
    try {
      go_on = handle_exit(index, vcpu);
    } catch (const std::exception& e) {
      // A device failed on guest input: that must not take the host down; report it as a crash of the VM.
      crash(index, vcpu, std::string("device error: ") + e.what());
      go_on = false;
    }
    if (!go_on) break;
  }
  std::lock_guard lock(mu_);
  slot.started.store(false);
  --live_vcpus_;
  cv_.notify_all();
}

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

bool Machine::pause() {
  std::unique_lock lk(mu_);
  if (exit_requested_ || (state_ != RunState::Running && state_ != RunState::ShuttingDown)) return false;
  pause_requested_ = true;
  kick_all();
  // vCPUs leave KVM_RUN within microseconds of the kick; a vCPU blocked in a device for longer than this
  // still counts as paused once it returns (it checks the flag before re-entering the guest).
  cv_.wait_for(lk, std::chrono::seconds(5), [&] { return paused_vcpus_ >= live_vcpus_ || exit_requested_; });
  prev_state_ = state_;
  state_ = RunState::Paused;
  reason_ = "user";
  return true;
}

bool Machine::resume() {
  {
    std::lock_guard lock(mu_);
    if (state_ != RunState::Paused || exit_requested_) return false;
    pause_requested_ = false;
    state_ = prev_state_;
    reason_ = state_ == RunState::ShuttingDown ? "shutdown" : "unpaused";
  }
  cv_.notify_all();
  return true;
}

void Machine::request_shutdown() {
  std::function<void()> hook;
  {
    std::lock_guard lock(mu_);
    if (exit_requested_) return;
    if (state_ == RunState::Paused) prev_state_ = RunState::ShuttingDown;
    else state_ = RunState::ShuttingDown;
    reason_ = "shutdown";
    hook = shutdown_hook;
  }
  // ACPI hook: until an ACPI device sets shutdown_hook, the request is only recorded (the guest cannot see it).
  if (hook) hook();
}

RunState Machine::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::string Machine::state_reason() const {
  std::lock_guard lock(mu_);
  return reason_;
}

std::vector<DeviceInfo> Machine::devices() const {
  std::lock_guard lock(mu_);
  return devices_;
}

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
  serial_backend_->attach(loop_, *serial_);
  loop_.start();

  {
    std::lock_guard lock(mu_);
    live_vcpus_ = static_cast<uint32_t>(vcpus_.size());
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
  std::lock_guard lock(mu_);
  return exit_code_;
}

// ---------------------------------------------------------------------------------------------------------
// VmHooks

namespace {
kvm::IoSpace io_space(AddressSpace s) { return s == AddressSpace::Pio ? kvm::IoSpace::Pio : kvm::IoSpace::Mmio; }
}  // namespace

void Machine::add_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) {
  vm_->add_ioeventfd(io_space(space), addr, len, datamatch, fd);
}
void Machine::remove_ioeventfd(AddressSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch,
                               int fd) {
  vm_->remove_ioeventfd(io_space(space), addr, len, datamatch, fd);
}

uint32_t Machine::allocate_irq_line() {
  static constexpr uint32_t kFree[] = {5, 6, 7, 10, 11,  // 9 is the ACPI SCI
                                      16, 17, 18, 19, 20, 21, 22, 23};
  std::lock_guard lock(mu_);
  for (uint32_t l : kFree) {
    if (l >= next_irq_line_) {
      next_irq_line_ = l + 1;
      return l;
    }
  }
  fail("irq: no free interrupt line left");
}

void Machine::set_irq_line(uint32_t line, bool level) { vm_->set_irq_line(line, level); }
void Machine::add_irqfd(uint32_t gsi, int fd) { vm_->add_irqfd(gsi, fd); }
void Machine::remove_irqfd(uint32_t gsi, int fd) { vm_->remove_irqfd(gsi, fd); }
uint32_t Machine::allocate_msi_gsi() { return vm_->allocate_gsi(); }
void Machine::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) { vm_->set_msi_route(gsi, address, data); }
void Machine::signal_msi(uint64_t address, uint32_t data) { vm_->signal_msi(address, data); }

void Machine::register_device(const DeviceInfo& info) {
  std::lock_guard lock(mu_);
  devices_.push_back(info);
}

void Machine::append_cmdline(const std::string& text) {
  if (!plan_.vcpus.empty()) fail("append_cmdline: the kernel is already loaded");
  if (!cmdline_.empty() && !text.empty()) cmdline_ += ' ';
  cmdline_ += text;
}

}  // namespace vireo::vmm
