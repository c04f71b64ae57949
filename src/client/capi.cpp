// The C API (vireo.h) over the C++ client.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "client/client.h"
#include "client/vireo.h"

struct vireo_conn {
  std::unique_ptr<vireo::client::Connection> c;
};

struct vireo_domain {
  vireo_conn* conn;
  vireo::client::DomainSummary s;
};

namespace {

thread_local std::string g_last_error;

template <typename F>
auto guarded(F&& f, decltype(f()) on_error) -> decltype(f()) {
  try {
    g_last_error.clear();
    return f();
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return on_error;
  } catch (...) {
    g_last_error = "unknown error";
    return on_error;
  }
}

int state_number(const std::string& s) {
  if (s == "running") return VIREO_DOMAIN_RUNNING;
  if (s == "idle") return VIREO_DOMAIN_BLOCKED;
  if (s == "paused") return VIREO_DOMAIN_PAUSED;
  if (s == "in shutdown") return VIREO_DOMAIN_SHUTDOWN;
  if (s == "shut off") return VIREO_DOMAIN_SHUTOFF;
  if (s == "crashed") return VIREO_DOMAIN_CRASHED;
  return VIREO_DOMAIN_NOSTATE;
}

const char* static_reason(const std::string& r) {
  static const char* known[] = {"unknown", "booted", "unpaused", "user", "shutdown", "destroyed",
                                "crashed", "failed", "panicked", "daemon"};
  for (const char* k : known)
    if (r == k) return k;
  return "unknown";
}

bool bad(const void* p, const char* what) {
  if (p) return false;
  g_last_error = std::string("invalid argument: ") + what + " is NULL";
  return true;
}

template <typename F>
int domain_op(vireo_domain* d, F&& f) {
  if (bad(d, "domain")) return -1;
  return guarded([&] { f(*d->conn->c, d->s.uuid.empty() ? d->s.name : d->s.uuid); return 0; }, -1);
}

}  // namespace

extern "C" {

vireo_conn* vireo_connect(const char* uri) {
  return guarded([&]() -> vireo_conn* {
    auto c = std::make_unique<vireo::client::Connection>(uri ? uri : "");
    return new vireo_conn{std::move(c)};
  }, nullptr);
}

vireo_conn* vireo_connect_readonly(const char* uri) {
  return guarded([&]() -> vireo_conn* {
    auto c = std::make_unique<vireo::client::Connection>(uri ? uri : "", true);
    return new vireo_conn{std::move(c)};
  }, nullptr);
}

void vireo_conn_close(vireo_conn* conn) { delete conn; }

const char* vireo_last_error(void) { return g_last_error.c_str(); }

vireo_domain* vireo_domain_lookup_by_name(vireo_conn* conn, const char* name) {
  if (bad(conn, "connection") || bad(name, "name")) return nullptr;
  return guarded([&]() -> vireo_domain* {
    auto s = conn->c->lookup(name);
    if (s.name != name) throw vireo::Error(std::string("Domain not found: no domain with matching name '") + name + "'");
    return new vireo_domain{conn, s};
  }, nullptr);
}

vireo_domain* vireo_domain_lookup_by_uuid(vireo_conn* conn, const char* uuid) {
  if (bad(conn, "connection") || bad(uuid, "uuid")) return nullptr;
  return guarded([&]() -> vireo_domain* { return new vireo_domain{conn, conn->c->lookup(uuid)}; }, nullptr);
}

vireo_domain* vireo_domain_define_xml(vireo_conn* conn, const char* xml) {
  if (bad(conn, "connection") || bad(xml, "xml")) return nullptr;
  return guarded([&]() -> vireo_domain* {
    auto r = conn->c->define(xml);
    return new vireo_domain{conn, conn->c->lookup(r.uuid)};
  }, nullptr);
}

vireo_domain* vireo_domain_create_xml(vireo_conn* conn, const char* xml) {
  if (bad(conn, "connection") || bad(xml, "xml")) return nullptr;
  return guarded([&]() -> vireo_domain* {
    auto r = conn->c->create(xml);
    return new vireo_domain{conn, conn->c->lookup(r.uuid)};
  }, nullptr);
}

void vireo_domain_free(vireo_domain* dom) { delete dom; }

const char* vireo_domain_get_name(const vireo_domain* dom) { return dom ? dom->s.name.c_str() : nullptr; }
const char* vireo_domain_get_uuid(const vireo_domain* dom) { return dom ? dom->s.uuid.c_str() : nullptr; }
int vireo_domain_get_id(const vireo_domain* dom) { return dom ? dom->s.id : -1; }

int vireo_domain_get_state(vireo_domain* dom, int* state, const char** reason) {
  if (bad(dom, "domain")) return -1;
  return guarded([&] {
    dom->s = dom->conn->c->domstate(dom->s.uuid);
    if (state) *state = state_number(dom->s.state);
    if (reason) *reason = static_reason(dom->s.reason);
    return 0;
  }, -1);
}

char* vireo_domain_get_xml(vireo_domain* dom) {
  if (bad(dom, "domain")) return nullptr;
  return guarded([&]() -> char* {
    std::string x = dom->conn->c->dumpxml(dom->s.uuid);
    char* out = static_cast<char*>(std::malloc(x.size() + 1));
    if (!out) throw vireo::Error("out of memory");
    std::memcpy(out, x.c_str(), x.size() + 1);
    return out;
  }, nullptr);
}

int vireo_domain_undefine(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.undefine(k); }); }
int vireo_domain_start(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.start(k); }); }
int vireo_domain_shutdown(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.shutdown(k); }); }
int vireo_domain_reboot(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.reboot(k); }); }
int vireo_domain_destroy(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.destroy(k); }); }
int vireo_domain_suspend(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.suspend(k); }); }
int vireo_domain_resume(vireo_domain* d) { return domain_op(d, [](auto& c, const std::string& k) { c.resume(k); }); }
int vireo_domain_set_autostart(vireo_domain* d, int enable) {
  return domain_op(d, [enable](auto& c, const std::string& k) { c.set_autostart(k, enable != 0); });
}

int vireo_list_domains(vireo_conn* conn, unsigned flags, vireo_domain*** domains) {
  if (bad(conn, "connection") || bad(domains, "domains")) return -1;
  return guarded([&]() -> int {
    auto all = conn->c->list();
    std::vector<vireo::client::DomainSummary> keep;
    for (auto& s : all) {
      if (flags == 0 || ((flags & VIREO_LIST_ACTIVE) && s.active) || ((flags & VIREO_LIST_INACTIVE) && !s.active))
        keep.push_back(s);
    }
    auto** arr = static_cast<vireo_domain**>(std::calloc(keep.size() + 1, sizeof(vireo_domain*)));
    if (!arr) throw vireo::Error("out of memory");
    for (size_t i = 0; i < keep.size(); ++i) arr[i] = new vireo_domain{conn, keep[i]};
    *domains = arr;
    return static_cast<int>(keep.size());
  }, -1);
}

}  // extern "C"
