#include "kvm/kvm.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "kvm/abi.h"

namespace vireo::kvm {

namespace {

template <typename T>
int xioctl(int fd, unsigned long req, T arg) {
  int r;
  do {
    r = ::ioctl(fd, req, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// KvmSystem

KvmSystem::KvmSystem(const std::string& path) : path_(path) {
  fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd_) {
    const int err = errno;
    if (err == ENOENT) throw Error(path + " missing (is the kvm module loaded?)", err);
    if (err == EACCES || err == EPERM) throw Error(path + ": permission denied (add the user to group kvm)", err);
    throw_errno("open " + path, err);
  }
  const int v = ::ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
  if (v < 0) throw_errno(path + ": KVM_GET_API_VERSION");
  if (v != kRequiredApiVersion) fail("KVM API {} required, found {}", kRequiredApiVersion, v);
}

int KvmSystem::check_extension(long cap) const {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

uint32_t KvmSystem::max_vcpus() const {
  if (int n = check_extension(KVM_CAP_MAX_VCPUS); n > 0) return static_cast<uint32_t>(n);
  if (int n = check_extension(KVM_CAP_NR_VCPUS); n > 0) return static_cast<uint32_t>(n);
  return 4;
}

size_t KvmSystem::vcpu_mmap_size() const {
  const int r = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (r <= 0) throw_errno("KVM_GET_VCPU_MMAP_SIZE");
  return static_cast<size_t>(r);
}

std::vector<kvm_cpuid_entry2> KvmSystem::supported_cpuid() const {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    abi::FlexBuffer<abi::CpuidHeader, kvm_cpuid_entry2> b(n);
    b.header()->nent = n;
    if (::ioctl(fd_.get(), abi::kGetSupportedCpuid, b.data()) == 0)
      return std::vector<kvm_cpuid_entry2>(b.entries(), b.entries() + b.header()->nent);
    if (errno != E2BIG) throw_errno("KVM_GET_SUPPORTED_CPUID");
  }
  fail("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

std::vector<uint32_t> KvmSystem::msr_index_list() const {
  abi::FlexBuffer<abi::MsrListHeader, uint32_t> probe(0);
  if (::ioctl(fd_.get(), abi::kGetMsrIndexList, probe.data()) < 0 && errno != E2BIG)
    throw_errno("KVM_GET_MSR_INDEX_LIST");
  const uint32_t n = probe.header()->nmsrs;
  abi::FlexBuffer<abi::MsrListHeader, uint32_t> b(n);
  b.header()->nmsrs = n;
  if (::ioctl(fd_.get(), abi::kGetMsrIndexList, b.data()) < 0) throw_errno("KVM_GET_MSR_INDEX_LIST");
  return std::vector<uint32_t>(b.entries(), b.entries() + b.header()->nmsrs);
}

// ---------------------------------------------------------------------------------------------------------
// Vm

Vm::Vm(const KvmSystem& sys) : sys_(sys) {
  int fd;
  do {
    fd = ::ioctl(sys.fd(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno("KVM_CREATE_VM");
  fd_.reset(fd);
  if (int n = check_extension(KVM_CAP_IRQ_ROUTING); n > 0) {
    // KVM_CAP_IRQ_ROUTING reports the maximum number of GSI routes.
    max_gsi_ = static_cast<uint32_t>(n);
  }
}

int Vm::check_extension(long cap) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  if (r < 0) r = sys_.check_extension(cap);
  return r < 0 ? 0 : r;
}

void Vm::set_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (xioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) < 0)
    throw_errno(fmt::format("KVM_SET_USER_MEMORY_REGION slot {} at 0x{:x}+0x{:x}", slot, gpa, size));
}

void Vm::set_tss_and_identity_map(uint64_t tss_addr, uint64_t identity_map) {
  if (check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
    uint64_t a = identity_map;
    if (xioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &a) < 0) throw_errno("KVM_SET_IDENTITY_MAP_ADDR");
  }
  if (check_extension(KVM_CAP_SET_TSS_ADDR) > 0) {
    if (xioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(tss_addr)) < 0)
      throw_errno("KVM_SET_TSS_ADDR");
  }
}

void Vm::create_irqchip() {
  if (check_extension(KVM_CAP_IRQCHIP) <= 0) fail("KVM_CREATE_IRQCHIP: KVM lacks KVM_CAP_IRQCHIP");
  if (xioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) throw_errno("KVM_CREATE_IRQCHIP");
  irqchip_ = true;
}

void Vm::create_pit() {
  if (check_extension(KVM_CAP_PIT2) <= 0) fail("KVM_CREATE_PIT2: KVM lacks KVM_CAP_PIT2");
  kvm_pit_config cfg{};
  cfg.flags = KVM_PIT_SPEAKER_DUMMY;
  if (xioctl(fd_.get(), KVM_CREATE_PIT2, &cfg) < 0) throw_errno("KVM_CREATE_PIT2");
  pit_ = true;
}

void Vm::get_dirty_log(uint32_t slot, uint64_t pages, std::vector<uint64_t>& bitmap) {
  bitmap.assign((pages + 63) / 64, 0);
  kvm_dirty_log d{};
  d.slot = slot;
  d.dirty_bitmap = bitmap.data();
  if (xioctl(fd_.get(), KVM_GET_DIRTY_LOG, &d) < 0) throw_errno(fmt::format("KVM_GET_DIRTY_LOG slot {}", slot));
}

kvm_irqchip Vm::get_irqchip(uint32_t chip) const {
  kvm_irqchip c{};
  c.chip_id = chip;
  if (xioctl(fd_.get(), KVM_GET_IRQCHIP, &c) < 0) throw_errno(fmt::format("KVM_GET_IRQCHIP {}", chip));
  return c;
}
void Vm::set_irqchip(const kvm_irqchip& c) {
  kvm_irqchip copy = c;
  if (xioctl(fd_.get(), KVM_SET_IRQCHIP, &copy) < 0) throw_errno(fmt::format("KVM_SET_IRQCHIP {}", c.chip_id));
}
kvm_pit_state2 Vm::get_pit() const {
  kvm_pit_state2 p{};
  if (xioctl(fd_.get(), KVM_GET_PIT2, &p) < 0) throw_errno("KVM_GET_PIT2");
  return p;
}
void Vm::set_pit(const kvm_pit_state2& p) {
  kvm_pit_state2 copy = p;
  if (xioctl(fd_.get(), KVM_SET_PIT2, &copy) < 0) throw_errno("KVM_SET_PIT2");
}
kvm_clock_data Vm::get_clock() const {
  kvm_clock_data c{};
  if (xioctl(fd_.get(), KVM_GET_CLOCK, &c) < 0) throw_errno("KVM_GET_CLOCK");
  return c;
}
void Vm::set_clock(const kvm_clock_data& c) {
  // Only the clock value is restored; flags such as KVM_CLOCK_REALTIME would ask KVM to advance it by the
  // host time that passed, which a restored guest must not see.
  kvm_clock_data copy{};
  copy.clock = c.clock;
  if (xioctl(fd_.get(), KVM_SET_CLOCK, &copy) < 0) throw_errno("KVM_SET_CLOCK");
}

void Vm::set_irq_line(uint32_t gsi, bool level) {
  kvm_irq_level l{};
  l.irq = gsi;
  l.level = level ? 1 : 0;
  if (xioctl(fd_.get(), KVM_IRQ_LINE, &l) < 0) throw_errno(fmt::format("KVM_IRQ_LINE {}", gsi));
}

void Vm::add_irqfd(uint32_t gsi, int fd, int resample_fd) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(fd);
  f.gsi = gsi;
  if (resample_fd >= 0) {
    f.flags = KVM_IRQFD_FLAG_RESAMPLE;
    f.resamplefd = static_cast<uint32_t>(resample_fd);
  }
  if (xioctl(fd_.get(), KVM_IRQFD, &f) < 0) throw_errno(fmt::format("KVM_IRQFD gsi {}", gsi));
}

void Vm::remove_irqfd(uint32_t gsi, int fd) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(fd);
  f.gsi = gsi;
  f.flags = KVM_IRQFD_FLAG_DEASSIGN;
  if (xioctl(fd_.get(), KVM_IRQFD, &f) < 0) throw_errno(fmt::format("KVM_IRQFD deassign gsi {}", gsi));
}

namespace {
kvm_ioeventfd make_ioeventfd(IoSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) {
  kvm_ioeventfd e{};
  e.addr = addr;
  e.len = len;
  e.fd = fd;
  if (space == IoSpace::Pio) e.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    e.datamatch = *datamatch;
  }
  return e;
}
}  // namespace

void Vm::add_ioeventfd(IoSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) {
  if (space == IoSpace::Pio && (len == 0 || len > 4)) fail("KVM_IOEVENTFD: PIO length {} (need 1, 2 or 4)", len);
  if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8) fail("KVM_IOEVENTFD: length {} (need 0, 1, 2, 4 or 8)", len);
  if (len == 0 && datamatch) fail("KVM_IOEVENTFD: datamatch needs a length");
  auto e = make_ioeventfd(space, addr, len, datamatch, fd);
  if (xioctl(fd_.get(), KVM_IOEVENTFD, &e) < 0)
    throw_errno(fmt::format("KVM_IOEVENTFD {} 0x{:x}+{}", space == IoSpace::Pio ? "pio" : "mmio", addr, len));
}

void Vm::remove_ioeventfd(IoSpace space, uint64_t addr, uint32_t len, std::optional<uint64_t> datamatch, int fd) {
  auto e = make_ioeventfd(space, addr, len, datamatch, fd);
  e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (xioctl(fd_.get(), KVM_IOEVENTFD, &e) < 0)
    throw_errno(fmt::format("KVM_IOEVENTFD deassign 0x{:x}+{}", addr, len));
}

void Vm::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) {
  if (gsi < 24) fail("GSI routing: GSI {} belongs to the irqchip", gsi);
  if (gsi >= max_gsi_) fail("GSI routing: GSI {} beyond KVM's {} routes", gsi, max_gsi_);
  std::lock_guard lock(mu_);
  kvm_irq_routing_entry e{};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_MSI;
  e.u.msi.address_lo = static_cast<uint32_t>(address);
  e.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
  e.u.msi.data = data;
  msi_routes_[gsi] = e;
  commit_routes();
}

void Vm::remove_route(uint32_t gsi) {
  std::lock_guard lock(mu_);
  if (msi_routes_.erase(gsi)) commit_routes();
}

void Vm::commit_routes() {
  std::vector<kvm_irq_routing_entry> entries;
  if (irqchip_) {
    // KVM's default table: GSI 0-15 go to the PIC (master 0-7, slave 8-15) and the IOAPIC pin of the same
    // number; 16-23 to the IOAPIC only. KVM_SET_GSI_ROUTING replaces everything, so restate it.
    for (uint32_t i = 0; i < 24; ++i) {
      if (i < 16) {
        kvm_irq_routing_entry p{};
        p.gsi = i;
        p.type = KVM_IRQ_ROUTING_IRQCHIP;
        p.u.irqchip.irqchip = i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
        p.u.irqchip.pin = i % 8;
        entries.push_back(p);
      }
      kvm_irq_routing_entry a{};
      a.gsi = i;
      a.type = KVM_IRQ_ROUTING_IRQCHIP;
      a.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
      a.u.irqchip.pin = i;
      entries.push_back(a);
    }
  }
  for (auto& [gsi, e] : msi_routes_) entries.push_back(e);
  abi::FlexBuffer<abi::IrqRoutingHeader, kvm_irq_routing_entry> b(entries.size());
  b.header()->nr = static_cast<uint32_t>(entries.size());
  if (!entries.empty()) std::memcpy(b.entries(), entries.data(), entries.size() * sizeof(kvm_irq_routing_entry));
  if (xioctl(fd_.get(), abi::kSetGsiRouting, b.data()) < 0) throw_errno("KVM_SET_GSI_ROUTING");
}

void Vm::signal_msi(uint64_t address, uint32_t data) {
  kvm_msi m{};
  m.address_lo = static_cast<uint32_t>(address);
  m.address_hi = static_cast<uint32_t>(address >> 32);
  m.data = data;
  if (xioctl(fd_.get(), KVM_SIGNAL_MSI, &m) < 0) throw_errno("KVM_SIGNAL_MSI");
}

// ---------------------------------------------------------------------------------------------------------
// Vcpu

Vcpu::Vcpu(const KvmSystem& sys, Vm& vm, uint32_t id) : id_(id) {
  int fd;
  do {
    fd = ::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno(fmt::format("KVM_CREATE_VCPU {}", id));
  fd_.reset(fd);
  run_size_ = sys.vcpu_mmap_size();
  void* p = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED) throw_errno(fmt::format("vCPU {}: mmap kvm_run", id));
  run_ = static_cast<kvm_run*>(p);
}

Vcpu::~Vcpu() {
  if (run_) ::munmap(run_, run_size_);
}

bool Vcpu::run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) == 0) return true;
  if (errno == EINTR || errno == EAGAIN) return false;
  throw_errno(fmt::format("vCPU {}: KVM_RUN", id_));
}

kvm_regs Vcpu::get_regs() const {
  kvm_regs r{};
  if (xioctl(fd_.get(), KVM_GET_REGS, &r) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_REGS", id_));
  return r;
}
void Vcpu::set_regs(const kvm_regs& r) {
  if (xioctl(fd_.get(), KVM_SET_REGS, &r) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_REGS", id_));
}
kvm_sregs Vcpu::get_sregs() const {
  kvm_sregs s{};
  if (xioctl(fd_.get(), KVM_GET_SREGS, &s) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_SREGS", id_));
  return s;
}
void Vcpu::set_sregs(const kvm_sregs& s) {
  if (xioctl(fd_.get(), KVM_SET_SREGS, &s) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_SREGS", id_));
}
kvm_fpu Vcpu::get_fpu() const {
  kvm_fpu f{};
  if (xioctl(fd_.get(), KVM_GET_FPU, &f) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_FPU", id_));
  return f;
}
void Vcpu::set_fpu(const kvm_fpu& f) {
  if (xioctl(fd_.get(), KVM_SET_FPU, &f) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_FPU", id_));
}

void Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  abi::FlexBuffer<abi::CpuidHeader, kvm_cpuid_entry2> b(entries.size());
  b.header()->nent = static_cast<uint32_t>(entries.size());
  if (!entries.empty()) std::memcpy(b.entries(), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  if (xioctl(fd_.get(), abi::kSetCpuid2, b.data()) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_CPUID2", id_));
}

std::vector<kvm_cpuid_entry2> Vcpu::get_cpuid() const {
  // KVM_GET_CPUID2 does not report how many entries it copied (nent is written back on neither path in 6.1),
  // so mark every slot (padding[0], which KVM's entries have zero) and count the ones KVM overwrote.
  constexpr uint32_t kMax = 256;  // KVM_MAX_CPUID_ENTRIES
  constexpr uint32_t kMark = 0xfeedf00d;
  abi::FlexBuffer<abi::CpuidHeader, kvm_cpuid_entry2> b(kMax);
  b.header()->nent = kMax;
  for (uint32_t i = 0; i < kMax; ++i) b.entries()[i].padding[0] = kMark;
  if (xioctl(fd_.get(), abi::kGetCpuid2, b.data()) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_CPUID2", id_));
  uint32_t n = 0;
  while (n < kMax && b.entries()[n].padding[0] != kMark) ++n;
  return std::vector<kvm_cpuid_entry2>(b.entries(), b.entries() + n);
}

std::optional<uint64_t> Vcpu::get_msr(uint32_t index) const {
  abi::FlexBuffer<abi::MsrsHeader, kvm_msr_entry> b(1);
  b.header()->nmsrs = 1;
  b.entries()[0].index = index;
  const int r = xioctl(fd_.get(), abi::kGetMsrs, b.data());
  if (r < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_MSRS 0x{:x}", id_, index));
  if (r != 1) return std::nullopt;
  return b.entries()[0].data;
}

void Vcpu::set_msrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs) {
  if (msrs.empty()) return;
  abi::FlexBuffer<abi::MsrsHeader, kvm_msr_entry> b(msrs.size());
  b.header()->nmsrs = static_cast<uint32_t>(msrs.size());
  for (size_t i = 0; i < msrs.size(); ++i) {
    b.entries()[i].index = msrs[i].first;
    b.entries()[i].data = msrs[i].second;
  }
  const int r = xioctl(fd_.get(), abi::kSetMsrs, b.data());
  if (r < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_MSRS", id_));
  if (static_cast<size_t>(r) != msrs.size())
    fail("vCPU {}: KVM_SET_MSRS: KVM refused MSR 0x{:x}", id_, msrs[static_cast<size_t>(r)].first);
}

kvm_mp_state Vcpu::get_mp_state() const {
  kvm_mp_state s{};
  if (xioctl(fd_.get(), KVM_GET_MP_STATE, &s) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_MP_STATE", id_));
  return s;
}
void Vcpu::set_mp_state(uint32_t state) {
  kvm_mp_state s{};
  s.mp_state = state;
  if (xioctl(fd_.get(), KVM_SET_MP_STATE, &s) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_MP_STATE", id_));
}
kvm_lapic_state Vcpu::get_lapic() const {
  kvm_lapic_state s{};
  if (xioctl(fd_.get(), KVM_GET_LAPIC, &s) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_LAPIC", id_));
  return s;
}
void Vcpu::set_lapic(const kvm_lapic_state& s) {
  if (xioctl(fd_.get(), KVM_SET_LAPIC, &s) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_LAPIC", id_));
}

std::vector<uint8_t> Vcpu::get_xsave(size_t size) const {
  if (size < sizeof(abi::XsaveRegion)) size = sizeof(abi::XsaveRegion);
  std::vector<uint8_t> buf((size + 7) & ~size_t{7}, 0);
  const unsigned long req = size > sizeof(abi::XsaveRegion) ? abi::kGetXsave2 : abi::kGetXsave;
  if (xioctl(fd_.get(), req, buf.data()) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_XSAVE", id_));
  buf.resize(size);
  return buf;
}
void Vcpu::set_xsave(const std::vector<uint8_t>& area) {
  if (area.size() < sizeof(abi::XsaveRegion)) fail("vCPU {}: KVM_SET_XSAVE: {} bytes, need 4096", id_, area.size());
  std::vector<uint8_t> buf((area.size() + 7) & ~size_t{7}, 0);
  std::memcpy(buf.data(), area.data(), area.size());
  if (xioctl(fd_.get(), abi::kSetXsave, buf.data()) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_XSAVE", id_));
}
kvm_xcrs Vcpu::get_xcrs() const {
  kvm_xcrs x{};
  if (xioctl(fd_.get(), KVM_GET_XCRS, &x) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_XCRS", id_));
  return x;
}
void Vcpu::set_xcrs(const kvm_xcrs& x) {
  kvm_xcrs copy = x;
  if (xioctl(fd_.get(), KVM_SET_XCRS, &copy) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_XCRS", id_));
}
kvm_vcpu_events Vcpu::get_vcpu_events() const {
  kvm_vcpu_events e{};
  if (xioctl(fd_.get(), KVM_GET_VCPU_EVENTS, &e) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_VCPU_EVENTS", id_));
  return e;
}
void Vcpu::set_vcpu_events(const kvm_vcpu_events& e) {
  kvm_vcpu_events copy = e;
  if (xioctl(fd_.get(), KVM_SET_VCPU_EVENTS, &copy) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_VCPU_EVENTS", id_));
}
kvm_debugregs Vcpu::get_debugregs() const {
  kvm_debugregs d{};
  if (xioctl(fd_.get(), KVM_GET_DEBUGREGS, &d) < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_DEBUGREGS", id_));
  return d;
}
void Vcpu::set_debugregs(const kvm_debugregs& d) {
  kvm_debugregs copy = d;
  if (xioctl(fd_.get(), KVM_SET_DEBUGREGS, &copy) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_DEBUGREGS", id_));
}
void Vcpu::set_mp_state(const kvm_mp_state& s) {
  kvm_mp_state copy = s;
  if (xioctl(fd_.get(), KVM_SET_MP_STATE, &copy) < 0) throw_errno(fmt::format("vCPU {}: KVM_SET_MP_STATE", id_));
}
size_t Vcpu::get_msrs(std::vector<kvm_msr_entry>& entries) const {
  if (entries.empty()) return 0;
  abi::FlexBuffer<abi::MsrsHeader, kvm_msr_entry> b(entries.size());
  b.header()->nmsrs = static_cast<uint32_t>(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) b.entries()[i].index = entries[i].index;
  const int r = xioctl(fd_.get(), abi::kGetMsrs, b.data());
  if (r < 0) throw_errno(fmt::format("vCPU {}: KVM_GET_MSRS", id_));
  for (size_t i = 0; i < static_cast<size_t>(r); ++i) entries[i].data = b.entries()[i].data;
  return static_cast<size_t>(r);
}
uint32_t Vcpu::tsc_khz() const {
  const int r = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  return r > 0 ? static_cast<uint32_t>(r) : 0;
}

// ---------------------------------------------------------------------------------------------------------

const char* exit_reason_name(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_IO: return "KVM_EXIT_IO";
    case KVM_EXIT_HYPERCALL: return "KVM_EXIT_HYPERCALL";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "KVM_EXIT_IRQ_WINDOW_OPEN";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTR: return "KVM_EXIT_INTR";
    case KVM_EXIT_SET_TPR: return "KVM_EXIT_SET_TPR";
    case KVM_EXIT_TPR_ACCESS: return "KVM_EXIT_TPR_ACCESS";
    case KVM_EXIT_NMI: return "KVM_EXIT_NMI";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    case KVM_EXIT_IOAPIC_EOI: return "KVM_EXIT_IOAPIC_EOI";
    default: return "KVM_EXIT_(other)";
  }
}

namespace {
std::string seg(const char* name, const kvm_segment& s) {
  return fmt::format("{:<3} sel={:04x} base={:016x} limit={:08x} type={:x} dpl={} p={} l={} db={} g={}\n", name,
                     s.selector, s.base, s.limit, s.type, s.dpl, s.present, s.l, s.db, s.g);
}
}  // namespace

std::string format_registers(const kvm_regs& r, const kvm_sregs& s) {
  std::string out;
  out += fmt::format("RIP={:016x} RFLAGS={:016x} RSP={:016x} RBP={:016x}\n", r.rip, r.rflags, r.rsp, r.rbp);
  out += fmt::format("RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\n", r.rax, r.rbx, r.rcx, r.rdx);
  out += fmt::format("RSI={:016x} RDI={:016x} R8 ={:016x} R9 ={:016x}\n", r.rsi, r.rdi, r.r8, r.r9);
  out += fmt::format("R10={:016x} R11={:016x} R12={:016x} R13={:016x}\n", r.r10, r.r11, r.r12, r.r13);
  out += fmt::format("R14={:016x} R15={:016x}\n", r.r14, r.r15);
  out += fmt::format("CR0={:016x} CR2={:016x} CR3={:016x} CR4={:016x} EFER={:016x}\n", s.cr0, s.cr2, s.cr3, s.cr4,
                     s.efer);
  out += seg("CS", s.cs) + seg("SS", s.ss) + seg("DS", s.ds) + seg("ES", s.es) + seg("FS", s.fs) + seg("GS", s.gs) +
         seg("TR", s.tr);
  out += fmt::format("GDT base={:016x} limit={:04x}  IDT base={:016x} limit={:04x}", s.gdt.base, s.gdt.limit,
                     s.idt.base, s.idt.limit);
  return out;
}

}  // namespace vireo::kvm
