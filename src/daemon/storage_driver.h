// vireod's storage driver: libvirt-style pools and volumes. Pool types dir, fs (a block device mounted at
// the target), netfs (NFS), logical (an LVM2 volume group; LVs are volumes); disk and iscsi definitions
// are accepted and kept but their start is refused (not implemented yet). File volumes are raw or qcow2
// images made through Vireo's block layer (src/block). Definitions live in <etc>/vireo/storage, active
// pools' state in <run>/vireo/storage, so a restarted vireod finds them active.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "daemon/host.h"
#include "daemon/states.h"
#include "storage/storage.h"

namespace vireo::daemon {

struct Pool {
  std::string name, uuid;
  std::optional<storage::PoolDef> config, live;
  bool active = false, autostart = false;
  std::map<std::string, storage::VolDef> vols;  // by name, after the last refresh
  bool persistent() const { return config.has_value(); }
  storage::PoolDef& current() { return live ? *live : *config; }
};

struct VolumeTarget {
  std::string path;
  std::string format;  // raw | qcow2
  bool block = false;
};

class StorageDriver : public Driver {
 public:
  explicit StorageDriver(Host& host) : h_(host) {}
  void register_methods(MethodTable& table) override;
  void load() override;
  void autostart() override;

  // `<disk type='volume'>` at domain start: the pool must be active and hold the volume.
  VolumeTarget volume_target(const std::string& pool, const std::string& volume);
  void define_default_if_missing();  // pool "default": dir at <var/lib>/vireo/images, autostart

 private:
  std::shared_ptr<Pool> find(const std::string& key);
  nlohmann::json summary(Pool& p);
  nlohmann::json define(const std::string& xml, bool create, bool build);
  void start(Pool& p);
  void stop(Pool& p);
  void set_autostart(Pool& p, bool on);
  std::pair<std::shared_ptr<Pool>, std::string> find_vol(const nlohmann::json& params);  // pool + volume name
  nlohmann::json vol_json(const storage::VolDef& v);

  // storage_backend.cpp: the per-type work
  void backend_build(const storage::PoolDef& d, bool overwrite);
  void backend_start(const storage::PoolDef& d);
  void backend_stop(const storage::PoolDef& d);
  void backend_delete(const storage::PoolDef& d);
  bool backend_is_active(const storage::PoolDef& d);
  void backend_refresh(Pool& p);
  storage::VolDef backend_create_vol(Pool& p, storage::VolDef v, const storage::VolDef* from);
  void backend_delete_vol(Pool& p, const storage::VolDef& v);
  void backend_resize_vol(Pool& p, const storage::VolDef& v, uint64_t size, bool shrink);

  std::string config_dir() const { return h_.paths.config + "/storage"; }
  std::string autostart_dir() const { return config_dir() + "/autostart"; }
  std::string run_dir() const { return h_.paths.run + "/storage"; }

  Host& h_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Pool>> pools_;
};

}  // namespace vireo::daemon
