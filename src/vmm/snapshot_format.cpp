#include "vmm/snapshot_format.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/fd.h"
#include "common/file.h"

namespace vireo::vmm::snapshot {

using nlohmann::json;

namespace {

template <typename T>
void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}
template <typename T>
T get_le(const std::string& in, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[off + i])) << (8 * i);
  return static_cast<T>(v);
}

// pwrite of all of [p, p+len) at `off`, retrying short writes and EINTR.
bool write_all_at(int fd, const uint8_t* p, uint64_t len, uint64_t off) {
  while (len > 0) {
    const ssize_t n = ::pwrite(fd, p, std::min<uint64_t>(len, 1u << 30), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n, off += static_cast<uint64_t>(n), len -= static_cast<uint64_t>(n);
  }
  return true;
}

uint32_t crc32_of(const uint8_t* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

// nlohmann's CBOR reader recurses once per nesting level: a hostile file of nested arrays would overflow the
// stack. This iterative pass checks the shape first: definite lengths only, no tags, bounded nesting, every
// item inside the buffer.
void check_cbor_shape(const uint8_t* p, size_t n, const std::string& what) {
  constexpr size_t kMaxDepth = 32;
  std::vector<uint64_t> todo{1};  // items still to read at each open level
  size_t pos = 0;
  while (!todo.empty()) {
    if (todo.back() == 0) {
      todo.pop_back();
      continue;
    }
    --todo.back();
    if (pos >= n) fail("{}: CBOR body ends inside an item", what);
    const uint8_t b = p[pos++];
    const unsigned major = b >> 5, info = b & 31;
    uint64_t arg = info;
    if (info >= 24 && info <= 27) {
      const size_t len = size_t{1} << (info - 24);
      if (n - pos < len) fail("{}: CBOR body ends inside an item", what);
      arg = 0;
      for (size_t i = 0; i < len; ++i) arg = (arg << 8) | p[pos++];
    } else if (info > 27) {
      fail("{}: CBOR item 0x{:02x} at byte {} (indefinite length or reserved) is not used by vireo", what, b, pos - 1);
    }
    switch (major) {
      case 2:
      case 3:
        if (n - pos < arg) fail("{}: CBOR string of {} bytes runs past the end", what, arg);
        pos += arg;
        break;
      case 4:
      case 5:
        if (todo.size() >= kMaxDepth) fail("{}: CBOR nesting deeper than {}", what, kMaxDepth);
        if (arg > n) fail("{}: CBOR container of {} items in a {}-byte body", what, arg, n);
        todo.push_back(major == 5 ? arg * 2 : arg);
        break;
      case 6:
        fail("{}: CBOR tags are not used by vireo", what);
      default:
        break;  // integers, simple values, floats
    }
  }
  if (pos != n) fail("{}: {} bytes after the CBOR body", what, n - pos);
}

template <typename T>
json blob(const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  return json::binary(std::vector<uint8_t>(p, p + sizeof(T)));
}
template <typename T>
T unblob(JsonReader& r, const std::string& key) {
  const auto& b = r.bytes(key, sizeof(T));
  T v;
  std::memcpy(&v, b.data(), sizeof(T));
  return v;
}

}  // namespace

std::string encode_state(const json& body) {
  const std::vector<uint8_t> cbor = json::to_cbor(body);
  std::string out(kMagic, sizeof kMagic);
  put_le<uint32_t>(out, kFormatVersion);
  put_le<uint32_t>(out, crc32_of(cbor.data(), cbor.size()));
  put_le<uint64_t>(out, cbor.size());
  out.append(reinterpret_cast<const char*>(cbor.data()), cbor.size());
  return out;
}

json decode_state(const std::string& bytes, const std::string& what) {
  if (bytes.size() < kHeaderSize) fail("{}: truncated ({} bytes, the header alone is {})", what, bytes.size(), kHeaderSize);
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) fail("{}: not a vireo state file (bad magic)", what);
  const uint32_t version = get_le<uint32_t>(bytes, 8);
  if (version != kFormatVersion)
    fail("{}: state format version {}, this vireo-vmm reads version {}", what, version, kFormatVersion);
  const uint32_t crc = get_le<uint32_t>(bytes, 12);
  const uint64_t len = get_le<uint64_t>(bytes, 16);
  if (len > kMaxBody) fail("{}: body length {} is larger than the limit {}", what, len, kMaxBody);
  if (bytes.size() - kHeaderSize < len)
    fail("{}: truncated ({} of {} bytes)", what, bytes.size(), kHeaderSize + len);
  if (bytes.size() - kHeaderSize > len) fail("{}: {} bytes of trailing garbage", what, bytes.size() - kHeaderSize - len);
  const auto* body = reinterpret_cast<const uint8_t*>(bytes.data()) + kHeaderSize;
  if (crc32_of(body, len) != crc) fail("{}: checksum mismatch (the file is corrupt)", what);
  check_cbor_shape(body, len, what);
  json j = json::from_cbor(body, body + len, true, false);
  if (j.is_discarded()) fail("{}: body is not valid CBOR", what);
  if (!j.is_object()) fail("{}: body is not an object", what);
  return j;
}

// ---------------------------------------------------------------------------------------------------------
// KVM state

json vcpu_to_json(const kvm::VcpuState& s) {
  json msrs = json::array();
  for (const auto& m : s.msrs) msrs.push_back(json::array({m.index, m.data}));
  json j = {{"regs", blob(s.regs)},           {"sregs", blob(s.sregs)},   {"fpu", blob(s.fpu)},
            {"xsave", json::binary(s.xsave)}, {"lapic", blob(s.lapic)},   {"msrs", msrs},
            {"events", blob(s.events)},       {"mp_state", blob(s.mp_state)}, {"debugregs", blob(s.debugregs)}};
  j["xcrs"] = s.xcrs ? blob(*s.xcrs) : json();
  return j;
}

kvm::VcpuState vcpu_from_json(JsonReader& r) {
  kvm::VcpuState s;
  s.regs = unblob<kvm_regs>(r, "regs");
  s.sregs = unblob<kvm_sregs>(r, "sregs");
  s.fpu = unblob<kvm_fpu>(r, "fpu");
  s.xsave = r.bytes("xsave");
  if (!s.xsave.empty() && (s.xsave.size() < 4096 || s.xsave.size() > (1u << 20) || s.xsave.size() % 64 != 0))
    fail("{}: xsave: {} bytes is not an XSAVE area size", r.key_path("xsave"), s.xsave.size());
  if (r.has("xcrs")) s.xcrs = unblob<kvm_xcrs>(r, "xcrs");
  else r.skip("xcrs");
  s.lapic = unblob<kvm_lapic_state>(r, "lapic");
  const json& msrs = r.array("msrs", 4096);
  for (size_t i = 0; i < msrs.size(); ++i) {
    const json& m = msrs[i];
    if (!m.is_array() || m.size() != 2 || !m[0].is_number_unsigned() || !m[1].is_number_unsigned() ||
        m[0].get<uint64_t>() > 0xffffffffull)
      fail("{}[{}]: expected [index, value]", r.key_path("msrs"), i);
    s.msrs.push_back(kvm_msr_entry{m[0].get<uint32_t>(), 0, m[1].get<uint64_t>()});
  }
  s.events = unblob<kvm_vcpu_events>(r, "events");
  s.mp_state = unblob<kvm_mp_state>(r, "mp_state");
  if (s.mp_state.mp_state > KVM_MP_STATE_AP_RESET_HOLD)
    fail("{}: mp_state {} is not a KVM MP state", r.key_path("mp_state"), s.mp_state.mp_state);
  s.debugregs = unblob<kvm_debugregs>(r, "debugregs");
  r.finish();
  return s;
}

json vm_to_json(const kvm::VmState& s) {
  json chips = json::array();
  for (const auto& c : s.irqchips) chips.push_back(blob(c));
  json j = {{"irqchips", chips}, {"clock", blob(s.clock)}};
  j["pit"] = s.pit ? blob(*s.pit) : json();
  return j;
}

kvm::VmState vm_from_json(JsonReader& r) {
  kvm::VmState s;
  const json& chips = r.array("irqchips", 3);
  for (size_t i = 0; i < chips.size(); ++i) {
    if (!chips[i].is_binary() || chips[i].get_binary().size() != sizeof(kvm_irqchip))
      fail("{}[{}]: expected a {}-byte kvm_irqchip", r.key_path("irqchips"), i, sizeof(kvm_irqchip));
    kvm_irqchip c;
    std::memcpy(&c, chips[i].get_binary().data(), sizeof c);
    if (c.chip_id != i) fail("{}[{}]: chip id {}, expected {}", r.key_path("irqchips"), i, c.chip_id, i);
    s.irqchips.push_back(c);
  }
  if (r.has("pit")) s.pit = unblob<kvm_pit_state2>(r, "pit");
  else r.skip("pit");
  s.clock = unblob<kvm_clock_data>(r, "clock");
  r.finish();
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Files

void prepare_dir(const std::string& dir) {
  if (dir.empty()) fail("snapshot-save: path is empty");
  if (::mkdir(dir.c_str(), 0755) == 0) {
    fsync_parent_dir(dir);
    return;
  }
  if (errno != EEXIST) throw_errno("snapshot-save: create " + dir);
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("snapshot-save: " + dir);
  bool empty = true;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
  ::closedir(d);
  if (!empty) fail("snapshot-save: {} is not empty", dir);
}

void write_memory(const std::string& dir, int fd, const uint8_t* base, uint64_t size) {
  const std::string path = dir + "/" + kMemoryFile;
  const std::string tmp = path + ".tmp";
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) throw_errno("snapshot-save: create " + tmp);
  if (::ftruncate(out.get(), static_cast<off_t>(size)) < 0) throw_errno("snapshot-save: resize " + tmp);
  auto copy = [&](uint64_t off, uint64_t len) {
    if (!write_all_at(out.get(), base + off, len, off)) throw_errno("snapshot-save: write " + tmp);
  };
  if (fd >= 0) {
    // Only the data extents of the memfd: pages the guest never touched stay holes in the file.
    off_t pos = 0;
    while (static_cast<uint64_t>(pos) < size) {
      const off_t data = ::lseek(fd, pos, SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;  // no data after pos
        throw_errno("snapshot-save: SEEK_DATA on guest memory");
      }
      off_t hole = ::lseek(fd, data, SEEK_HOLE);
      if (hole < 0) throw_errno("snapshot-save: SEEK_HOLE on guest memory");
      if (static_cast<uint64_t>(hole) > size) hole = static_cast<off_t>(size);
      copy(static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data));
      pos = hole;
    }
  } else {
    // A private mapping: skip all-zero pages (they read back as zero from the hole).
    static const uint8_t zero[4096] = {};
    uint64_t run = 0, run_len = 0;
    for (uint64_t off = 0; off < size; off += 4096) {
      const bool z = std::memcmp(base + off, zero, 4096) == 0;
      if (!z) {
        if (run_len == 0) run = off;
        run_len += 4096;
      } else if (run_len) {
        copy(run, run_len);
        run_len = 0;
      }
    }
    if (run_len) copy(run, run_len);
  }
  if (::fsync(out.get()) < 0) throw_errno("snapshot-save: fsync " + tmp);
  out.reset();
  if (::rename(tmp.c_str(), path.c_str()) < 0) throw_errno("snapshot-save: rename " + tmp);
}

}  // namespace vireo::vmm::snapshot

namespace vireo::vmm::snapshot {

nlohmann::json read_snapshot(const std::string& dir, config::VmConfig& cfg) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) < 0) throw_errno("--restore " + dir);
  if (!S_ISDIR(st.st_mode)) fail("--restore {}: not a folder", dir);
  const std::string state_path = dir + "/" + kStateFile;
  if (::access(state_path.c_str(), F_OK) < 0)
    fail("--restore {}: not a snapshot (no {}: the save did not complete)", dir, kStateFile);
  cfg = config::load_vm_config(dir + "/" + kConfigFile);
  const std::string mem_path = dir + "/" + kMemoryFile;
  if (::stat(mem_path.c_str(), &st) < 0) throw_errno("--restore: " + mem_path);
  if (static_cast<uint64_t>(st.st_size) != cfg.memory.size)
    fail("--restore: {}: {} bytes, the VM has {} of RAM", mem_path, st.st_size, cfg.memory.size);
  return decode_state(read_file("--restore", state_path, kHeaderSize + kMaxBody), state_path);
}

}  // namespace vireo::vmm::snapshot
