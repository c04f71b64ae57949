// vireo/kvm: correct C++ layouts for the KVM structs that end in a flexible array.
//
// Debian 12's <linux/kvm.h> declares them with __DECLARE_FLEX_ARRAY, which in C++ inserts an empty struct
// (size 1): sizeof(kvm_cpuid2) becomes 12 instead of 8, the entries move, and the ioctl numbers that encode
// the struct size (KVM_GET_SUPPORTED_CPUID, KVM_SET_CPUID2, KVM_GET/SET_MSRS, KVM_SET_GSI_ROUTING, ...) are
// wrong, so the kernel answers EINVAL. Vireo uses these headers + numbers instead: a header of the C size,
// followed by the entries at exactly that offset.
#pragma once
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace vireo::kvm::abi {

struct CpuidHeader {  // struct kvm_cpuid2 without entries
  uint32_t nent, padding;
};
struct MsrsHeader {  // struct kvm_msrs
  uint32_t nmsrs, pad;
};
struct MsrListHeader {  // struct kvm_msr_list
  uint32_t nmsrs;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing
  uint32_t nr, flags;
};
struct XsaveRegion {  // struct kvm_xsave without the flexible `extra` (KVM_CAP_XSAVE2 sizes go beyond)
  uint32_t region[1024];
};
static_assert(sizeof(XsaveRegion) == 4096);
static_assert(sizeof(CpuidHeader) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4 &&
              sizeof(IrqRoutingHeader) == 8);

inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, CpuidHeader);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveRegion);

// A zeroed, 8-byte aligned buffer holding Header followed by n Entry items.
template <typename Header, typename Entry>
class FlexBuffer {
 public:
  explicit FlexBuffer(size_t n)
      : bytes_(sizeof(Header) + n * sizeof(Entry)), buf_(std::make_unique<uint64_t[]>((bytes_ + 7) / 8)) {
    std::memset(buf_.get(), 0, bytes_);
  }
  Header* header() { return reinterpret_cast<Header*>(buf_.get()); }
  Entry* entries() { return reinterpret_cast<Entry*>(reinterpret_cast<uint8_t*>(buf_.get()) + sizeof(Header)); }
  void* data() { return buf_.get(); }

 private:
  size_t bytes_;
  std::unique_ptr<uint64_t[]> buf_;
};

}  // namespace vireo::kvm::abi
