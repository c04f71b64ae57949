// Domain driver: the table of domains, definitions and the RPC methods (lifecycle in domain_lifecycle.cpp).
#include "daemon/domain_driver.h"

#include <sys/stat.h>

#include <algorithm>

#include "common/error.h"

namespace vireo::daemon {

using nlohmann::json;
using Lock = std::unique_lock<std::mutex>;

void DomainDriver::register_methods(MethodTable& t) {
  using A = Access;
  t.add("list", A::kReadOnly, [this](const json&, Call&) {
    json out = json::array();
    for (auto& d : all()) out.push_back(summary(d));
    return out;
  });
  auto define_like = [this](bool create) {
    return [this, create](const json& p, Call&) {
      std::string name;
      json r = define(param_str(p, "xml"), param_bool(p, "validate"), create, name);
      if (create) {
        DomPtr d = lookup(name);
        Lock op(d->op);
        try {
          start_locked(d);
        } catch (...) {
          remove_if_transient_inactive(d);
          throw;
        }
      }
      return r;
    };
  };
  t.add("define", A::kReadWrite, define_like(false));
  t.add("create", A::kReadWrite, define_like(true));
  auto by_domain = [this](auto fn) {
    return [this, fn](const json& p, Call& c) -> json { return fn(lookup(param_str(p, "domain")), p, c); };
  };
  t.add("lookup", A::kReadOnly, by_domain([this](const DomPtr& d, const json&, Call&) { return summary(d); }));
  t.add("domstate", A::kReadOnly, by_domain([this](const DomPtr& d, const json&, Call&) { return domstate(d); }));
  t.add("dumpxml", A::kReadOnly,
        by_domain([this](const DomPtr& d, const json& p, Call&) { return dumpxml(d, param_bool(p, "inactive")); }));
  t.add("info", A::kReadOnly, by_domain([this](const DomPtr& d, const json&, Call&) { return info(d); }));
  t.add("autostart", A::kReadWrite, by_domain([this](const DomPtr& d, const json& p, Call&) {
          set_autostart(d, param_bool(p, "enable"));
          return json::object();
        }));
  t.add("console", A::kReadWrite, by_domain([this](const DomPtr& d, const json&, Call& c) { return console(d, c); }));
  // Lifecycle operations: serialized per domain, and the domain must still be the listed one.
  auto locked = [this, by_domain](auto fn) {
    return by_domain([this, fn](const DomPtr& d, const json&, Call&) -> json {
      Lock op(d->op);
      check_still_listed(d);
      return fn(d);
    });
  };
  t.add("undefine", A::kReadWrite, locked([this](const DomPtr& d) { undefine(d); return json::object(); }));
  t.add("start", A::kReadWrite, locked([this](const DomPtr& d) { start_locked(d); return summary(d); }));
  t.add("destroy", A::kReadWrite, locked([this](const DomPtr& d) { destroy_locked(d); return json::object(); }));
  t.add("suspend", A::kReadWrite, locked([this](const DomPtr& d) { suspend(d); return json::object(); }));
  t.add("resume", A::kReadWrite, locked([this](const DomPtr& d) { resume(d); return json::object(); }));
  t.add("shutdown", A::kReadWrite, locked([this](const DomPtr& d) { shutdown(d); return json::object(); }));
  t.add("reboot", A::kReadWrite, locked([this](const DomPtr& d) { reboot(d); return json::object(); }));
}

// ----------------------------------------------------------------------------------------- table

void DomainDriver::load() {
  if (auto s = try_read_file(h_.paths.state + "/next-id")) {
    try {
      next_id_ = std::max(1, std::stoi(*s));
    } catch (...) {
    }
  }
  for (const auto& name : list_dir(h_.paths.domains_dir(), ".xml")) {
    const std::string path = h_.paths.domains_dir() + "/" + name + ".xml";
    try {
      auto r = domain::parse_domain_xml(read_file(path), {.generate_uuid = false});
      if (r.def.name != name) fail("{}: holds domain '{}', expected '{}'", path, r.def.name, name);
      auto d = std::make_shared<Dom>();
      d->name = name;
      d->uuid = r.def.uuid;
      d->config = std::move(r.def);
      struct stat st{};
      d->autostart = ::lstat((h_.paths.autostart_dir() + "/" + name + ".xml").c_str(), &st) == 0;
      doms_[name] = d;
    } catch (const std::exception& e) {
      log(std::string("skipping definition: ") + e.what());
    }
  }
  for (const auto& name : list_dir(h_.paths.run_domains_dir(), ".json")) reattach(name);
}

void DomainDriver::autostart() {
  std::vector<DomPtr> todo;
  for (auto& d : all()) {
    Lock l(d->mu);
    if (d->autostart && !d->active) todo.push_back(d);
  }
  for (auto& d : todo) {
    try {
      Lock op(d->op);
      if (!d->active) start_locked(d);
      log("autostarted domain '" + d->name + "'");
    } catch (const std::exception& e) {
      log("autostart of '" + d->name + "' failed: " + e.what());
    }
  }
}

std::vector<DomPtr> DomainDriver::all() {
  Lock t(table_mu_);
  std::vector<DomPtr> out;
  for (auto& [n, d] : doms_) out.push_back(d);
  return out;
}

DomPtr DomainDriver::lookup(const std::string& key) {
  Lock t(table_mu_);
  auto it = doms_.find(key);
  if (it != doms_.end()) return it->second;
  const bool numeric = !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit) && key.size() < 9;
  const std::string uuid = domain::normalize_uuid(key);
  for (auto& [n, d] : doms_) {
    Lock l(d->mu);
    if (numeric && d->active && d->id == std::stoi(key)) return d;
    if (!uuid.empty() && d->uuid == uuid) return d;
  }
  if (!uuid.empty()) throw RpcError(kNoDomain, "Domain not found: no domain with matching uuid '" + key + "'");
  throw RpcError(kNoDomain, "Domain not found: no domain with matching name '" + key + "'");
}

void DomainDriver::check_still_listed(const DomPtr& d) {
  // The domain may have been undefined (and replaced) while we waited for its lock.
  Lock t(table_mu_);
  auto it = doms_.find(d->name);
  if (it == doms_.end() || it->second != d)
    throw RpcError(kNoDomain, "Domain not found: no domain with matching name '" + d->name + "'");
}

json DomainDriver::summary(const DomPtr& d) {
  Lock l(d->mu);
  return json{{"name", d->name},
              {"uuid", d->uuid},
              {"id", d->active ? d->id : -1},
              {"state", to_string(d->state)},
              {"reason", to_string(d->reason)},
              {"active", d->active},
              {"persistent", d->persistent()},
              {"autostart", d->autostart}};
}

json DomainDriver::define(const std::string& xml, bool validate, bool transient, std::string& name_out) {
  domain::ParseResult r;
  try {
    r = domain::parse_domain_xml(xml);
  } catch (const Error& e) {
    xml_error(e.what());
  }
  if (validate && !r.unsupported.empty()) {
    std::string list;
    for (auto& u : r.unsupported) list += (list.empty() ? "" : ", ") + u;
    throw RpcError(kUnsupported, "unsupported configuration: elements not supported by Vireo: " + list);
  }
  const std::string normalized = domain::write_domain_xml(r.def);
  const std::string name = r.def.name;
  const std::string uuid = r.def.uuid;
  name_out = name;
  Lock t(table_mu_);
  for (auto& [n, other] : doms_) {
    Lock l(other->mu);
    if (n != name && other->uuid == uuid) failed("domain '" + n + "' already exists with uuid " + uuid);
  }
  auto it = doms_.find(name);
  if (it != doms_.end()) {
    DomPtr d = it->second;
    Lock l(d->mu);
    if (d->uuid != uuid) failed("domain '" + name + "' already exists with uuid " + d->uuid);
    if (transient) failed("domain '" + name + "' already exists");  // create needs a new name
    atomic_write(h_.paths.domains_dir() + "/" + name + ".xml", normalized);
    d->config = r.def;
  } else {
    auto d = std::make_shared<Dom>();
    d->name = name;
    d->uuid = uuid;
    if (transient) {
      d->live = r.def;
    } else {
      atomic_write(h_.paths.domains_dir() + "/" + name + ".xml", normalized);
      d->config = r.def;
    }
    doms_[name] = d;
  }
  json warnings = json::array();
  for (auto& u : r.unsupported) warnings.push_back(u);
  return json{{"name", name}, {"uuid", uuid}, {"unsupported", warnings}, {"notes", r.notes}};
}

void DomainDriver::undefine(const DomPtr& d) {
  Lock t(table_mu_);
  auto it = doms_.find(d->name);
  if (it == doms_.end() || it->second != d)
    throw RpcError(kNoDomain, "Domain not found: no domain with matching name '" + d->name + "'");
  Lock l(d->mu);
  if (!d->persistent()) invalid("cannot undefine transient domain");
  remove_if_exists(h_.paths.domains_dir() + "/" + d->name + ".xml");
  remove_if_exists(h_.paths.autostart_dir() + "/" + d->name + ".xml");
  d->autostart = false;
  if (!d->active) {
    doms_.erase(it);
  } else {
    if (!d->live) d->live = d->config;
    d->config.reset();
    save_run_state(d);
  }
}

void DomainDriver::set_autostart(const DomPtr& d, bool on) {
  Lock t(table_mu_);
  Lock l(d->mu);
  if (!d->persistent()) invalid("cannot set autostart for transient domain");
  set_autostart_link(h_.paths.autostart_dir(), d->name, "../domains/" + d->name + ".xml", on);
  d->autostart = on;
}

void DomainDriver::remove_if_transient_inactive(const DomPtr& d) {
  Lock t(table_mu_);
  Lock l(d->mu);
  if (d->persistent() || d->active) return;
  auto it = doms_.find(d->name);
  if (it != doms_.end() && it->second == d) doms_.erase(it);
}

// ----------------------------------------------------------------------------------------- queries

json DomainDriver::domstate(const DomPtr& d) {
  json s = summary(d);
  bool ask;
  {
    Lock l(d->mu);
    ask = d->active && d->state == DomState::kRunning && d->shutdown_requested;
  }
  if (ask) {
    // After a shutdown request the VMM knows whether the guest is on its way down.
    try {
      if (vmm_command(d, "query-status", 2000).value("status", "") == "shutting-down") {
        s["state"] = to_string(DomState::kShutdown);
        s["reason"] = to_string(DomReason::kUser);
      }
    } catch (const std::exception&) {
    }
  }
  return s;
}

json DomainDriver::dumpxml(const DomPtr& d, bool inactive) {
  Lock l(d->mu);
  const bool live = (d->active && !inactive) || !d->config;
  std::string xml = domain::write_domain_xml(live && d->live ? *d->live : d->current());
  // A running domain's XML carries its id, as libvirt's does.
  if (live && d->active && xml.rfind("<domain type='", 0) == 0) {
    const auto q = xml.find('\'', 14);
    if (q != std::string::npos) xml.insert(q + 1, " id='" + std::to_string(d->id) + "'");
  }
  return json{{"xml", xml}};
}

json DomainDriver::info(const DomPtr& d) {
  json s = summary(d);
  Lock l(d->mu);
  const domain::DomainDef& def = d->active && d->live ? *d->live : d->current();
  s["os_type"] = def.os.type;
  s["vcpus"] = def.active_vcpus();
  s["max_memory_kib"] = def.memory_kib;
  s["used_memory_kib"] = def.current_memory_kib;
  s["cpu_time_ns"] = d->active && d->vmm_pid ? process_cpu_time_ns(d->vmm_pid) : 0;
  return s;
}

json DomainDriver::console(const DomPtr& d, Call& call) {
  {
    Lock l(d->mu);
    if (!d->active) invalid("domain is not running");
  }
  call.stream = unix_connect(base(d->name) + ".con");
  if (!call.stream) failed("cannot connect to the console of domain '" + d->name + "'");
  return json::object();
}

// ----------------------------------------------------------------------------------------- control

static void require_active(Dom& d) {
  Lock l(d.mu);
  if (!d.active) invalid("domain is not running");
}

void DomainDriver::suspend(const DomPtr& d) {
  require_active(*d);
  {
    Lock l(d->mu);
    if (d->state == DomState::kPaused) return;
  }
  vmm_command(d, "pause");
  Lock l(d->mu);
  d->state = DomState::kPaused;
  d->reason = DomReason::kUser;
  save_run_state(d);
}

void DomainDriver::resume(const DomPtr& d) {
  require_active(*d);
  {
    Lock l(d->mu);
    if (d->state != DomState::kPaused) invalid("domain is not paused");
  }
  vmm_command(d, "resume");
  Lock l(d->mu);
  d->state = DomState::kRunning;
  d->reason = DomReason::kUnpaused;
  save_run_state(d);
}

void DomainDriver::shutdown(const DomPtr& d) {
  require_active(*d);
  {
    Lock l(d->mu);
    d->shutdown_requested = true;
  }
  vmm_command(d, "shutdown");
}

void DomainDriver::reboot(const DomPtr& d) {
  require_active(*d);
  vmm_command(d, "reset");
}

}  // namespace vireo::daemon
