// What vireod's drivers share: options, the state-root layout, logging, and the other drivers (a domain
// start resolves its networks and volumes through them). One Host per daemon.
#pragma once
#include <sys/types.h>

#include <string>

#include "daemon/config.h"
#include "daemon/rpc.h"
#include "daemon/util.h"

namespace vireo::daemon {

struct Options {
  std::string root;          // "" -> system paths
  std::string vmm;           // vireo-vmm binary
  std::string self_exe;      // this binary (runs the monitors)
  std::string group;         // extra group allowed to connect
  mode_t socket_mode = 0660;
  int start_timeout_ms = 30000;
  int stop_timeout_ms = 10000;
  bool autostart = true;
  std::string dnsmasq = "dnsmasq";  // DHCP/DNS server for virtual networks ($VIREO_DNSMASQ)
  ListenConfig listen;              // read-only socket, TLS/TCP listeners, DN allow-list (listen.h)
};

class DomainDriver;
class NetworkDriver;
class StorageDriver;
class InterfaceDriver;

// One object kind's driver: its RPC methods, its definitions on disk, its objects' lifecycle.
class Driver {
 public:
  virtual ~Driver() = default;
  virtual void register_methods(MethodTable& table) = 0;
  // Read persistent definitions and find what is still running from before a restart.
  virtual void load() = 0;
  // Start autostart objects (after every driver has loaded; networks and pools before domains).
  virtual void autostart() {}
  // Networks and pools are started before the socket opens (clients then see them up); domains, which
  // take longer, after it.
  virtual bool autostart_in_background() const { return false; }
};

struct Host {
  Options opts;
  Paths paths;
  DomainDriver* domains = nullptr;
  NetworkDriver* networks = nullptr;
  StorageDriver* storage = nullptr;
  InterfaceDriver* interfaces = nullptr;
};

void log(const std::string& msg);  // "vireod: MSG" on stderr
long long now_ms();                // monotonic

// Autostart link <dir>/NAME.xml -> `target` (relative, so a relocated root keeps working), replaced
// atomically; on=false removes it.
void set_autostart_link(const std::string& dir, const std::string& name, const std::string& target, bool on);

}  // namespace vireo::daemon
