// vireo/storage: libvirt's storage pool XML (<pool>) and volume XML (<volume>) as C++ models: parse with
// validation and defaults, write back in libvirt's layout. Unknown parts are kept verbatim.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xml/xml_util.h"

namespace vireo::storage {

struct Permissions {
  std::string mode, owner, group, label;
  bool empty() const { return mode.empty() && owner.empty() && group.empty() && label.empty(); }
};

struct PoolSource {
  std::vector<std::string> devices;  // <device path=.../> (fs, logical, disk, iscsi: none)
  std::string host_name, host_port;  // netfs, iscsi
  std::string dir;                   // netfs: export path
  std::string name;                  // logical: VG name
  std::string format;                // fs: ext4...; netfs: nfs|auto|cifs; disk: dos|gpt; logical: lvm2
  std::string initiator_iqn;         // iscsi <initiator><iqn name=.../></initiator>
  std::string adapter_xml;           // verbatim (scsi)
  xml::Extras extras;
};

struct PoolDef {
  std::string type;  // dir fs netfs logical disk iscsi (others are refused)
  std::string name, uuid;
  uint64_t capacity = 0, allocation = 0, available = 0;  // live figures
  PoolSource source;
  std::string target_path;
  Permissions target_perms;
  xml::Extras extras;
};

struct VolDef {
  std::string type;  // file|block (live)
  std::string name, key;
  uint64_t capacity = 0, allocation = 0;
  bool allocation_given = false;
  std::string target_path;
  std::string format;  // raw|qcow2 (file pools); "" = pool default
  Permissions target_perms;
  std::string compat;  // qcow2 <compat>
  std::vector<std::string> features;  // qcow2 <features><lazy_refcounts/>...
  std::string backing_path, backing_format;
  xml::Extras extras;
};

PoolDef parse_pool_xml(const std::string& xml, bool generate_uuid = true);
std::string write_pool_xml(const PoolDef& def);
VolDef parse_vol_xml(const std::string& xml);
std::string write_vol_xml(const VolDef& def);

// virsh's sizes: "1.00 GiB", "0.00 B".
std::string pretty_size(uint64_t bytes);
// virsh's size arguments: "10M", "1G", "512" (bytes), "1GB" (1e9), "1GiB".
uint64_t parse_size_arg(const std::string& text);

// Volume upload/download travel as base64 in the JSON-RPC messages. decode throws Error on bad input.
std::string base64_encode(const uint8_t* data, size_t n);
std::vector<uint8_t> base64_decode(const std::string& text);

}  // namespace vireo::storage
