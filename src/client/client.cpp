#include "client/client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <strings.h>

namespace vireo::client {

using nlohmann::json;

std::string socket_from_uri(const std::string& uri) {
  Uri u = parse_uri(uri);
  if (u.kind != Uri::Kind::Unix) throw ClientError(ClientError::kConnect, "'" + uri + "' is not a local URI");
  return u.socket.empty() ? default_socket_path(false) : u.socket;
}

Connection::Connection(const std::string& uri, bool readonly) : uri_(parse_uri(uri)), readonly_(readonly) {
  transports_.push_back(open_transport(uri_, readonly_));
  ch_ = LineChannel(transports_.back()->take_fd());
  call("hello", readonly_ ? json{{"readonly", true}} : json::object());
}

Connection::~Connection() {
  ch_ = LineChannel();  // close the stream before the transports behind it wind down
  transports_.clear();
}

json Connection::call(const std::string& method, const json& params) {
  std::lock_guard<std::mutex> g(mu_);
  const uint64_t id = next_id_++;
  json req{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
  const bool sent = ch_.write_line(req.dump());
  auto line = ch_.read_line();  // read even if sending failed: vireod may have said why it hung up
  if (!line) {
    std::string detail = transports_.empty() ? "" : transports_.front()->failure_detail();
    if (!detail.empty()) throw ClientError(ClientError::kConnect, detail);
    throw ClientError(ClientError::kConnect, sent ? "vireod closed the connection" : "lost connection to vireod");
  }
  json r;
  try {
    r = json::parse(*line);
  } catch (const std::exception&) {
    throw ClientError(ClientError::kConnect, "malformed reply from vireod");
  }
  if (r.contains("error")) {
    const json& e = r["error"];
    throw ClientError(e.value("code", 0), e.value("message", std::string("unknown error")));
  }
  return r.value("result", json());
}

DomainSummary summary_from_json(const json& j) {
  DomainSummary s;
  s.name = j.value("name", "");
  s.uuid = j.value("uuid", "");
  s.id = j.value("id", -1);
  s.state = j.value("state", "");
  s.reason = j.value("reason", "");
  s.active = j.value("active", false);
  s.persistent = j.value("persistent", false);
  s.autostart = j.value("autostart", false);
  return s;
}

json Connection::version() { return call("version"); }

std::vector<DomainSummary> Connection::list() {
  std::vector<DomainSummary> out;
  for (const auto& j : call("list")) out.push_back(summary_from_json(j));
  // virsh's order: running domains by id, then the others by name (case-insensitive).
  std::sort(out.begin(), out.end(), [](const DomainSummary& a, const DomainSummary& b) {
    if (a.active != b.active) return a.active;
    if (a.active && a.id != b.id) return a.id < b.id;
    int c = ::strcasecmp(a.name.c_str(), b.name.c_str());
    return c != 0 ? c < 0 : a.name < b.name;
  });
  return out;
}

DomainSummary Connection::lookup(const std::string& d) { return summary_from_json(call("lookup", {{"domain", d}})); }
DomainSummary Connection::domstate(const std::string& d) { return summary_from_json(call("domstate", {{"domain", d}})); }

static DefineResult define_result(const json& j) {
  DefineResult r;
  r.name = j.value("name", "");
  r.uuid = j.value("uuid", "");
  if (j.contains("unsupported")) r.unsupported = j["unsupported"].get<std::vector<std::string>>();
  if (j.contains("notes")) r.notes = j["notes"].get<std::vector<std::string>>();
  return r;
}

DefineResult Connection::define(const std::string& xml, bool validate) {
  return define_result(call("define", {{"xml", xml}, {"validate", validate}}));
}
DefineResult Connection::create(const std::string& xml, bool validate) {
  return define_result(call("create", {{"xml", xml}, {"validate", validate}}));
}
void Connection::undefine(const std::string& d) { call("undefine", {{"domain", d}}); }
void Connection::start(const std::string& d) { call("start", {{"domain", d}}); }
void Connection::shutdown(const std::string& d) { call("shutdown", {{"domain", d}}); }
void Connection::reboot(const std::string& d) { call("reboot", {{"domain", d}}); }
void Connection::destroy(const std::string& d) { call("destroy", {{"domain", d}}); }
void Connection::suspend(const std::string& d) { call("suspend", {{"domain", d}}); }
void Connection::resume(const std::string& d) { call("resume", {{"domain", d}}); }
std::string Connection::dumpxml(const std::string& d, bool inactive) {
  return call("dumpxml", {{"domain", d}, {"inactive", inactive}}).value("xml", "");
}
DomainInfo Connection::info(const std::string& d) {
  json j = call("info", {{"domain", d}});
  DomainInfo i;
  static_cast<DomainSummary&>(i) = summary_from_json(j);
  i.os_type = j.value("os_type", "");
  i.vcpus = j.value("vcpus", 0u);
  i.cpu_time_ns = j.value("cpu_time_ns", uint64_t{0});
  i.max_memory_kib = j.value("max_memory_kib", uint64_t{0});
  i.used_memory_kib = j.value("used_memory_kib", uint64_t{0});
  return i;
}
void Connection::set_autostart(const std::string& d, bool enable) { call("autostart", {{"domain", d}, {"enable", enable}}); }

UniqueFd Connection::open_console(const std::string& d, std::string& first) {
  auto t = open_transport(uri_, readonly_);
  LineChannel ch(t->take_fd());
  {
    std::lock_guard<std::mutex> g(mu_);
    transports_.push_back(std::move(t));
  }
  json req{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "console"}, {"params", {{"domain", d}}}};
  if (!ch.write_line(req.dump())) throw ClientError(ClientError::kConnect, "lost connection to vireod");
  auto line = ch.read_line();
  if (!line) throw ClientError(ClientError::kConnect, "vireod closed the connection");
  json r = json::parse(*line, nullptr, false);
  if (r.is_discarded()) throw ClientError(ClientError::kConnect, "malformed reply from vireod");
  if (r.contains("error")) throw ClientError(r["error"].value("code", 0), r["error"].value("message", std::string("error")));
  first = ch.take_buffered();
  return ch.release();
}

}  // namespace vireo::client
