// vireo/acpi: a small AML encoder (ACPI 6.x chapter 20, "ACPI Machine Language Specification") and resource
// descriptor builder (chapter 6.4), enough for the DSDT vireo-vmm gives its guests: names, integers, strings,
// EISA ids, packages, buffers, resource templates, and Scope/Device/Method blocks with their PkgLength.
//
// Every function returns the encoded bytes of one AML term; blocks take their already encoded contents, so a
// table is written bottom-up as nested calls:
//   scope("\\_SB_", {device("PCI0", {name("_HID", eisa_id("PNP0A08")), name("_UID", integer(0))})})
// Names are 1-4 characters per segment (shorter ones are padded with '_', as ASL does), segments separated by
// '.', optionally prefixed with '\' (root) or '^' (parent). Bad names throw Error: they are programming errors.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace vireo::acpi::aml {

using Bytes = std::vector<uint8_t>;

// ---- opcodes used here (20.2.x)
inline constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08, kBytePrefix = 0x0a, kWordPrefix = 0x0b,
                         kDWordPrefix = 0x0c, kStringPrefix = 0x0d, kQWordPrefix = 0x0e, kScopeOp = 0x10,
                         kBufferOp = 0x11, kPackageOp = 0x12, kMethodOp = 0x14, kReturnOp = 0xa4, kExtOpPrefix = 0x5b,
                         kDeviceOp = 0x82, kOnesOp = 0xff, kRootChar = 0x5c, kParentPrefix = 0x5e,
                         kDualNamePrefix = 0x2e, kMultiNamePrefix = 0x2f;

// PkgLength (20.2.4) for a block whose contents after the PkgLength are `body_len` bytes: the encoded length
// counts itself, so it is 1 byte up to 62 body bytes, then 2 (12-bit length), 3 (20-bit) or 4 bytes (28-bit).
Bytes pkg_length(size_t body_len);

// NameString (20.2.2): "_HID", "\\_SB_.PCI0", "^PCI0".
Bytes name_string(std::string_view path);

// Integer: ZeroOp / OneOp / BytePrefix / WordPrefix / DWordPrefix / QWordPrefix, the shortest that fits.
Bytes integer(uint64_t v);
// A 32-bit constant always as DWordPrefix (e.g. _PRT addresses, so every entry has the same shape).
Bytes dword(uint32_t v);
// String (ASCII, no NUL inside): StringPrefix, bytes, NUL.
Bytes string(std::string_view s);
// EISAID("PNP0A08") (ASL macro, 19.6.35): 3 uppercase letters + 4 hex digits compressed into a DWordConst.
uint32_t eisa_id_value(std::string_view id);
Bytes eisa_id(std::string_view id);

// DefName: Name (n, value).
Bytes name(std::string_view n, const Bytes& value);
// DefPackage: Package () { elements... } (at most 255 elements).
Bytes package(const std::vector<Bytes>& elements);
// DefBuffer: Buffer () { data } (the size is the data's length).
Bytes buffer(const Bytes& data);
// DefScope / DefDevice: Scope (n) { terms... }, Device (n) { terms... }.
Bytes scope(std::string_view n, const std::vector<Bytes>& terms);
Bytes device(std::string_view n, const std::vector<Bytes>& terms);
// DefMethod: Method (n, argc, NotSerialized or Serialized) { terms... }.
Bytes method(std::string_view n, uint8_t argc, bool serialized, const std::vector<Bytes>& terms);
// DefReturn: Return (value).
Bytes return_value(const Bytes& value);

// Concatenation of terms (a TermList).
Bytes concat(const std::vector<Bytes>& terms);

// ---- resource descriptors (6.4); append to a ResourceTemplate
// Address space descriptor flags (6.4.3.5.x general flags): producer (a bridge's window) with fixed min and max.
class ResourceTemplate {
 public:
  // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, max - min + 1).
  ResourceTemplate& word_bus_number(uint16_t min, uint16_t max);
  // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, max - min + 1).
  ResourceTemplate& word_io(uint16_t min, uint16_t max);
  // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable|Cacheable, ReadWrite, 0, min, max, 0, len).
  ResourceTemplate& dword_memory(uint32_t min, uint32_t max, bool cacheable);
  // QWordMemory (same, 64-bit).
  ResourceTemplate& qword_memory(uint64_t min, uint64_t max, bool cacheable);
  // IO (Decode16, min, max, align, len): a small I/O port descriptor.
  ResourceTemplate& io(uint16_t min, uint16_t max, uint8_t align, uint8_t len);
  // Memory32Fixed (ReadWrite|ReadOnly, base, len).
  ResourceTemplate& memory32_fixed(uint32_t base, uint32_t len, bool writable);
  // The descriptors followed by the end tag (0x79, checksum 0 = "treat as valid"), as a Buffer term.
  Bytes to_buffer() const;
  // The raw descriptor bytes without the end tag (for tests).
  const Bytes& descriptors() const { return d_; }

 private:
  void address_header(uint8_t tag, uint16_t len, uint8_t type, uint8_t type_flags);
  Bytes d_;
};

}  // namespace vireo::acpi::aml
