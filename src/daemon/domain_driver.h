// vireod's domain driver: definitions (kept parsed), lifecycle of one vireo-vmm per running domain under
// a monitor process (monitor.cpp), reattach after a daemon restart, and the domain RPC methods.
#pragma once
#include <sys/types.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "daemon/host.h"
#include "daemon/states.h"
#include "domain/domain.h"

namespace vireo::daemon {

struct Dom {
  std::mutex op;  // serializes lifecycle operations (start/stop/undefine) on this domain
  std::mutex mu;  // protects everything below
  std::condition_variable cv;
  std::string name, uuid;
  std::optional<domain::DomainDef> config;  // persistent definition; empty when transient
  std::optional<domain::DomainDef> live;    // the running definition (or the transient one)
  bool autostart = false;
  bool active = false;
  int id = -1;
  DomState state = DomState::kShutoff;
  DomReason reason = DomReason::kUnknown;
  pid_t monitor_pid = 0, vmm_pid = 0;
  unsigned long long monitor_start = 0;
  uint64_t gen = 0;
  bool exited = false;
  bool destroying = false, shutdown_requested = false;
  DomState pending_state = DomState::kShutoff;  // outcome to show if an automatic restart fails
  DomReason pending_reason = DomReason::kUnknown;
  std::vector<long long> restarts;  // monotonic ms of recent automatic restarts

  bool persistent() const { return config.has_value(); }
  // The definition that describes the domain now: the live one while running (or transient).
  const domain::DomainDef& current() const { return live ? *live : *config; }
};
using DomPtr = std::shared_ptr<Dom>;

class DomainDriver : public Driver {
 public:
  explicit DomainDriver(Host& host) : h_(host) {}
  void register_methods(MethodTable& table) override;
  void load() override;
  void autostart() override;
  bool autostart_in_background() const override { return true; }

  DomPtr lookup(const std::string& key);  // name, id or uuid; throws RpcError(kNoDomain)
  // Every domain (a snapshot of the table).
  std::vector<DomPtr> all();

 private:
  nlohmann::json summary(const DomPtr& d);
  nlohmann::json define(const std::string& xml, bool validate, bool transient, std::string& name_out);
  void undefine(const DomPtr& d);
  void set_autostart(const DomPtr& d, bool on);
  void remove_if_transient_inactive(const DomPtr& d);
  void check_still_listed(const DomPtr& d);
  nlohmann::json dumpxml(const DomPtr& d, bool inactive);
  nlohmann::json info(const DomPtr& d);
  nlohmann::json domstate(const DomPtr& d);
  void suspend(const DomPtr& d);
  void resume(const DomPtr& d);
  void shutdown(const DomPtr& d);
  void reboot(const DomPtr& d);
  nlohmann::json console(const DomPtr& d, Call& call);

  // domain_lifecycle.cpp
  void reattach(const std::string& name);
  void start_locked(const DomPtr& d, bool restart = false);
  void destroy_locked(const DomPtr& d);
  void finish_run(const DomPtr& d, uint64_t gen);
  void watch(DomPtr d, uint64_t gen, UniqueFd pidfd);
  void reap_monitor(const DomPtr& d);
  nlohmann::json vmm_command(const DomPtr& d, const std::string& command, int timeout_ms = 10000);
  void save_run_state(const DomPtr& d);  // d->mu held
  int next_id();
  std::string base(const std::string& name) const { return h_.paths.run_domains_dir() + "/" + name; }

  Host& h_;
  std::mutex table_mu_;
  std::map<std::string, DomPtr> doms_;
  int next_id_ = 1;
};

}  // namespace vireo::daemon
