// qcow2: check and repair (reference counting, leaks, corruptions, COPIED flags, statistics).
#include "block/qcow2_internal.h"

namespace vireo::block {

void Qcow2Image::State::fix_copied_flags(CheckResult* res, bool fix) {
  for (size_t i = 0; i < l1.size(); i++) {
    uint64_t off = l1[i] & kL1OffsetMask;
    if (!off || off % cs) continue;
    uint64_t r = get_rc(off / cs);
    bool copied = l1[i] & kCopied;
    if ((r == 1) != copied) {
      if (res && !fix) {
        res->corruptions++;
        res->messages.push_back(fmt::format("ERROR OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}",
                                            i, l1[i], r));
      }
      if (fix) {
        if (res) res->corruptions_fixed++;
        l1[i] = r == 1 ? (l1[i] | kCopied) : (l1[i] & ~kCopied);
        dirty_l1_sectors.insert(i * 8 / 512);
      }
    }
    // Shared tables are fixed in place too: COPIED is meaningless in snapshot views, and every data
    // cluster of a shared table has refcount >= 2 so its flags can only be cleared.
    L2Table& t = get_l2(off);
    for (uint64_t k = 0; k < l2_entries(); k++) {
      uint64_t e = l2_word(t, k);
      if (e & kCompressed) continue;
      uint64_t host = e & kL2OffsetMask;
      if (!host || host % cs) continue;
      uint64_t dr = get_rc(host / cs);
      bool dc = e & kCopied;
      if ((dr == 1) != dc) {
        if (res && !fix) {
          res->corruptions++;
          res->messages.push_back(fmt::format("ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", e, dr));
        }
        if (fix) {
          if (res) res->corruptions_fixed++;
          set_l2_word(t, k, dr == 1 ? (e | kCopied) : (e & ~kCopied));
        }
      }
    }
  }
}

// -------------------------------------------------------------------------------------------------
// Check / rebuild

void Qcow2Image::State::compute_references(std::vector<uint64_t>& ref, CheckResult& res,
                                           bool count_refcount_structs) {
  uint64_t flen = file->length();
  uint64_t nclusters = div_round_up(flen, cs);
  if (nclusters > kMaxRefcountClusters) fail("qcow2 image {} is too large to check", filename);
  ref.assign(nclusters, 0);
  auto inc = [&](uint64_t off, uint64_t len) {
    if (len == 0) return;
    for (uint64_t c = off / cs; c <= (off + len - 1) / cs; c++) {
      if (c >= ref.size()) {
        res.corruptions++;
        res.messages.push_back(fmt::format(
            "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
            "offset {:#x} size {:#x}", off, len));
        return;
      }
      ref[c]++;
    }
  };
  inc(0, cs);
  inc(l1_offset, uint64_t(l1_size) * 8);
  if (crypt) inc(crypt->header_offset(), crypt->header_length());
  uint64_t errs = 0;
  walk_tree(l1, [&](uint64_t host, int kind, uint64_t) {
    if (kind == 3) return;
    inc(host, cs);
  }, &errs, &res);
  if (!snaps.empty()) inc(snapshots_offset, serialize_snapshots(snaps).size());
  for (const auto& sn : snaps) {
    inc(sn.pub.l1_table_offset, uint64_t(sn.pub.l1_size) * 8);
    std::vector<uint64_t> sl1;
    try {
      sl1 = read_l1(sn.pub.l1_table_offset, sn.pub.l1_size);
    } catch (const Error& e) {
      errs++;
      res.messages.push_back(fmt::format("ERROR snapshot {} ({}): {}", sn.pub.id, sn.pub.name, e.what()));
      continue;
    }
    walk_tree(sl1, [&](uint64_t host, int kind, uint64_t) {
      if (kind == 3) return;
      inc(host, cs);
    }, &errs, &res);
  }
  if (count_refcount_structs) {
    inc(rt_offset, uint64_t(rt_clusters) * cs);
    for (size_t i = 0; i < rt.size(); i++) {
      if (!rt[i]) continue;
      if (rt[i] % cs) {
        errs++;
        res.messages.push_back(fmt::format(
            "ERROR refcount block {} is not cluster aligned; refcount table entry corrupted", i));
        continue;
      }
      if (rt[i] / cs >= ref.size()) {
        errs++;
        res.messages.push_back(fmt::format("ERROR refcount block {} is outside image", i));
        continue;
      }
      inc(rt[i], cs);
    }
  }
  res.corruptions += errs;
}

CheckResult Qcow2Image::check(RepairMode repair) {
  std::lock_guard g(s_->mu);
  State& s = *s_;
  if (repair != RepairMode::None && s.ro) fail("Cannot repair a read-only image");
  CheckResult res;
  if (!s.ro) {
    s.flush_metadata();
    s.file->sync();
  }
  // Fresh view of the on-disk refcounts.
  s.rc_loaded = false;
  s.load_refcounts();
  std::vector<uint64_t> ref;
  s.compute_references(ref, res, true);
  uint64_t n = std::max<uint64_t>(ref.size(), s.rc.size());
  std::vector<uint64_t> leaked, corrupted;
  for (uint64_t c = 0; c < n; c++) {
    uint64_t r = s.get_rc(c), f = c < ref.size() ? ref[c] : 0;
    if (r == f) continue;
    if (r < f) {
      corrupted.push_back(c);
      res.corruptions++;
    } else {
      leaked.push_back(c);
      res.leaks++;
    }
  }
  bool rebuild = repair == RepairMode::All && res.corruptions > 0;
  for (uint64_t c : corrupted)
    res.messages.push_back(fmt::format("{} cluster {} refcount={} reference={}", rebuild ? "Repairing" : "ERROR", c,
                                       s.get_rc(c), ref[c]));
  for (uint64_t c : leaked)
    res.messages.push_back(fmt::format("{} cluster {} refcount={} reference={}",
                                       repair != RepairMode::None ? "Repairing" : "Leaked", c, s.get_rc(c),
                                       c < ref.size() ? ref[c] : 0));
  if (rebuild) {
    std::vector<uint64_t> ref2;
    CheckResult scratch;
    s.compute_references(ref2, scratch, false);
    s.rebuild_refcounts(ref2, s.refcount_order);
    res.corruptions_fixed = res.corruptions;
    res.corruptions = 0;
    res.leaks_fixed = res.leaks;
    res.leaks = 0;
  } else if (repair != RepairMode::None && res.leaks) {
    for (uint64_t c : leaked) s.set_rc(c, c < ref.size() ? ref[c] : 0);
    s.write_refcount_blocks();
    s.file->sync();
    res.leaks_fixed = res.leaks;
    res.leaks = 0;
    s.free_hint = 1;
  }
  // COPIED flags of the active tree.
  {
    CheckResult cres;
    s.fix_copied_flags(&cres, false);
    if (cres.corruptions) {
      if (repair == RepairMode::All) {
        CheckResult fres;
        s.fix_copied_flags(&fres, true);
        s.flush_metadata();
        s.file->sync();
        res.corruptions_fixed += fres.corruptions_fixed;
        for (auto& m : cres.messages) res.messages.push_back("Repairing" + m.substr(5));
      } else {
        res.corruptions += cres.corruptions;
        for (auto& m : cres.messages) res.messages.push_back(m);
      }
    }
  }
  if (repair == RepairMode::All && res.corruptions == 0 && (s.incompat & kIncompatCorrupt)) {
    s.incompat &= ~kIncompatCorrupt;
    s.write_header();
    s.file->sync();
  }
  // Statistics of the active tree.
  res.total_clusters = div_round_up(s.size, s.cs);
  uint64_t next_contig = 0;
  s.walk_tree(s.l1, [&](uint64_t host, int kind, uint64_t) {
    if (kind == 0) {
      next_contig = 0;  // qemu counts contiguity within one L2 table
    } else if (kind == 1) {
      res.allocated_clusters++;
      if (next_contig && host != next_contig) res.fragmented_clusters++;
      next_contig = host + s.cs;
    } else if (kind == 3) {
      res.allocated_clusters++;
      res.compressed_clusters++;
      res.fragmented_clusters++;
    }
  }, nullptr, nullptr);
  // qemu: the highest cluster with a non-zero refcount on disk or a reference (leaks count).
  uint64_t hi = 0;
  for (uint64_t c = 0; c < s.rc.size(); c++)
    if (s.rc[c]) hi = c + 1;
  if (!rebuild)
    for (uint64_t c = hi; c < ref.size(); c++)
      if (ref[c]) hi = c + 1;
  res.image_end_offset = hi * s.cs;
  return res;
}

}  // namespace vireo::block
