// Storage verbs (virsh's): pool-* and vol-*.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "cli/cli.h"
#include "cli/format.h"
#include "storage/storage.h"

namespace vireo::cli {

namespace {

using client::ClientError;
using nlohmann::json;
using storage::pretty_size;

json call_or(Cli& cli, const std::string& method, const json& params, std::vector<std::string> head) {
  try {
    return cli.c().call(method, params);
  } catch (const ClientError& e) {
    if (e.code() == ClientError::kConnect) cmd_fail({e.what()});
    head.push_back(e.what());
    cmd_fail(head);
  }
}

std::string pool_name(Cli& cli, const std::string& key) {
  return call_or(cli, "pool-lookup", {{"pool", key}}, {"failed to get pool '" + key + "'"}).value("name", "");
}

// A volume named by --pool + name, or by key/path.
json vol_of(Cli& cli, const std::string& vol, const std::string& pool) {
  json p{{"volume", vol}};
  if (!pool.empty()) p["pool"] = pool_name(cli, pool);
  json r = call_or(cli, "vol-lookup", p, {"failed to get vol '" + vol + "'"});
  return json{{"pool", r.value("pool", "")}, {"volume", r.value("name", "")}, {"info", r}};
}

void say(Cli& cli, const std::string& s) {
  if (!cli.quiet) std::printf("%s\n", s.c_str());
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '\'') o += "&apos;";
    else o += c;
  }
  return o;
}

struct AsArgs {
  std::string name, type, source_host, source_path, source_dev, source_name, source_format, target;
};

// pool-define-as / pool-create-as: the XML virsh would build.
std::string pool_xml_from(const AsArgs& a) {
  std::string x = "<pool type='" + xml_escape(a.type) + "'>\n  <name>" + xml_escape(a.name) + "</name>\n";
  std::string src;
  if (!a.source_host.empty()) src += "    <host name='" + xml_escape(a.source_host) + "'/>\n";
  if (!a.source_dev.empty()) src += "    <device path='" + xml_escape(a.source_dev) + "'/>\n";
  if (!a.source_path.empty()) src += "    <dir path='" + xml_escape(a.source_path) + "'/>\n";
  if (!a.source_format.empty()) src += "    <format type='" + xml_escape(a.source_format) + "'/>\n";
  if (!a.source_name.empty()) src += "    <name>" + xml_escape(a.source_name) + "</name>\n";
  if (!src.empty()) x += "  <source>\n" + src + "  </source>\n";
  if (!a.target.empty()) x += "  <target>\n    <path>" + xml_escape(a.target) + "</path>\n  </target>\n";
  return x + "</pool>\n";
}

}  // namespace

void add_storage_verbs(Verbs& v) {
  Cli& cli = v.cli();
  struct Opts {
    std::string pool, file, vol, newname, capacity, allocation, format, backing, backing_format, inputpool, algorithm, type;
    AsArgs as;
    bool all = false, inactive = false, details = false, name = false, uuid = false, autostart = false,
         no_autostart = false, persistent = false, transient = false, disable = false, build = false,
         overwrite = false, no_overwrite = false, delta = false, shrink = false, prealloc_metadata = false;
    uint64_t offset = 0, length = 0;
  };
  auto o = std::make_shared<Opts>();

  // ---------------------------------------------------------------- pools
  auto* list = v.add("pool-list", "list pools", [&cli, o] {
    std::vector<std::vector<std::string>> rows;
    if (o->details) rows.push_back({"Name", "State", "Autostart", "Persistent", "Capacity", "Allocation", "Available"});
    else rows.push_back({"Name", "State", "Autostart"});
    for (const json& p : cli.c().call("pool-list")) {
      const bool active = p.value("active", false);
      if (o->inactive && active) continue;
      if (!o->all && !o->inactive && !active) continue;
      if (o->persistent && !p.value("persistent", false)) continue;
      if (o->transient && p.value("persistent", false)) continue;
      if (o->autostart && !p.value("autostart", false)) continue;
      if (o->no_autostart && p.value("autostart", false)) continue;
      if (!o->type.empty() && ("," + o->type + ",").find("," + p.value("type", "") + ",") == std::string::npos) continue;
      if (o->name || o->uuid) {
        if (o->uuid && o->name) std::printf("%s %s\n", p.value("uuid", "").c_str(), p.value("name", "").c_str());
        else std::printf("%s\n", (o->uuid ? p.value("uuid", "") : p.value("name", "")).c_str());
        continue;
      }
      std::vector<std::string> r = {p.value("name", ""), o->details ? p.value("state", "") : active ? "active" : "inactive",
                                    p.value("autostart", false) ? "yes" : "no"};
      if (o->details) {
        r.push_back(p.value("persistent", false) ? "yes" : "no");
        for (const char* k : {"capacity", "allocation", "available"})
          r.push_back(active ? pretty_size(p.value(k, uint64_t{0})) : "-");
      }
      rows.push_back(r);
    }
    if (!o->name && !o->uuid) write_stdout(format_table(rows, cli.quiet));
    return 0;
  });
  list->add_flag("--all", o->all, "list inactive & active pools");
  list->add_flag("--inactive", o->inactive, "list inactive pools");
  list->add_flag("--details", o->details, "display extended details for pools");
  list->add_flag("--persistent", o->persistent, "list persistent pools");
  list->add_flag("--transient", o->transient, "list transient pools");
  list->add_flag("--autostart", o->autostart, "list pools with autostart enabled");
  list->add_flag("--no-autostart", o->no_autostart, "list pools with autostart disabled");
  list->add_flag("--name", o->name, "list pool names only");
  list->add_flag("--uuid", o->uuid, "list UUID of active pools only");
  list->add_option("--type", o->type, "only list pool of specified type(s) (if supported)");

  for (bool create : {false, true}) {
    auto* s = v.add(create ? "pool-create" : "pool-define",
                    create ? "create a pool from an XML file" : "define an inactive persistent storage pool from an XML file",
                    [&cli, o, create] {
                      const std::string xml = read_xml_file(o->file);
                      json r = call_or(cli, create ? "pool-create" : "pool-define", {{"xml", xml}, {"build", o->build}},
                                       {std::string(create ? "Failed to create pool from " : "Failed to define pool from ") + o->file});
                      say(cli, "Pool " + r.value("name", "") + (create ? " created from " : " defined from ") + o->file);
                      return 0;
                    });
    s->add_option("file", o->file, "file containing an XML pool description")->required();
    if (create) s->add_flag("--build", o->build, "build the pool as normal");
  }
  for (bool create : {false, true}) {
    auto* s = v.add(create ? "pool-create-as" : "pool-define-as",
                    create ? "create a pool from a set of args" : "define a pool from a set of args", [&cli, o, create] {
                      json r = call_or(cli, create ? "pool-create" : "pool-define", {{"xml", pool_xml_from(o->as)}, {"build", o->build}},
                                       {std::string(create ? "Failed to create pool " : "Failed to define pool ") + o->as.name});
                      say(cli, "Pool " + r.value("name", "") + (create ? " created" : " defined"));
                      return 0;
                    });
    s->add_option("name", o->as.name, "name of the pool")->required();
    s->add_option("type", o->as.type, "type of the pool")->required();
    s->add_option("--source-host", o->as.source_host, "source-host for underlying storage");
    s->add_option("--source-path", o->as.source_path, "source path for underlying storage");
    s->add_option("--source-dev", o->as.source_dev, "source device for underlying storage");
    s->add_option("--source-name", o->as.source_name, "source name for underlying storage");
    s->add_option("--source-format", o->as.source_format, "format for underlying storage");
    s->add_option("--target", o->as.target, "target for underlying storage");
    if (create) s->add_flag("--build", o->build, "build the pool as normal");
  }
  auto pool_arg = [o](CLI::App* s) {
    s->add_option("pool", o->pool, "pool name or uuid")->required();
    return s;
  };
  struct Act {
    const char* verb;
    const char* help;
    const char* fail;
    const char* done;
  };
  for (const Act& a : {Act{"pool-start", "start a (previously defined) inactive pool", "Failed to start pool ", " started"},
                       Act{"pool-destroy", "destroy (stop) a pool", "Failed to destroy pool ", " destroyed"},
                       Act{"pool-delete", "delete a pool", "Failed to delete pool ", " deleted"},
                       Act{"pool-undefine", "undefine an inactive pool", "Failed to undefine pool ", " has been undefined"},
                       Act{"pool-refresh", "refresh a pool", "Failed to refresh pool ", " refreshed"},
                       Act{"pool-build", "build a pool", "Failed to build pool ", " built"}}) {
    auto* s = pool_arg(v.add(a.verb, a.help, [&cli, o, a] {
      const std::string name = pool_name(cli, o->pool);
      call_or(cli, a.verb, {{"pool", name}, {"build", o->build}, {"overwrite", o->overwrite}}, {a.fail + name});
      say(cli, "Pool " + name + a.done);
      return 0;
    }));
    if (std::string(a.verb) == "pool-start") s->add_flag("--build", o->build, "build the pool as normal");
    if (std::string(a.verb) == "pool-build") {
      s->add_flag("--overwrite", o->overwrite, "overwrite any existing data");
      s->add_flag("--no-overwrite", o->no_overwrite, "do not overwrite any existing data");
    }
  }
  pool_arg(v.add("pool-info", "storage pool information", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    json i = call_or(cli, "pool-info", {{"pool", name}}, {});
    auto line = [](const char* k, const std::string& val) { std::printf("%-15s %s\n", k, val.c_str()); };
    line("Name:", i.value("name", ""));
    line("UUID:", i.value("uuid", ""));
    line("State:", i.value("state", ""));
    line("Persistent:", i.value("persistent", false) ? "yes" : "no");
    line("Autostart:", i.value("autostart", false) ? "yes" : "no");
    if (i.value("active", false)) {
      line("Capacity:", pretty_size(i.value("capacity", uint64_t{0})));
      line("Allocation:", pretty_size(i.value("allocation", uint64_t{0})));
      line("Available:", pretty_size(i.value("available", uint64_t{0})));
    }
    return 0;
  }));
  pool_arg(v.add("pool-uuid", "convert a pool name to pool UUID", [&cli, o] {
    std::printf("%s\n", call_or(cli, "pool-lookup", {{"pool", o->pool}}, {"failed to get pool '" + o->pool + "'"}).value("uuid", "").c_str());
    return 0;
  }));
  pool_arg(v.add("pool-name", "convert a pool UUID to pool name", [&cli, o] {
    std::printf("%s\n", pool_name(cli, o->pool).c_str());
    return 0;
  }));
  pool_arg(v.add("pool-dumpxml", "pool information in XML", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    write_stdout(call_or(cli, "pool-dumpxml", {{"pool", name}, {"inactive", o->inactive}}, {}).value("xml", ""));
    return 0;
  }))->add_flag("--inactive", o->inactive, "show inactive defined XML");
  pool_arg(v.add("pool-edit", "edit XML configuration for a storage pool", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    const std::string xml = call_or(cli, "pool-dumpxml", {{"pool", name}, {"inactive", true}}, {}).value("xml", "");
    auto edited = cli.edit_text(xml);
    if (!edited) {
      std::printf("Pool %s XML configuration not changed.\n", name.c_str());
      return 0;
    }
    call_or(cli, "pool-define", {{"xml", *edited}}, {"Failed. The definition of pool '" + name + "' was not changed."});
    std::printf("Pool %s XML configuration edited.\n", name.c_str());
    return 0;
  }));
  pool_arg(v.add("pool-autostart", "autostart a pool", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    call_or(cli, "pool-autostart", {{"pool", name}, {"enable", !o->disable}},
            {std::string("failed to ") + (o->disable ? "unmark" : "mark") + " pool " + name + " as autostarted"});
    say(cli, "Pool " + name + (o->disable ? " unmarked" : " marked") + " as autostarted");
    return 0;
  }))->add_flag("--disable", o->disable, "disable autostarting");

  // ---------------------------------------------------------------- volumes
  pool_arg(v.add("vol-list", "list vols", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    json vols = call_or(cli, "vol-list", {{"pool", name}}, {"Failed to list volumes"});
    std::vector<std::vector<std::string>> rows;
    if (o->details) rows.push_back({"Name", "Path", "Type", "Capacity", "Allocation"});
    else rows.push_back({"Name", "Path"});
    for (const json& vol : vols) {
      std::vector<std::string> r = {vol.value("name", ""), vol.value("path", "")};
      if (o->details) {
        r.push_back(vol.value("type", ""));
        r.push_back(pretty_size(vol.value("capacity", uint64_t{0})));
        r.push_back(pretty_size(vol.value("allocation", uint64_t{0})));
      }
      rows.push_back(r);
    }
    write_stdout(format_table(rows, cli.quiet));
    return 0;
  }))->add_flag("--details", o->details, "display extended details for volumes");

  auto vol_args = [o](CLI::App* s) {
    s->add_option("vol", o->vol, "vol name, key or path")->required();
    s->add_option("--pool", o->pool, "pool name or uuid");
    return s;
  };
  auto* vc = v.add("vol-create", "create a vol from an XML file", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    const std::string xml = read_xml_file(o->file);
    call_or(cli, "vol-create", {{"pool", name}, {"xml", xml}}, {"Failed to create vol from " + o->file});
    say(cli, "Vol " + storage::parse_vol_xml(xml).name + " created from " + o->file);
    return 0;
  });
  pool_arg(vc)->add_option("file", o->file, "file containing an XML vol description")->required();
  vc->add_flag("--prealloc-metadata", o->prealloc_metadata, "preallocate metadata (for qcow2 instead of full allocation)");
  auto* vca = v.add("vol-create-as", "create a volume from a set of args", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    std::string x = "<volume>\n  <name>" + xml_escape(o->vol) + "</name>\n  <capacity>" +
                    std::to_string(storage::parse_size_arg(o->capacity)) + "</capacity>\n";
    if (!o->allocation.empty()) x += "  <allocation>" + std::to_string(storage::parse_size_arg(o->allocation)) + "</allocation>\n";
    if (!o->format.empty()) x += "  <target>\n    <format type='" + xml_escape(o->format) + "'/>\n  </target>\n";
    if (!o->backing.empty()) {
      // --backing-vol names a volume (of this pool) or a path.
      std::string path = o->backing;
      try {
        path = cli.c().call("vol-lookup", {{"pool", name}, {"volume", o->backing}}).value("path", o->backing);
      } catch (const ClientError&) {
      }
      x += "  <backingStore>\n    <path>" + xml_escape(path) + "</path>\n";
      if (!o->backing_format.empty()) x += "    <format type='" + xml_escape(o->backing_format) + "'/>\n";
      x += "  </backingStore>\n";
    }
    x += "</volume>\n";
    call_or(cli, "vol-create", {{"pool", name}, {"xml", x}}, {"Failed to create vol " + o->vol});
    say(cli, "Vol " + o->vol + " created");
    return 0;
  });
  pool_arg(vca)->add_option("name", o->vol, "name of the volume")->required();
  vca->add_option("capacity", o->capacity, "size of the vol, as scaled integer (default bytes)")->required();
  vca->add_option("--allocation", o->allocation, "initial allocation size, as scaled integer (default bytes)");
  vca->add_option("--format", o->format, "file format type raw,qcow2");
  vca->add_option("--backing-vol", o->backing, "the backing volume if taking a snapshot");
  vca->add_option("--backing-vol-format", o->backing_format, "format of backing volume if taking a snapshot");
  vca->add_flag("--prealloc-metadata", o->prealloc_metadata, "preallocate metadata (for qcow2 instead of full allocation)");
  auto* vcf = v.add("vol-create-from", "create a vol, using another volume as input", [&cli, o] {
    const std::string name = pool_name(cli, o->pool);
    const std::string xml = read_xml_file(o->file);
    json src = vol_of(cli, o->vol, o->inputpool);
    call_or(cli, "vol-create", {{"pool", name}, {"xml", xml}, {"from_pool", src["pool"]}, {"from_volume", src["volume"]}},
            {"Failed to create vol from " + o->file});
    say(cli, "Vol " + storage::parse_vol_xml(xml).name + " created from input vol " + src.value("volume", ""));
    return 0;
  });
  pool_arg(vcf)->add_option("file", o->file, "file containing an XML vol description")->required();
  vcf->add_option("vol", o->vol, "input vol name or key")->required();
  vcf->add_option("--inputpool", o->inputpool, "pool name or uuid of the input volume's pool");
  auto* clone = v.add("vol-clone", "clone a volume", [&cli, o] {
    json src = vol_of(cli, o->vol, o->pool);
    json info = src["info"];
    std::string x = "<volume>\n  <name>" + xml_escape(o->newname) + "</name>\n  <capacity>" +
                    std::to_string(info.value("capacity", uint64_t{0})) + "</capacity>\n  <target>\n    <format type='" +
                    xml_escape(info.value("format", "raw")) + "'/>\n  </target>\n</volume>\n";
    call_or(cli, "vol-create", {{"pool", src["pool"]}, {"xml", x}, {"from_pool", src["pool"]}, {"from_volume", src["volume"]}},
            {"Failed to clone vol from " + src.value("volume", "")});
    say(cli, "Vol " + o->newname + " cloned from " + src.value("volume", ""));
    return 0;
  });
  vol_args(clone)->add_option("newname", o->newname, "clone name")->required();
  vol_args(v.add("vol-info", "storage vol information", [&cli, o] {
    json i = vol_of(cli, o->vol, o->pool)["info"];
    auto line = [](const char* k, const std::string& val) { std::printf("%-15s %s\n", k, val.c_str()); };
    line("Name:", i.value("name", ""));
    line("Type:", i.value("type", ""));
    line("Capacity:", pretty_size(i.value("capacity", uint64_t{0})));
    line("Allocation:", pretty_size(i.value("allocation", uint64_t{0})));
    return 0;
  }));
  vol_args(v.add("vol-dumpxml", "vol information in XML", [&cli, o] {
    json r = vol_of(cli, o->vol, o->pool);
    write_stdout(call_or(cli, "vol-dumpxml", {{"pool", r["pool"]}, {"volume", r["volume"]}}, {}).value("xml", ""));
    return 0;
  }));
  vol_args(v.add("vol-path", "returns the volume path for a given volume name or key", [&cli, o] {
    std::printf("%s\n", vol_of(cli, o->vol, o->pool)["info"].value("path", "").c_str());
    return 0;
  }));
  vol_args(v.add("vol-key", "returns the volume key for a given volume name or path", [&cli, o] {
    std::printf("%s\n", vol_of(cli, o->vol, o->pool)["info"].value("key", "").c_str());
    return 0;
  }));
  vol_args(v.add("vol-name", "returns the volume name for a given volume key or path", [&cli, o] {
    std::printf("%s\n", vol_of(cli, o->vol, o->pool)["info"].value("name", "").c_str());
    return 0;
  }));
  vol_args(v.add("vol-pool", "returns the storage pool for a given volume key or path", [&cli, o] {
    std::printf("%s\n", vol_of(cli, o->vol, o->pool).value("pool", "").c_str());
    return 0;
  }));
  vol_args(v.add("vol-delete", "delete a vol", [&cli, o] {
    json r = vol_of(cli, o->vol, o->pool);
    call_or(cli, "vol-delete", {{"pool", r["pool"]}, {"volume", r["volume"]}}, {"Failed to delete vol " + o->vol});
    say(cli, "Vol " + o->vol + " deleted");
    return 0;
  }));
  vol_args(v.add("vol-wipe", "wipe a vol", [&cli, o] {
    json r = vol_of(cli, o->vol, o->pool);
    call_or(cli, "vol-wipe", {{"pool", r["pool"]}, {"volume", r["volume"]}, {"algorithm", o->algorithm.empty() ? "zero" : o->algorithm}},
            {"Failed to wipe vol " + o->vol});
    say(cli, "Vol " + o->vol + " wiped");
    return 0;
  }))->add_option("--algorithm", o->algorithm, "perform selected wiping algorithm");
  auto* rs = vol_args(v.add("vol-resize", "resize a vol", [&cli, o] {
    json r = vol_of(cli, o->vol, o->pool);
    std::string cap = o->capacity;
    bool shrink = o->shrink;
    if (!cap.empty() && cap[0] == '-') {
      cap.erase(0, 1);
      shrink = true;
      if (!o->delta) cmd_fail({"negative size requires --delta"});
    } else if (!cap.empty() && cap[0] == '+') {
      cap.erase(0, 1);  // strtoull's leading '+', which virsh takes too
    }
    uint64_t bytes = 0;
    try {
      bytes = storage::parse_size_arg(cap);
    } catch (const std::exception&) {
      cmd_fail({"Malformed size " + o->capacity});
    }
    call_or(cli, "vol-resize", {{"pool", r["pool"]}, {"volume", r["volume"]}, {"capacity", bytes}, {"delta", o->delta}, {"shrink", shrink}},
            {"Failed to change size of volume '" + o->vol + "' to " + o->capacity});
    say(cli, "Size of volume '" + o->vol + "' successfully changed to " + o->capacity);
    return 0;
  }));
  rs->add_option("capacity", o->capacity, "new capacity for the vol, as scaled integer (default bytes)")->required();
  rs->add_flag("--delta", o->delta, "use capacity as a delta to current size, rather than the new size");
  rs->add_flag("--shrink", o->shrink, "allow the resize to shrink the volume");
  rs->add_flag("--allocate", o->prealloc_metadata, "allocate the new capacity, rather than leaving it sparse (accepted)");
  for (bool up : {true, false}) {
    auto* s = vol_args(v.add(up ? "vol-upload" : "vol-download", up ? "upload file contents to a volume" : "download volume contents to a file",
                             [&cli, o, up] {
                               json r = vol_of(cli, o->vol, o->pool);
                               const uint64_t cap = r["info"].value("capacity", uint64_t{0});
                               const uint64_t end = o->length ? std::min(cap, o->offset + o->length) : cap;
                               const int fd = up ? ::open(o->file.c_str(), O_RDONLY | O_CLOEXEC)
                                                 : ::open(o->file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                               if (fd < 0) cmd_fail({std::string("cannot open ") + o->file + ": " + std::strerror(errno)});
                               std::vector<uint8_t> buf(1 << 20);  // a request line stays well under vireod's 4 MiB limit
                               for (uint64_t off = o->offset; off < end;) {
                                 const uint64_t n = std::min<uint64_t>(buf.size(), end - off);
                                 if (up) {
                                   const ssize_t got = ::read(fd, buf.data(), n);
                                   if (got < 0) cmd_fail({std::string("cannot read ") + o->file + ": " + std::strerror(errno)});
                                   if (got == 0) break;
                                   const std::string b64 = storage::base64_encode(buf.data(), static_cast<size_t>(got));
                                   call_or(cli, "vol-upload", {{"pool", r["pool"]}, {"volume", r["volume"]}, {"offset", off}, {"data", b64}},
                                           {"cannot upload to volume " + o->vol});
                                   off += static_cast<uint64_t>(got);
                                 } else {
                                   json d = call_or(cli, "vol-download", {{"pool", r["pool"]}, {"volume", r["volume"]}, {"offset", off}, {"length", n}},
                                                    {"cannot download from volume " + o->vol});
                                   const std::string s = d.value("data", "");
                                   const std::vector<uint8_t> raw = storage::base64_decode(s);
                                   if (raw.empty()) break;
                                   if (::write(fd, raw.data(), raw.size()) != static_cast<ssize_t>(raw.size()))
                                     cmd_fail({std::string("cannot write ") + o->file + ": " + std::strerror(errno)});
                                   off += raw.size();
                                 }
                               }
                               ::close(fd);
                               return 0;
                             }));
    s->add_option("file", o->file, up ? "file" : "file")->required();
    s->add_option("--offset", o->offset, "volume offset to upload to");
    s->add_option("--length", o->length, "amount of data to upload");
  }
}

}  // namespace vireo::cli
