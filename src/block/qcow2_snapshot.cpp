// qcow2: internal snapshots (table, create, apply, delete).
#include "block/qcow2_internal.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace vireo::block {

namespace qcow2 {
std::vector<uint8_t> serialize_snapshots(const std::vector<SnapshotRec>& sn) {
  std::vector<uint8_t> out;
  for (const auto& r : sn) {
    std::vector<uint8_t> extra = r.extra;
    if (extra.size() < 24) extra.resize(24, 0);
    put64(&extra[0], r.pub.vm_state_size);
    put64(&extra[8], r.pub.disk_size);
    put64(&extra[16], r.pub.icount ? *r.pub.icount : UINT64_MAX);
    size_t start = out.size();
    out.resize(start + 40, 0);
    uint8_t* h = &out[start];
    put64(h, r.pub.l1_table_offset);
    put32(h + 8, r.pub.l1_size);
    put16(h + 12, static_cast<uint16_t>(r.pub.id.size()));
    put16(h + 14, static_cast<uint16_t>(r.pub.name.size()));
    put32(h + 16, r.pub.date_sec);
    put32(h + 20, r.pub.date_nsec);
    put64(h + 24, r.pub.vm_clock_nsec);
    put32(h + 32, r.pub.vm_state_size > UINT32_MAX ? 0 : static_cast<uint32_t>(r.pub.vm_state_size));
    put32(h + 36, static_cast<uint32_t>(extra.size()));
    out.insert(out.end(), extra.begin(), extra.end());
    out.insert(out.end(), r.pub.id.begin(), r.pub.id.end());
    out.insert(out.end(), r.pub.name.begin(), r.pub.name.end());
    out.resize((out.size() + 7) & ~size_t(7), 0);
  }
  return out;
}
}  // namespace qcow2

void Qcow2Image::State::update_snapshot_table(std::vector<SnapshotRec> nsn) {
  std::vector<uint8_t> raw = serialize_snapshots(nsn);
  uint64_t new_off = 0, new_clusters = 0;
  if (!nsn.empty()) {
    new_clusters = div_round_up(raw.size(), cs);
    new_off = alloc_clusters(new_clusters);
    raw.resize(new_clusters * cs, 0);
    file->pwrite_full(new_off, raw);
    write_refcount_blocks();
    file->sync();
  }
  uint64_t old_off = snapshots_offset;
  uint64_t old_clusters = snaps.empty() ? 0 : div_round_up(serialize_snapshots(snaps).size(), cs);
  snapshots_offset = new_off;
  nb_snapshots = static_cast<uint32_t>(nsn.size());
  snaps = std::move(nsn);
  write_header();
  file->sync();
  for (uint64_t k = 0; k < old_clusters; k++) add_rc(old_off / cs + k, -1);
  write_refcount_blocks();
}

std::vector<Qcow2Snapshot> Qcow2Image::snapshots() const {
  std::lock_guard g(s_->mu);
  std::vector<Qcow2Snapshot> v;
  for (const auto& r : s_->snaps) v.push_back(r.pub);
  return v;
}

namespace {
int find_snapshot(const std::vector<SnapshotRec>& sn, const std::string& key) {
  for (size_t i = 0; i < sn.size(); i++)
    if (sn[i].pub.name == key) return static_cast<int>(i);
  for (size_t i = 0; i < sn.size(); i++)
    if (sn[i].pub.id == key) return static_cast<int>(i);
  return -1;
}
}  // namespace

void Qcow2Image::snapshot_create(const std::string& name, uint64_t vm_state_size) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  if (name.size() > 65535) fail("Snapshot name too long");
  for (const auto& r : s.snaps)
    if (r.pub.name == name) fail("Snapshot with name '{}' already exists", name);
  if (s.snaps.size() >= kMaxSnapshots) fail("Too many snapshots");
  s.flush_metadata();
  s.file->sync();
  // 1. One more reference to every cluster of the active tree.
  s.walk_tree(s.l1, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, +1);
  }, nullptr, nullptr);
  s.write_refcount_blocks();
  s.file->sync();
  // 2. Nothing in the active tree is exclusively owned any more.
  s.fix_copied_flags(nullptr, true);
  s.flush_metadata();
  s.file->sync();
  // 3. The snapshot's copy of the L1 table.
  uint64_t l1c = div_round_up(uint64_t(s.l1_size) * 8, s.cs);
  uint64_t l1off = 0;
  if (l1c) {
    l1off = s.alloc_clusters(l1c);
    std::vector<uint8_t> raw(l1c * s.cs, 0);
    for (size_t i = 0; i < s.l1.size(); i++) put64(&raw[i * 8], s.l1[i] & ~kCopied);
    s.file->pwrite_full(l1off, raw);
    s.write_refcount_blocks();
    s.file->sync();
  }
  // 4. The new snapshot table, then the header.
  SnapshotRec r;
  uint64_t maxid = 0;
  for (const auto& x : s.snaps) maxid = std::max<uint64_t>(maxid, std::strtoull(x.pub.id.c_str(), nullptr, 10));
  r.pub.id = std::to_string(maxid + 1);
  r.pub.name = name;
  auto now = std::chrono::system_clock::now().time_since_epoch();
  r.pub.date_sec = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(now).count());
  r.pub.date_nsec = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() % 1000000000);
  r.pub.vm_state_size = vm_state_size;
  r.pub.icount = 0;  // what qemu-img snapshot -c records
  r.pub.disk_size = s.size;
  r.pub.l1_table_offset = l1off;
  r.pub.l1_size = s.l1_size;
  if (s.version >= 3) r.extra.resize(24, 0);
  auto nsn = s.snaps;
  nsn.push_back(r);
  s.update_snapshot_table(std::move(nsn));
  s.file->sync();
}

void Qcow2Image::snapshot_apply(const std::string& key) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  int idx = find_snapshot(s.snaps, key);
  if (idx < 0) fail("Could not find snapshot '{}'", key);
  const Qcow2Snapshot sn = s.snaps[idx].pub;
  s.flush_metadata();
  s.file->sync();
  std::vector<uint64_t> nl1 = s.read_l1(sn.l1_table_offset, sn.l1_size);
  uint64_t new_size = sn.disk_size;
  nl1.resize(std::max<uint64_t>(nl1.size(), div_round_up(new_size, s.l2_span())), 0);
  if (nl1.size() * 8 > kMaxL1Bytes) fail("snapshot L1 table too large");
  // 1. References for the snapshot's tree.
  s.walk_tree(nl1, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, +1);
  }, nullptr, nullptr);
  // 2. The new active L1 in fresh clusters.
  uint64_t l1c = div_round_up(nl1.size() * 8, s.cs);
  uint64_t l1off = l1c ? s.alloc_clusters(l1c) : 0;
  for (auto& e : nl1) e &= ~kCopied;
  std::vector<uint8_t> raw(l1c * s.cs, 0);
  for (size_t i = 0; i < nl1.size(); i++) put64(&raw[i * 8], nl1[i]);
  if (l1c) s.file->pwrite_full(l1off, raw);
  s.write_refcount_blocks();
  s.file->sync();
  std::vector<uint64_t> old = std::move(s.l1);
  uint64_t old_off = s.l1_offset, old_c = div_round_up(uint64_t(s.l1_size) * 8, s.cs);
  s.l1 = std::move(nl1);
  s.l1_offset = l1off;
  s.l1_size = static_cast<uint32_t>(s.l1.size());
  s.size = new_size;
  s.write_header();
  s.file->sync();
  // 3. Drop the old active tree.
  s.walk_tree(old, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, -1);
  }, nullptr, nullptr);
  for (uint64_t k = 0; k < old_c; k++) s.add_rc(old_off / s.cs + k, -1);
  s.write_refcount_blocks();
  s.file->sync();
  s.fix_copied_flags(nullptr, true);
  s.flush_metadata();
  s.file->sync();
}

void Qcow2Image::snapshot_delete(const std::string& key) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  s.prepare_write();
  int idx = find_snapshot(s.snaps, key);
  if (idx < 0) fail("Could not find snapshot '{}'", key);
  const Qcow2Snapshot sn = s.snaps[idx].pub;
  s.flush_metadata();
  s.file->sync();
  std::vector<uint64_t> sl1 = s.read_l1(sn.l1_table_offset, sn.l1_size);
  auto nsn = s.snaps;
  nsn.erase(nsn.begin() + idx);
  s.update_snapshot_table(std::move(nsn));
  s.file->sync();
  s.walk_tree(sl1, [&](uint64_t host, int kind, uint64_t) {
    if (kind != 3) s.add_rc(host / s.cs, -1);
  }, nullptr, nullptr);
  uint64_t c = div_round_up(uint64_t(sn.l1_size) * 8, s.cs);
  for (uint64_t k = 0; k < c; k++) s.add_rc(sn.l1_table_offset / s.cs + k, -1);
  s.write_refcount_blocks();
  s.file->sync();
  s.fix_copied_flags(nullptr, true);
  s.flush_metadata();
  s.file->sync();
}

}  // namespace vireo::block
