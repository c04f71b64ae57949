// vireo/kvm: RAII wrappers for the KVM system (/dev/kvm), VM and vCPU file descriptors.
//
// KvmSystem opens /dev/kvm and checks the API version; Vm owns a VM fd (memory slots, in-kernel irqchip + PIT,
// IRQ lines, irqfd, ioeventfd, GSI routing incl. MSI routes); Vcpu owns a vCPU fd and its mapped kvm_run.
// Every failure throws vireo::Error with a one-line message naming the operation ("KVM_CREATE_VM: ...").
// The PVM host quirk lives in kvm/pvm.h, nowhere else.
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"

namespace vireo::kvm {

inline constexpr int kRequiredApiVersion = 12;

class KvmSystem {
 public:
  // Opens `path` (default /dev/kvm). Errors: "/dev/kvm missing (is the kvm module loaded?)",
  // "/dev/kvm: permission denied (add the user to group kvm)", "KVM API 12 required, found N".
  explicit KvmSystem(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION on /dev/kvm; 0 when unsupported.
  int check_extension(long cap) const;
  // KVM_CAP_MAX_VCPUS (falls back to KVM_CAP_NR_VCPUS, then 4 as the API doc says).
  uint32_t max_vcpus() const;
  size_t vcpu_mmap_size() const;
  // KVM_GET_SUPPORTED_CPUID (grows the buffer on E2BIG).
  std::vector<kvm_cpuid_entry2> supported_cpuid() const;
  // KVM_GET_MSR_INDEX_LIST.
  std::vector<uint32_t> msr_index_list() const;

 private:
  std::string path_;
  UniqueFd fd_;
};

class Vm;

// One vCPU: its fd and the shared kvm_run page. Thread-compatible: ioctls are issued from the vCPU's own
// thread while it runs; kick() (immediate_exit) may be called from any thread.
class Vcpu {
 public:
  Vcpu(const KvmSystem& sys, Vm& vm, uint32_t id);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  kvm_run* run_struct() const { return run_; }

  // KVM_RUN. Returns false when interrupted (EINTR/EAGAIN, e.g. by a kick), true when an exit is ready in
  // run_struct(). Throws on other errors.
  bool run();
  void set_immediate_exit(bool on) { __atomic_store_n(&run_->immediate_exit, on ? 1 : 0, __ATOMIC_SEQ_CST); }

  kvm_regs get_regs() const;
  void set_regs(const kvm_regs& r);
  kvm_sregs get_sregs() const;
  void set_sregs(const kvm_sregs& s);
  kvm_fpu get_fpu() const;
  void set_fpu(const kvm_fpu& f);
  void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  std::vector<kvm_cpuid_entry2> get_cpuid() const;
  // KVM_GET_MSRS for one MSR: nullopt when KVM does not know it (the ioctl processes 0 entries).
  std::optional<uint64_t> get_msr(uint32_t index) const;
  // KVM_SET_MSRS; throws naming the first MSR KVM refused.
  void set_msrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs);
  kvm_mp_state get_mp_state() const;
  void set_mp_state(uint32_t state);
  kvm_lapic_state get_lapic() const;
  void set_lapic(const kvm_lapic_state& s);

  // ---- state for save/restore and migration (kvm/state.h puts them together)
  // KVM_GET_XSAVE2 (KVM_CAP_XSAVE2 bytes) or KVM_GET_XSAVE (4096); empty when KVM has no XSAVE support.
  std::vector<uint8_t> get_xsave(size_t size) const;
  void set_xsave(const std::vector<uint8_t>& area);
  kvm_xcrs get_xcrs() const;
  void set_xcrs(const kvm_xcrs& x);
  kvm_vcpu_events get_vcpu_events() const;
  void set_vcpu_events(const kvm_vcpu_events& e);
  kvm_debugregs get_debugregs() const;
  void set_debugregs(const kvm_debugregs& d);
  void set_mp_state(const kvm_mp_state& s);
  // KVM_GET_MSRS of many MSRs; returns how many (from the front) KVM processed.
  size_t get_msrs(std::vector<kvm_msr_entry>& entries) const;
  // KVM_GET_TSC_KHZ (0 if unsupported).
  uint32_t tsc_khz() const;

 private:
  uint32_t id_;
  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
};

enum class IoSpace { Pio, Mmio };

class Vm {
 public:
  explicit Vm(const KvmSystem& sys);
  int fd() const { return fd_.get(); }
  const KvmSystem& system() const { return sys_; }
  int check_extension(long cap) const;  // KVM_CHECK_EXTENSION on the VM fd (falls back to /dev/kvm)

  // KVM_SET_USER_MEMORY_REGION (flags: KVM_MEM_LOG_DIRTY_PAGES to track writes).
  void set_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags = 0);
  // KVM_GET_DIRTY_LOG: one bit per 4 KiB page of the slot (`pages` of them), set for pages the guest wrote
  // since the last call; KVM clears the log and write-protects those pages again.
  void get_dirty_log(uint32_t slot, uint64_t pages, std::vector<uint64_t>& bitmap);

  // ---- VM-wide state (in-kernel irqchip, PIT, kvmclock)
  kvm_irqchip get_irqchip(uint32_t chip) const;  // KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC
  void set_irqchip(const kvm_irqchip& c);
  bool has_pit() const { return pit_; }
  kvm_pit_state2 get_pit() const;
  void set_pit(const kvm_pit_state2& p);
  kvm_clock_data get_clock() const;
  void set_clock(const kvm_clock_data& c);
  // KVM_SET_TSS_ADDR (3 pages) and KVM_SET_IDENTITY_MAP_ADDR (1 page), both just below 4 GiB (Intel needs
  // them; harmless elsewhere). Must run before vCPUs are created.
  void set_tss_and_identity_map(uint64_t tss_addr = 0xfffb'd000, uint64_t identity_map = 0xfffb'c000);
  // KVM_CREATE_IRQCHIP (PIC + IOAPIC + LAPICs) and KVM_CREATE_PIT2; installs the default GSI routes
  // (GSI 0-15 -> PIC + IOAPIC pins, 16-23 -> IOAPIC), which the MSI routing below extends.
  void create_irqchip();
  void create_pit();
  bool has_irqchip() const { return irqchip_; }

  // KVM_IRQ_LINE: sets the level of an IOAPIC/PIC input.
  void set_irq_line(uint32_t gsi, bool level);
  // KVM_IRQFD: writing `fd` (an eventfd) injects `gsi`. resample_fd >= 0 makes it a level-triggered irqfd.
  void add_irqfd(uint32_t gsi, int fd, int resample_fd = -1);
  void remove_irqfd(uint32_t gsi, int fd);
  // KVM_IOEVENTFD: KVM signals `fd` on a guest write of `len` bytes (0 = any length, MMIO only) at `addr`,
  // optionally only when the value equals datamatch.
  void add_ioeventfd(IoSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd);
  void remove_ioeventfd(IoSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd);

  // GSI routing (KVM_SET_GSI_ROUTING, the whole table each time). GSIs 0-23 are the irqchip's pins; MSI
  // routes use 24..max_gsi()-1, handed out by the VMM's resource allocator (src/vmm/resources.h).
  uint32_t max_gsi() const { return max_gsi_; }
  void set_msi_route(uint32_t gsi, uint64_t address, uint32_t data);
  void remove_route(uint32_t gsi);
  // KVM_SIGNAL_MSI: one-shot MSI.
  void signal_msi(uint64_t address, uint32_t data);

 private:
  void commit_routes();  // with mu_ held

  const KvmSystem& sys_;
  UniqueFd fd_;
  bool irqchip_ = false;
  bool pit_ = false;
  std::mutex mu_;
  uint32_t max_gsi_ = 1024;
  std::map<uint32_t, kvm_irq_routing_entry> msi_routes_;  // gsi -> MSI entry
};

// Human-readable name of a KVM_EXIT_* reason ("KVM_EXIT_SHUTDOWN").
const char* exit_reason_name(uint32_t reason);

// Multi-line register dump (GPRs, RIP/RFLAGS, segments, control registers, EFER) for crash reports.
std::string format_registers(const kvm_regs& r, const kvm_sregs& s);

}  // namespace vireo::kvm
