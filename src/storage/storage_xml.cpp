#include <cctype>
#include <cstdio>

#include "common/error.h"
#include "storage/storage.h"

namespace vireo::storage {

using pugi::xml_node;
using namespace vireo::xml;

namespace {

Permissions parse_perms(xml_node n) {
  Permissions p;
  if (!n) return p;
  p.mode = text_of(n.child("mode"));
  p.owner = text_of(n.child("owner"));
  p.group = text_of(n.child("group"));
  p.label = text_of(n.child("label"));
  if (!p.mode.empty()) {
    for (char c : p.mode)
      if (c < '0' || c > '7') fail("permissions: invalid mode '{}'", p.mode);
    if (p.mode.size() > 4) fail("permissions: invalid mode '{}'", p.mode);
  }
  return p;
}

void write_perms(xml_node parent, const Permissions& p) {
  if (p.empty()) return;
  xml_node n = parent.append_child("permissions");
  if (!p.mode.empty()) text_child(n, "mode", p.mode);
  if (!p.owner.empty()) text_child(n, "owner", p.owner);
  if (!p.group.empty()) text_child(n, "group", p.group);
  if (!p.label.empty()) text_child(n, "label", p.label);
}

void sized(xml_node parent, const char* name, uint64_t v) {
  xml_node n = text_child(parent, name, std::to_string(v));
  n.prepend_attribute("unit") = "bytes";
}

uint64_t parse_sized(xml_node n, const std::string& what) {
  return scaled_bytes(text_of(n), attr(n, "unit"), what);
}

}  // namespace

PoolDef parse_pool_xml(const std::string& text, bool gen_uuid) {
  pugi::xml_document doc;
  xml_node root = parse_root(doc, text, "pool");
  PoolDef d;
  d.type = attr(root, "type");
  if (d.type.empty()) fail("pool: missing type attribute");
  check_enum(d.type, {"dir", "fs", "netfs", "logical", "disk", "iscsi", "iscsi-direct", "scsi", "mpath", "rbd", "sheepdog", "gluster", "zfs", "vstorage"},
             "pool type");
  d.extras = extras(root, {"type"}, {"name", "uuid", "capacity", "allocation", "available", "source", "target"});
  d.name = text_of(single(root, "name", "pool"));
  if (d.name.empty()) fail("pool: missing <name>");
  if (d.name.find('/') != std::string::npos || d.name[0] == '.') fail("pool name '{}' cannot contain '/' or start with '.'", d.name);
  if (xml_node u = single(root, "uuid", "pool")) {
    d.uuid = normalize_uuid(text_of(u));
    if (d.uuid.empty()) fail("pool uuid: malformed uuid '{}'", text_of(u));
  } else if (gen_uuid) {
    d.uuid = generate_uuid();
  }
  if (xml_node s = single(root, "source", "pool")) {
    PoolSource& src = d.source;
    src.extras = extras(s, {}, {"device", "host", "dir", "name", "format", "initiator", "adapter"});
    for (xml_node dv : s.children("device")) {
      if (attr(dv, "path").empty()) fail("pool source device: missing path");
      src.devices.push_back(attr(dv, "path"));
    }
    if (xml_node h = s.child("host")) {
      src.host_name = attr(h, "name");
      src.host_port = attr(h, "port");
      if (src.host_name.empty()) fail("pool source host: missing name");
    }
    src.dir = attr(s.child("dir"), "path");
    src.name = text_of(s.child("name"));
    src.format = attr(s.child("format"), "type");
    src.initiator_iqn = attr(s.child("initiator").child("iqn"), "name");
    if (xml_node a = s.child("adapter")) src.adapter_xml = serialize(a);
  }
  if (xml_node t = single(root, "target", "pool")) {
    d.target_path = text_of(t.child("path"));
    d.target_perms = parse_perms(t.child("permissions"));
  }
  // What each type needs (libvirt's messages where it has them).
  const PoolSource& s = d.source;
  auto need_target = [&] {
    if (d.target_path.empty()) fail("missing storage pool target path");
    if (d.target_path[0] != '/') fail("pool target path '{}' is not absolute", d.target_path);
  };
  // libvirt's default source formats.
  if (d.source.format.empty()) {
    if (d.type == "fs" || d.type == "netfs") d.source.format = "auto";
    else if (d.type == "logical") d.source.format = "lvm2";
    else if (d.type == "disk") d.source.format = "unknown";
  }
  if (d.type == "dir") need_target();
  else if (d.type == "fs") {
    need_target();
    if (s.devices.size() != 1) fail("pool type 'fs' needs exactly one <source><device path=.../>");
  } else if (d.type == "netfs") {
    need_target();
    if (s.host_name.empty()) fail("missing storage pool source host name");
    if (s.dir.empty() && s.format != "cifs") fail("missing storage pool source path");
    if (!s.format.empty()) check_enum(s.format, {"auto", "nfs", "glusterfs", "cifs"}, "pool source format");
  } else if (d.type == "logical") {
    if (s.name.empty() && s.devices.empty()) fail("missing storage pool source name");
    if (d.source.name.empty()) d.source.name = d.name;
    if (d.target_path.empty()) d.target_path = "/dev/" + d.source.name;
  } else if (d.type == "disk") {
    if (s.devices.size() != 1) fail("pool type 'disk' needs exactly one <source><device path=.../>");
    if (!s.format.empty()) check_enum(s.format, {"unknown", "dos", "dvh", "gpt", "mac", "bsd", "pc98", "sun", "lvm2"}, "pool source format");
    if (d.target_path.empty()) d.target_path = "/dev";
  } else if (d.type == "iscsi") {
    if (s.host_name.empty()) fail("missing storage pool source host name");
    if (s.devices.empty()) fail("missing storage pool source device path");
    if (d.target_path.empty()) d.target_path = "/dev/disk/by-path";
  }
  return d;
}

std::string write_pool_xml(const PoolDef& d) {
  pugi::xml_document doc;
  xml_node root = doc.append_child("pool");
  root.append_attribute("type") = d.type.c_str();
  text_child(root, "name", d.name);
  text_child(root, "uuid", d.uuid);
  sized(root, "capacity", d.capacity);
  sized(root, "allocation", d.allocation);
  sized(root, "available", d.available);
  {
    const PoolSource& s = d.source;
    xml_node n = root.append_child("source");
    if (!s.host_name.empty()) {
      xml_node h = n.append_child("host");
      h.append_attribute("name") = s.host_name.c_str();
      set_attr(h, "port", s.host_port);
    }
    for (const auto& dv : s.devices) n.append_child("device").append_attribute("path") = dv.c_str();
    if (!s.dir.empty()) n.append_child("dir").append_attribute("path") = s.dir.c_str();
    if (!s.adapter_xml.empty()) n.append_buffer(s.adapter_xml.data(), s.adapter_xml.size());
    if (!s.name.empty()) text_child(n, "name", s.name);
    if (!s.format.empty()) n.append_child("format").append_attribute("type") = s.format.c_str();
    if (!s.initiator_iqn.empty()) n.append_child("initiator").append_child("iqn").append_attribute("name") = s.initiator_iqn.c_str();
    add_children(n, s.extras);
    if (!n.first_child()) n.append_child(kOpenClose);
  }
  if (!d.target_path.empty() || !d.target_perms.empty()) {
    xml_node t = root.append_child("target");
    if (!d.target_path.empty()) text_child(t, "path", d.target_path);
    write_perms(t, d.target_perms);
  }
  add_children(root, d.extras);
  return write(doc);
}

VolDef parse_vol_xml(const std::string& text) {
  pugi::xml_document doc;
  xml_node root = parse_root(doc, text, "volume");
  VolDef v;
  v.type = attr(root, "type");
  v.extras = extras(root, {"type"}, {"name", "key", "capacity", "allocation", "physical", "source", "target", "backingStore"});
  v.extras.attrs.clear();
  v.name = text_of(single(root, "name", "volume"));
  if (v.name.empty()) fail("volume: missing <name>");
  if (v.name.find('/') != std::string::npos) fail("volume name '{}' cannot contain '/'", v.name);
  if (xml_node c = single(root, "capacity", "volume")) v.capacity = parse_sized(c, "volume capacity");
  else fail("volume '{}': missing capacity element", v.name);
  if (xml_node a = single(root, "allocation", "volume")) {
    v.allocation = parse_sized(a, "volume allocation");
    v.allocation_given = true;
  }
  if (xml_node t = single(root, "target", "volume")) {
    v.target_path = text_of(t.child("path"));
    v.format = attr(t.child("format"), "type");
    v.target_perms = parse_perms(t.child("permissions"));
    v.compat = text_of(t.child("compat"));
    for (xml_node f : t.child("features").children())
      if (f.type() == pugi::node_element) v.features.push_back(f.name());
  }
  if (xml_node b = single(root, "backingStore", "volume")) {
    v.backing_path = text_of(b.child("path"));
    v.backing_format = attr(b.child("format"), "type");
    if (v.backing_path.empty()) fail("volume '{}': backingStore needs a <path>", v.name);
  }
  return v;
}

std::string write_vol_xml(const VolDef& v) {
  pugi::xml_document doc;
  xml_node root = doc.append_child("volume");
  set_attr(root, "type", v.type);
  text_child(root, "name", v.name);
  if (!v.key.empty()) text_child(root, "key", v.key);
  sized(root, "capacity", v.capacity);
  sized(root, "allocation", v.allocation);
  xml_node t = root.append_child("target");
  if (!v.target_path.empty()) text_child(t, "path", v.target_path);
  if (!v.format.empty()) t.append_child("format").append_attribute("type") = v.format.c_str();
  write_perms(t, v.target_perms);
  if (!v.compat.empty()) text_child(t, "compat", v.compat);
  if (!v.features.empty()) {
    xml_node f = t.append_child("features");
    for (const auto& x : v.features) f.append_child(x.c_str());
  }
  if (!v.backing_path.empty()) {
    xml_node b = root.append_child("backingStore");
    text_child(b, "path", v.backing_path);
    if (!v.backing_format.empty()) b.append_child("format").append_attribute("type") = v.backing_format.c_str();
  }
  add_children(root, v.extras);
  return write(doc);
}

std::string pretty_size(uint64_t b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[u]);
  return buf;
}

uint64_t parse_size_arg(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) fail("invalid size '{}'", text);
  return scaled_bytes(text.substr(0, i), text.substr(i), "size '" + text + "'");
}

std::string base64_encode(const uint8_t* p, size_t n) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  o.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    o += k[v >> 18];
    o += k[(v >> 12) & 63];
    o += i + 1 < n ? k[(v >> 6) & 63] : '=';
    o += i + 2 < n ? k[v & 63] : '=';
  }
  return o;
}

std::vector<uint8_t> base64_decode(const std::string& s) {
  std::vector<uint8_t> o;
  o.reserve(s.size() / 4 * 3);
  uint32_t v = 0;
  int bits = 0;
  for (char c : s) {
    int d;
    if (c >= 'A' && c <= 'Z') d = c - 'A';
    else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
    else if (c >= '0' && c <= '9') d = c - '0' + 52;
    else if (c == '+') d = 62;
    else if (c == '/') d = 63;
    else if (c == '=') break;
    else fail("invalid base64 data");
    v = (v << 6) | static_cast<uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o.push_back(static_cast<uint8_t>(v >> bits));
    }
  }
  return o;
}

}  // namespace vireo::storage
