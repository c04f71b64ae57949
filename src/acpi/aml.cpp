// vireo/acpi: AML encoder. Encodings from ACPI 6.x 20.2 (AML grammar) and 6.4 (resource data types).
#include "acpi/aml.h"

#include "common/error.h"

namespace vireo::acpi::aml {

namespace {

void append(Bytes& out, const Bytes& b) { out.insert(out.end(), b.begin(), b.end()); }
void put16(Bytes& out, uint16_t v) { out.push_back(static_cast<uint8_t>(v)), out.push_back(static_cast<uint8_t>(v >> 8)); }
void put32(Bytes& out, uint32_t v) { put16(out, static_cast<uint16_t>(v)), put16(out, static_cast<uint16_t>(v >> 16)); }
void put64(Bytes& out, uint64_t v) { put32(out, static_cast<uint32_t>(v)), put32(out, static_cast<uint32_t>(v >> 32)); }

bool lead_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool name_char(char c) { return lead_char(c) || (c >= '0' && c <= '9'); }

// One NameSeg: 4 characters, a short one padded with '_' (as ASL does: "PCI" is "PCI_").
void name_seg(Bytes& out, std::string_view seg, std::string_view whole) {
  if (seg.empty() || seg.size() > 4 || !lead_char(seg[0]))
    fail("aml: bad name segment '{}' in '{}'", seg, whole);
  for (char c : seg)
    if (!name_char(c)) fail("aml: bad character in name '{}'", whole);
  for (size_t i = 0; i < 4; i++) out.push_back(static_cast<uint8_t>(i < seg.size() ? seg[i] : '_'));
}

// Opcode, PkgLength, then the block's contents.
Bytes block(std::initializer_list<uint8_t> op, const Bytes& body) {
  Bytes out(op);
  append(out, pkg_length(body.size()));
  append(out, body);
  return out;
}

}  // namespace

Bytes pkg_length(size_t body_len) {
  // The lead byte's bits 7-6 give the number of following bytes; with none, bits 5-0 are the length. With
  // some, bits 3-0 of the lead byte are the low nibble and each following byte carries 8 more bits.
  if (body_len + 1 <= 0x3f) return {static_cast<uint8_t>(body_len + 1)};
  for (size_t n = 2; n <= 4; n++) {
    const size_t total = body_len + n;
    if (total < (size_t{1} << (4 + 8 * (n - 1)))) {
      Bytes out{static_cast<uint8_t>(((n - 1) << 6) | (total & 0xf))};
      for (size_t i = 1; i < n; i++) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * (i - 1))));
      return out;
    }
  }
  fail("aml: block of {} bytes is too long for a PkgLength", body_len);
}

Bytes name_string(std::string_view path) {
  Bytes out;
  const std::string_view whole = path;
  if (!path.empty() && path[0] == '\\') out.push_back(kRootChar), path.remove_prefix(1);
  while (!path.empty() && path[0] == '^') out.push_back(kParentPrefix), path.remove_prefix(1);
  std::vector<std::string_view> segs;
  while (!path.empty()) {
    const size_t dot = path.find('.');
    segs.push_back(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
  }
  if (segs.empty()) fail("aml: empty name '{}'", whole);
  if (segs.size() > 255) fail("aml: name '{}' has too many segments", whole);
  if (segs.size() == 2) out.push_back(kDualNamePrefix);
  if (segs.size() > 2) out.push_back(kMultiNamePrefix), out.push_back(static_cast<uint8_t>(segs.size()));
  for (auto s : segs) name_seg(out, s, whole);
  return out;
}

Bytes integer(uint64_t v) {
  if (v == 0) return {kZeroOp};
  if (v == 1) return {kOneOp};
  Bytes out;
  if (v <= 0xff) {
    out = {kBytePrefix, static_cast<uint8_t>(v)};
  } else if (v <= 0xffff) {
    out = {kWordPrefix};
    put16(out, static_cast<uint16_t>(v));
  } else if (v <= 0xffffffff) {
    out = {kDWordPrefix};
    put32(out, static_cast<uint32_t>(v));
  } else {
    out = {kQWordPrefix};
    put64(out, v);
  }
  return out;
}

Bytes dword(uint32_t v) {
  Bytes out{kDWordPrefix};
  put32(out, v);
  return out;
}

Bytes string(std::string_view s) {
  Bytes out{kStringPrefix};
  for (char c : s) {
    if (c == 0 || static_cast<unsigned char>(c) > 0x7f) fail("aml: string '{}' is not NUL-free ASCII", s);
    out.push_back(static_cast<uint8_t>(c));
  }
  out.push_back(0);
  return out;
}

uint32_t eisa_id_value(std::string_view id) {
  auto hex = [&](char c) -> uint32_t {
    if (c >= '0' && c <= '9') return static_cast<uint32_t>(c - '0');
    if (c >= 'A' && c <= 'F') return static_cast<uint32_t>(c - 'A' + 10);
    fail("aml: EISA id '{}' needs 4 uppercase hex digits after the vendor", id);
  };
  if (id.size() != 7) fail("aml: EISA id '{}' is not 7 characters", id);
  uint32_t vendor = 0;
  for (int i = 0; i < 3; i++) {
    if (id[i] < 'A' || id[i] > 'Z') fail("aml: EISA id '{}' needs 3 uppercase letters", id);
    vendor = (vendor << 5) | static_cast<uint32_t>(id[i] - 0x40);  // 'A' = 1
  }
  const uint32_t product = hex(id[3]) << 12 | hex(id[4]) << 8 | hex(id[5]) << 4 | hex(id[6]);
  // The 15-bit vendor and the 16-bit product are each stored big-endian, vendor first: "PNP0A03" is the
  // byte sequence 41 d0 0a 03, i.e. the little-endian DWORD 0x030ad041.
  return (vendor >> 8) | (vendor & 0xff) << 8 | (product >> 8) << 16 | (product & 0xff) << 24;
}

Bytes eisa_id(std::string_view id) { return dword(eisa_id_value(id)); }

Bytes name(std::string_view n, const Bytes& value) {
  Bytes out{kNameOp};
  append(out, name_string(n));
  append(out, value);
  return out;
}

Bytes package(const std::vector<Bytes>& elements) {
  if (elements.size() > 255) fail("aml: package of {} elements (at most 255)", elements.size());
  Bytes body{static_cast<uint8_t>(elements.size())};
  append(body, concat(elements));
  return block({kPackageOp}, body);
}

Bytes buffer(const Bytes& data) {
  Bytes body = integer(data.size());
  append(body, data);
  return block({kBufferOp}, body);
}

Bytes scope(std::string_view n, const std::vector<Bytes>& terms) {
  Bytes body = name_string(n);
  append(body, concat(terms));
  return block({kScopeOp}, body);
}

Bytes device(std::string_view n, const std::vector<Bytes>& terms) {
  Bytes body = name_string(n);
  append(body, concat(terms));
  return block({kExtOpPrefix, kDeviceOp}, body);
}

Bytes method(std::string_view n, uint8_t argc, bool serialized, const std::vector<Bytes>& terms) {
  if (argc > 7) fail("aml: method {} with {} arguments (at most 7)", n, argc);
  Bytes body = name_string(n);
  body.push_back(static_cast<uint8_t>(argc | (serialized ? 0x08 : 0)));  // MethodFlags, SyncLevel 0
  append(body, concat(terms));
  return block({kMethodOp}, body);
}

Bytes return_value(const Bytes& value) {
  Bytes out{kReturnOp};
  append(out, value);
  return out;
}

Bytes concat(const std::vector<Bytes>& terms) {
  Bytes out;
  for (const auto& t : terms) append(out, t);
  return out;
}

// ---- resource descriptors

// Large address space descriptors (6.4.3.5.1-3): tag, length of what follows the length field, resource type
// (0 memory, 1 I/O, 2 bus number), general flags, type-specific flags. General flags here: bit 0 = 0
// (ResourceProducer: a bridge decoding a window for its children), bit 1 = 0 (PosDecode), bit 2 MinFixed,
// bit 3 MaxFixed.
void ResourceTemplate::address_header(uint8_t tag, uint16_t len, uint8_t type, uint8_t type_flags) {
  d_.push_back(tag);
  put16(d_, len);
  d_.push_back(type);
  d_.push_back(0x0c);
  d_.push_back(type_flags);
}

ResourceTemplate& ResourceTemplate::word_bus_number(uint16_t min, uint16_t max) {
  if (max < min) fail("aml: bus range {}-{} is empty", min, max);
  address_header(0x88, 13, 2, 0);
  put16(d_, 0), put16(d_, min), put16(d_, max), put16(d_, 0);  // granularity, min, max, translation
  put16(d_, static_cast<uint16_t>(max - min + 1));
  return *this;
}

ResourceTemplate& ResourceTemplate::word_io(uint16_t min, uint16_t max) {
  if (max < min) fail("aml: I/O range 0x{:x}-0x{:x} is empty", min, max);
  address_header(0x88, 13, 1, 0x03);  // type flags: ISA and non-ISA ranges (EntireRange)
  put16(d_, 0), put16(d_, min), put16(d_, max), put16(d_, 0);
  put16(d_, static_cast<uint16_t>(max - min + 1));
  return *this;
}

ResourceTemplate& ResourceTemplate::dword_memory(uint32_t min, uint32_t max, bool cacheable) {
  if (max < min) fail("aml: memory range 0x{:x}-0x{:x} is empty", min, max);
  // Type flags: bit 0 ReadWrite, bits 2-1 cacheability (0 non-cacheable, 1 cacheable).
  address_header(0x87, 23, 0, static_cast<uint8_t>(0x01 | (cacheable ? 0x02 : 0)));
  put32(d_, 0), put32(d_, min), put32(d_, max), put32(d_, 0), put32(d_, max - min + 1);
  return *this;
}

ResourceTemplate& ResourceTemplate::qword_memory(uint64_t min, uint64_t max, bool cacheable) {
  if (max < min) fail("aml: memory range 0x{:x}-0x{:x} is empty", min, max);
  address_header(0x8a, 43, 0, static_cast<uint8_t>(0x01 | (cacheable ? 0x02 : 0)));
  put64(d_, 0), put64(d_, min), put64(d_, max), put64(d_, 0), put64(d_, max - min + 1);
  return *this;
}

ResourceTemplate& ResourceTemplate::io(uint16_t min, uint16_t max, uint8_t align, uint8_t len) {
  // Small I/O port descriptor (6.4.2.5): tag 0x47 (type 8, length 7), information bit 0 = 16-bit decode.
  d_.push_back(0x47);
  d_.push_back(0x01);
  put16(d_, min), put16(d_, max);
  d_.push_back(align);
  d_.push_back(len);
  return *this;
}

ResourceTemplate& ResourceTemplate::memory32_fixed(uint32_t base, uint32_t len, bool writable) {
  // 32-bit fixed memory range descriptor (6.4.3.4): tag 0x86, length 9, information bit 0 = read/write.
  d_.push_back(0x86);
  put16(d_, 9);
  d_.push_back(writable ? 1 : 0);
  put32(d_, base), put32(d_, len);
  return *this;
}

Bytes ResourceTemplate::to_buffer() const {
  Bytes data = d_;
  data.push_back(0x79);  // end tag (6.4.2.9)
  data.push_back(0x00);  // checksum 0: the OS treats the template as valid without summing it
  return buffer(data);
}

}  // namespace vireo::acpi::aml
