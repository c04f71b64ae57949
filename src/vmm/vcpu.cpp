// vireo/vmm: the Machine's vCPUs: initial state from the boot plan, the KVM_RUN loop and exit dispatch.
#include <signal.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "acpi/tables.h"
#include "common/error.h"
#include "cpu/cpu_model.h"
#include "vmm/machine.h"

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

void Machine::load_and_setup_vcpus() {
  boot::BootConfig bc;
  bc.kernel_path = cfg_.boot.kernel;
  bc.initrd_path = cfg_.boot.initrd;
  bc.cmdline = cfg_.boot.cmdline;
  const std::string& extra = dm_->cmdline_additions();
  if (!extra.empty()) bc.cmdline += (bc.cmdline.empty() ? "" : " ") + extra;
  bc.cpus = cfg_.cpus;
  // The ACPI tables describe the devices just created: the PM block (defaults) and the PCI root, if any.
  if (acpi::PciRoot pci; dm_->acpi_pci_root(pci)) bc.acpi.pci = std::move(pci);
  bc.long_mode = cfg_.arch == cpu::Arch::X86_64;
  plan_ = boot::load(*mem_, bc);
  if (plan_.vcpus.size() != cfg_.cpus) fail("boot: plan has {} vCPUs, {} requested", plan_.vcpus.size(), cfg_.cpus);
  const auto supported = kvm_.supported_cpuid();
  if (auto w = cpu::unavailable_warning(supported, cfg_.cpu); !w.empty()) std::cerr << "vireo-vmm: " << w << std::endl;
  for (uint32_t i = 0; i < cfg_.cpus; ++i) setup_vcpu(i, supported);
}

void Machine::setup_vcpu(uint32_t index, const std::vector<kvm_cpuid_entry2>& supported) {
  auto slot = std::make_unique<VcpuSlot>();
  slot->vcpu = std::make_unique<kvm::Vcpu>(kvm_, *vm_, index);
  kvm::Vcpu& v = *slot->vcpu;
  const boot::VcpuInit& init = plan_.vcpus[index];

  v.set_cpuid(cpu::build_cpuid(supported, cfg_.cpu, index, cfg_.cpus, cfg_.arch));

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

  const kvm::PvmMode m = kvm::apply_pvm_quirk(v, plan_.long_mode_entry && init.runnable, cfg_.native);
  if (index == 0) {
    pvm_mode_ = m;
    if (auto note = kvm::pvm_emulation_note(m, plan_.long_mode_entry); !note.empty())
      std::cerr << "vireo-vmm: " << note << std::endl;
  }
  vcpus_.push_back(std::move(slot));
}

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
  Bus& pio = dm_->pio_bus();
  Bus& mmio = dm_->mmio_bus();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* base = reinterpret_cast<uint8_t*>(run);
      const uint32_t size = run->io.size;
      for (uint32_t i = 0; i < run->io.count; ++i) {
        uint8_t* p = base + run->io.data_offset + static_cast<size_t>(i) * size;
        if (run->io.direction == KVM_EXIT_IO_OUT)
          pio.write(run->io.port, std::span<const uint8_t>(p, size));
        else
          pio.read(run->io.port, std::span<uint8_t>(p, size));
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof run->mmio.data);
      if (run->mmio.is_write)
        mmio.write(run->mmio.phys_addr, std::span<const uint8_t>(run->mmio.data, len));
      else
        mmio.read(run->mmio.phys_addr, std::span<uint8_t>(run->mmio.data, len));
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
    bool flush = false;
    {
      std::unique_lock lk(mu_);
      if (exit_requested_) break;
      if (pause_requested_ && slot.flushed) {
        ++paused_vcpus_;
        slot.parked = true;
        cv_.notify_all();
        cv_.wait(lk, [&] { return !pause_requested_ || exit_requested_; });
        slot.parked = false;
        slot.flushed = false;
        --paused_vcpus_;
        continue;
      }
      flush = pause_requested_;
      if (!flush) slot.flushed = false;  // a pause that ended before this vCPU parked
    }
    // Before parking: KVM finishes the instruction of the last PIO/MMIO exit (an IN's data, the RIP advance
    // of an OUT) only at the next KVM_RUN. One KVM_RUN with immediate_exit completes it and returns EINTR
    // without entering the guest, so a snapshot taken while parked does not repeat or lose that access.
    if (flush) vcpu.set_immediate_exit(true);
    bool exited;
    try {
      exited = vcpu.run();
    } catch (const Error& e) {
      crash(index, vcpu, e.what());
      break;
    }
    if (!exited) {
      if (flush) {
        std::lock_guard lock(mu_);
        slot.flushed = true;
      } else {
        vcpu.set_immediate_exit(false);
      }
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

}  // namespace vireo::vmm
