// Storage driver: pools and volumes table, definitions, RPC methods (per-type work in storage_backend.cpp).
#include "daemon/storage_driver.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "common/error.h"

namespace vireo::daemon {

using nlohmann::json;
using Lock = std::unique_lock<std::mutex>;
using storage::PoolDef;
using storage::VolDef;

namespace {

[[noreturn]] void no_pool(const std::string& key, bool uuid) {
  throw RpcError(kNoPool, std::string("Storage pool not found: no storage pool with matching ") + (uuid ? "uuid" : "name") +
                              " '" + key + "'");
}

}  // namespace

void StorageDriver::register_methods(MethodTable& t) {
  using A = Access;
  t.add("pool-list", A::kReadOnly, [this](const json&, Call&) {
    Lock l(mu_);
    json out = json::array();
    for (auto& [n, p] : pools_) out.push_back(summary(*p));
    return out;
  });
  t.add("pool-define", A::kReadWrite, [this](const json& p, Call&) { return define(param_str(p, "xml"), false, false); });
  t.add("pool-create", A::kReadWrite,
        [this](const json& p, Call&) { return define(param_str(p, "xml"), true, param_bool(p, "build")); });
  auto by_pool = [this](auto fn) {
    return [this, fn](const json& p, Call&) -> json {
      auto pool = find(param_str(p, "pool"));
      Lock l(mu_);
      if (!pools_.count(pool->name) || pools_[pool->name] != pool) no_pool(pool->name, false);
      return fn(*pool, p);
    };
  };
  t.add("pool-lookup", A::kReadOnly, by_pool([this](Pool& p, const json&) { return summary(p); }));
  t.add("pool-info", A::kReadOnly, by_pool([this](Pool& p, const json&) { return summary(p); }));
  t.add("pool-build", A::kReadWrite, by_pool([this](Pool& p, const json& a) {
          if (p.active) invalid("storage pool '" + p.name + "' is already active");
          try {
            backend_build(p.current(), param_bool(a, "overwrite"));
          } catch (const Error& e) {
            failed(e.what());
          }
          return json::object();
        }));
  t.add("pool-start", A::kReadWrite, by_pool([this](Pool& p, const json& a) {
          if (param_bool(a, "build") && !p.active) backend_build(p.current(), false);
          start(p);
          return summary(p);
        }));
  t.add("pool-destroy", A::kReadWrite, by_pool([this](Pool& p, const json&) {
          stop(p);
          if (!p.persistent()) pools_.erase(p.name);
          return json::object();
        }));
  t.add("pool-delete", A::kReadWrite, by_pool([this](Pool& p, const json&) {
          if (p.active) invalid("storage pool '" + p.name + "' is still active");
          try {
            backend_delete(p.current());
          } catch (const Error& e) {
            failed(e.what());
          }
          return json::object();
        }));
  t.add("pool-undefine", A::kReadWrite, by_pool([this](Pool& p, const json&) {
          if (!p.persistent()) invalid("storage pool '" + p.name + "' is not persistent");
          remove_if_exists(config_dir() + "/" + p.name + ".xml");
          remove_if_exists(autostart_dir() + "/" + p.name + ".xml");
          p.autostart = false;
          if (p.active) {
            if (!p.live) p.live = p.config;
            p.config.reset();
          } else {
            pools_.erase(p.name);
          }
          return json::object();
        }));
  t.add("pool-refresh", A::kReadWrite, by_pool([this](Pool& p, const json&) {
          if (!p.active) invalid("storage pool '" + p.name + "' is not active");
          backend_refresh(p);
          return json::object();
        }));
  t.add("pool-dumpxml", A::kReadOnly, by_pool([](Pool& p, const json& a) {
          const bool inactive = param_bool(a, "inactive") && p.config;
          PoolDef d = inactive ? *p.config : p.current();
          if (inactive || !p.active) d.capacity = d.allocation = d.available = 0;
          return json{{"xml", storage::write_pool_xml(d)}};
        }));
  t.add("pool-autostart", A::kReadWrite, by_pool([this](Pool& p, const json& a) {
          set_autostart(p, param_bool(a, "enable"));
          return json::object();
        }));
  t.add("vol-list", A::kReadOnly, by_pool([this](Pool& p, const json&) {
          if (!p.active) invalid("storage pool '" + p.name + "' is not active");
          json out = json::array();
          for (auto& [n, v] : p.vols) out.push_back(vol_json(v));
          return out;
        }));
  t.add("vol-create", A::kReadWrite, by_pool([this](Pool& p, const json& a) {
          if (!p.active) invalid("storage pool '" + p.name + "' is not active");
          VolDef v;
          try {
            v = storage::parse_vol_xml(param_str(a, "xml"));
          } catch (const Error& e) {
            xml_error(e.what());
          }
          std::optional<VolDef> from;
          if (a.contains("from_pool")) {
            auto fpi = pools_.find(param_str(a, "from_pool"));  // mu_ is held: no find()
            if (fpi == pools_.end()) no_pool(param_str(a, "from_pool"), false);
            auto& fp = fpi->second;
            auto it = fp->vols.find(param_str(a, "from_volume"));
            if (!fp->active || it == fp->vols.end())
              throw RpcError(kNoVolume, "Storage volume not found: no storage vol with matching name '" + param_str(a, "from_volume") + "'");
            from = it->second;
          }
          if (p.vols.count(v.name)) failed("storage vol '" + v.name + "' already exists");
          try {
            VolDef made = backend_create_vol(p, v, from ? &*from : nullptr);
            p.vols[made.name] = made;
            return vol_json(made);
          } catch (const RpcError&) {
            throw;
          } catch (const Error& e) {
            failed(e.what());
          }
        }));
  auto by_vol = [this](auto fn) {
    return [this, fn](const json& a, Call& c) -> json {
      auto [pool, name] = find_vol(a);
      Lock l(mu_);
      auto it = pool->vols.find(name);
      if (it == pool->vols.end()) throw RpcError(kNoVolume, "Storage volume not found: no storage vol with matching name '" + name + "'");
      return fn(*pool, it->second, a, c);
    };
  };
  t.add("vol-lookup", A::kReadOnly, by_vol([this](Pool& p, VolDef& v, const json&, Call&) {
          json j = vol_json(v);
          j["pool"] = p.name;
          return j;
        }));
  t.add("vol-dumpxml", A::kReadOnly,
        by_vol([](Pool&, VolDef& v, const json&, Call&) { return json{{"xml", storage::write_vol_xml(v)}}; }));
  t.add("vol-delete", A::kReadWrite, by_vol([this](Pool& p, VolDef& v, const json&, Call&) {
          backend_delete_vol(p, v);
          p.vols.erase(v.name);
          return json::object();
        }));
  t.add("vol-resize", A::kReadWrite, by_vol([this](Pool& p, VolDef& v, const json& a, Call&) {
          uint64_t size = param_u64(a, "capacity", 0);
          if (param_bool(a, "delta")) size = param_bool(a, "shrink") ? v.capacity - std::min(size, v.capacity) : v.capacity + size;
          if (size < v.capacity && !param_bool(a, "shrink"))
            bad_arg("Can't shrink capacity below current capacity unless shrink flag explicitly specified");
          if (size == 0) bad_arg("can't shrink capacity to 0");
          try {
            backend_resize_vol(p, v, size, param_bool(a, "shrink"));
          } catch (const Error& e) {
            failed(e.what());
          }
          backend_refresh(p);
          return json::object();
        }));
  t.add("vol-wipe", A::kReadWrite, by_vol([](Pool&, VolDef& v, const json& a, Call&) {
          const std::string alg = param_str_or(a, "algorithm", "zero");
          if (alg != "zero")
            throw RpcError(kUnsupported, "unsupported configuration: wipe algorithm '" + alg + "' is not supported (zero)");
          try {
            auto img = block::open_image(v.target_path, {.format = v.format});
            img->write_zeroes(0, img->size(), false);
            img->flush();
          } catch (const Error& e) {
            failed(e.what());
          }
          return json::object();
        }));
  // Upload/download in chunks of at most 4 MiB (base64 in the JSON), through the block layer so qcow2
  // volumes transfer their guest-visible content, as libvirt's do for raw.
  t.add("vol-download", A::kReadOnly, by_vol([](Pool&, VolDef& v, const json& a, Call&) {
          const uint64_t off = param_u64(a, "offset", 0);
          try {
            auto img = block::open_image(v.target_path, {.format = v.format, .read_only = true, .force_share = true});
            const uint64_t size = img->size();
            const uint64_t n = off >= size ? 0 : std::min<uint64_t>({param_u64(a, "length", 4 << 20), 4 << 20, size - off});
            std::vector<uint8_t> buf(n);
            if (n) img->read(off, buf);
            return json{{"data", storage::base64_encode(buf.data(), buf.size())}, {"size", size}};
          } catch (const Error& e) {
            failed(e.what());
          }
        }));
  t.add("vol-upload", A::kReadWrite, by_vol([](Pool&, VolDef& v, const json& a, Call&) {
          const uint64_t off = param_u64(a, "offset", 0);
          std::vector<uint8_t> data;
          try {
            data = storage::base64_decode(param_str(a, "data"));
          } catch (const Error& e) {
            bad_arg(e.what());
          }
          try {
            auto img = block::open_image(v.target_path, {.format = v.format});
            if (off + data.size() > img->size()) bad_arg("data beyond the end of volume '" + v.name + "'");
            img->write(off, data);
            img->flush();
          } catch (const Error& e) {
            failed(e.what());
          }
          return json::object();
        }));
}

json StorageDriver::vol_json(const VolDef& v) {
  return json{{"name", v.name}, {"key", v.key}, {"path", v.target_path}, {"type", v.type},
              {"format", v.format}, {"capacity", v.capacity}, {"allocation", v.allocation}};
}

json StorageDriver::summary(Pool& p) {
  const PoolDef& d = p.current();
  return json{{"name", p.name},
              {"uuid", p.uuid},
              {"type", d.type},
              {"state", to_string(p.active ? PoolState::kRunning : PoolState::kInactive)},
              {"active", p.active},
              {"persistent", p.persistent()},
              {"autostart", p.autostart},
              {"capacity", p.active ? d.capacity : 0},
              {"allocation", p.active ? d.allocation : 0},
              {"available", p.active ? d.available : 0}};
}

std::shared_ptr<Pool> StorageDriver::find(const std::string& key) {
  Lock l(mu_);
  auto it = pools_.find(key);
  if (it != pools_.end()) return it->second;
  const std::string uuid = xml::normalize_uuid(key);
  for (auto& [n, p] : pools_)
    if (!uuid.empty() && p->uuid == uuid) return p;
  no_pool(key, !uuid.empty());
}

std::pair<std::shared_ptr<Pool>, std::string> StorageDriver::find_vol(const json& a) {
  const std::string vol = param_str(a, "volume");
  const std::string pool = param_str_or(a, "pool", "");
  if (!pool.empty()) return {find(pool), vol};
  // No pool: the volume is named by its key or path (virsh's lookup order).
  Lock l(mu_);
  for (auto& [n, p] : pools_)
    if (p->active)
      for (auto& [vn, v] : p->vols)
        if (v.key == vol || v.target_path == vol) return {p, vn};
  throw RpcError(kNoVolume, "Storage volume not found: no storage vol with matching path '" + vol + "'");
}

void StorageDriver::load() {
  mkdirs(config_dir(), 0700);
  mkdirs(autostart_dir(), 0700);
  mkdirs(run_dir(), 0700);
  Lock l(mu_);
  for (const auto& name : list_dir(config_dir(), ".xml")) {
    const std::string path = config_dir() + "/" + name + ".xml";
    try {
      PoolDef d = storage::parse_pool_xml(read_file(path), false);
      if (d.name != name) fail("{}: holds pool '{}', expected '{}'", path, d.name, name);
      auto p = std::make_shared<Pool>();
      p->name = name;
      p->uuid = d.uuid;
      p->config = d;
      struct stat st{};
      p->autostart = ::lstat((autostart_dir() + "/" + name + ".xml").c_str(), &st) == 0;
      pools_[name] = p;
    } catch (const std::exception& e) {
      log(std::string("skipping pool definition: ") + e.what());
    }
  }
  for (const auto& name : list_dir(run_dir(), ".xml")) {
    const std::string path = run_dir() + "/" + name + ".xml";
    try {
      PoolDef d = storage::parse_pool_xml(read_file(path), false);
      auto& p = pools_[name];
      if (!p) {
        p = std::make_shared<Pool>();
        p->name = name;
        p->uuid = d.uuid;
      }
      p->live = d;
      if (!backend_is_active(d)) fail("pool '{}' is no longer available", name);
      p->active = true;
      backend_refresh(*p);
      log("pool '" + name + "' is active");
    } catch (const std::exception& e) {
      log(e.what());
      ::unlink(path.c_str());
      auto it = pools_.find(name);
      if (it != pools_.end()) {
        it->second->active = false;
        it->second->live.reset();
        if (!it->second->persistent()) pools_.erase(it);
      }
    }
  }
}

void StorageDriver::autostart() {
  Lock l(mu_);
  for (auto& [n, p] : pools_) {
    if (!p->autostart || p->active) continue;
    try {
      start(*p);
      log("autostarted pool '" + n + "'");
    } catch (const std::exception& e) {
      log("autostart of pool '" + n + "' failed: " + e.what());
    }
  }
}

void StorageDriver::define_default_if_missing() {
  {
    Lock l(mu_);
    if (pools_.count("default")) return;
  }
  define("<pool type='dir'>\n  <name>default</name>\n  <target>\n    <path>" + h_.paths.state +
             "/images</path>\n  </target>\n</pool>\n",
         false, false);
  auto p = find("default");
  Lock l(mu_);
  backend_build(p->current(), false);
  set_autostart(*p, true);
}

json StorageDriver::define(const std::string& xml, bool create, bool build) {
  PoolDef d;
  try {
    d = storage::parse_pool_xml(xml);
  } catch (const Error& e) {
    xml_error(e.what());
  }
  Lock l(mu_);
  for (auto& [n, o] : pools_) {
    if (n != d.name && o->uuid == d.uuid) failed("pool '" + n + "' is already defined with uuid " + d.uuid);
    const PoolDef& od = o->current();
    if (n != d.name && od.type == d.type && !od.target_path.empty() && od.target_path == d.target_path &&
        (d.type == "dir" || d.type == "fs" || d.type == "netfs"))
      failed("Storage source conflict with pool: '" + n + "'");
    if (n != d.name && d.type == "logical" && od.type == "logical" && od.source.name == d.source.name)
      failed("Storage source conflict with pool: '" + n + "'");
  }
  auto it = pools_.find(d.name);
  std::shared_ptr<Pool> p = it == pools_.end() ? nullptr : it->second;
  if (p) {
    if (create) failed("pool '" + d.name + "' already exists");
    if (xml.find("<uuid") != std::string::npos && p->uuid != d.uuid)
      failed("pool '" + d.name + "' already exists with uuid " + p->uuid);
    d.uuid = p->uuid;
    if (p->active && p->current().type != d.type) invalid("pool '" + d.name + "' is active; cannot change its type");
  } else {
    p = std::make_shared<Pool>();
    p->name = d.name;
    p->uuid = d.uuid;
  }
  if (create) {
    p->live = d;
    try {
      if (build) backend_build(d, false);
    } catch (const Error& e) {
      failed(e.what());
    }
    start(*p);
    pools_[d.name] = p;
    return summary(*p);
  }
  atomic_write(config_dir() + "/" + d.name + ".xml", storage::write_pool_xml([&] {
                 PoolDef c = d;
                 c.capacity = c.allocation = c.available = 0;
                 return c;
               }()));
  p->config = d;
  pools_[d.name] = p;
  return summary(*p);
}

void StorageDriver::start(Pool& p) {
  if (p.active) invalid("storage pool '" + p.name + "' is already active");
  PoolDef d = p.live ? *p.live : *p.config;
  try {
    backend_start(d);
    p.live = d;
    p.active = true;
    backend_refresh(p);
  } catch (const RpcError&) {
    p.active = false;
    if (p.persistent()) p.live.reset();
    throw;
  } catch (const Error& e) {
    p.active = false;
    if (p.persistent()) p.live.reset();
    failed(e.what());
  }
  atomic_write(run_dir() + "/" + p.name + ".xml", storage::write_pool_xml(*p.live));
}

void StorageDriver::stop(Pool& p) {
  if (!p.active) invalid("storage pool '" + p.name + "' is not active");
  try {
    backend_stop(*p.live);
  } catch (const Error& e) {
    failed(e.what());
  }
  ::unlink((run_dir() + "/" + p.name + ".xml").c_str());
  p.active = false;
  p.vols.clear();
  if (p.persistent()) p.live.reset();
}

void StorageDriver::set_autostart(Pool& p, bool on) {
  if (!p.persistent()) invalid("cannot set autostart for transient storage pool");
  set_autostart_link(autostart_dir(), p.name, "../" + p.name + ".xml", on);
  p.autostart = on;
}

VolumeTarget StorageDriver::volume_target(const std::string& pool, const std::string& volume) {
  auto p = find(pool);
  Lock l(mu_);
  if (!p->active) invalid("storage pool '" + pool + "' containing volume '" + volume + "' is not active");
  auto it = p->vols.find(volume);
  if (it == p->vols.end()) {
    backend_refresh(*p);  // made outside vireod since the last refresh?
    it = p->vols.find(volume);
  }
  if (it == p->vols.end())
    throw RpcError(kNoVolume, "Storage volume not found: no storage vol with matching name '" + volume + "'");
  return {it->second.target_path, it->second.format.empty() ? "raw" : it->second.format, it->second.type == "block"};
}

}  // namespace vireo::daemon
