// vireo/domain: the libvirt-style domain definition (a subset of libvirt's <domain> format) as a C++ model.
//
// parse_domain_xml() reads, validates and fills defaults; write_domain_xml() writes the normalized form
// back. Elements and attributes Vireo does not implement are kept verbatim (as XML text) next to the element
// they were found in and written back in place, so a definition never loses anything; the names of the
// unsupported elements are reported in ParseResult::unsupported.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/vm_config.h"

namespace vireo::domain {

// What the model does not understand at one element: unknown attributes and child elements, verbatim.
struct Extras {
  std::vector<std::pair<std::string, std::string>> attrs;  // name, value
  std::vector<std::string> children;                      // serialized XML of each unknown child
  bool empty() const { return attrs.empty() && children.empty(); }
};

struct Os {
  std::string type = "hvm";
  std::string arch;     // default x86_64
  std::string machine;  // recorded, not interpreted
  std::vector<std::string> boot;  // <boot dev=.../> in order
  std::string kernel, initrd, cmdline;
  std::string loader;  // recorded: Vireo boots kernels directly
  std::vector<std::pair<std::string, std::string>> loader_attrs;
  std::string nvram;
  std::vector<std::pair<std::string, std::string>> nvram_attrs;
  Extras extras;
};

struct CpuFeature {
  std::string policy;  // force|require|optional|disable|forbid
  std::string name;
};

struct Cpu {
  bool present = false;  // <cpu> given at all
  std::string mode;      // custom|host-model|host-passthrough|maximum
  std::string match, check, migratable;
  std::string model, model_fallback, model_vendor_id;
  std::string vendor;
  unsigned sockets = 0, dies = 0, clusters = 0, cores = 0, threads = 0;  // 0: no <topology>
  std::vector<CpuFeature> features;
  Extras extras;
};

struct Disk {
  std::string type = "file";   // file|block|volume
  std::string device = "disk";  // disk|cdrom|floppy|lun
  std::string driver_name, driver_type, cache, io, discard;
  std::vector<std::pair<std::string, std::string>> driver_extra;
  std::string source;  // file= or dev= (type volume: resolved to the volume's path at start)
  std::string source_pool, source_volume;  // type='volume': <source pool='P' volume='V'/>
  std::string target_dev, target_bus;
  bool readonly = false, shareable = false;
  std::string serial;
  Extras extras;
};

struct Interface {
  std::string type;  // bridge|network|ethernet
  std::string mac;
  std::string source;  // bridge name / network name (empty for ethernet)
  std::string portgroup;  // type='network': <source portgroup='...'>
  std::string vlan_xml, virtualport_xml;  // <vlan>, <virtualport> verbatim (the daemon resolves them)
  std::string target_dev;
  std::string model;
  Extras extras;
};

// <serial> and <console> share the char-device shape.
struct CharDev {
  std::string kind;  // "serial" or "console"
  std::string type;  // pty|file|unix|stdio|null
  std::string source_path;  // file/unix path
  std::string source_mode;  // unix: bind|connect
  std::string target_type;  // console: serial|virtio; serial: isa-serial|...
  std::optional<unsigned> target_port;
  std::vector<std::string> target_children;  // e.g. <model name='isa-serial'/>, kept verbatim
  Extras extras;
};

struct Rng {
  std::string model = "virtio";
  std::string backend_model = "random";
  std::string backend;  // /dev/urandom
  Extras extras;
};

struct Memballoon {
  bool present = false;
  std::string model = "virtio";  // virtio|none
  Extras extras;
};

struct Devices {
  std::string emulator;  // recorded and ignored (vireod always runs vireo-vmm)
  std::vector<Disk> disks;
  std::vector<std::string> controllers;  // accepted, kept verbatim
  std::vector<Interface> interfaces;
  std::vector<CharDev> serials;
  std::vector<CharDev> consoles;
  Memballoon memballoon;
  std::vector<Rng> rngs;
  Extras extras;
};

struct DomainDef {
  std::string type = "kvm";  // kvm|qemu
  std::string name;
  std::string uuid;  // lower-case 8-4-4-4-12
  std::string title, description;
  uint64_t memory_kib = 0;
  uint64_t current_memory_kib = 0;
  uint64_t max_memory_kib = 0;  // 0: no <maxMemory>
  unsigned max_memory_slots = 0;
  bool hugepages = false;
  Extras memory_backing_extras;
  unsigned vcpus = 1;
  unsigned vcpu_current = 0;  // 0: same as vcpus
  std::string vcpu_placement = "static";
  Os os;
  bool acpi = false, apic = false;
  Extras features_extras;
  Cpu cpu;
  std::string clock_offset;  // utc|localtime|...; empty: no <clock>
  Extras clock_extras;
  std::string on_poweroff = "destroy", on_reboot = "restart", on_crash = "destroy";
  Devices devices;
  Extras extras;  // unknown top-level elements (metadata, pm, seclabel, ...)

  unsigned active_vcpus() const { return vcpu_current ? vcpu_current : vcpus; }
};

struct ParseResult {
  DomainDef def;
  std::vector<std::string> unsupported;  // element paths, e.g. "devices/graphics", "features/pae"
  std::vector<std::string> notes;        // informational ("devices/emulator ignored: ...")
};

struct ParseOptions {
  bool generate_uuid = true;  // fill a random uuid when absent
};

// Throws vireo::Error naming element and problem ("memory: unknown unit 'MB2'").
ParseResult parse_domain_xml(const std::string& xml, const ParseOptions& opts = {});
std::string write_domain_xml(const DomainDef& def);

// Memory: value + libvirt unit (b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E,
// EiB; empty means KiB) in KiB, rounded up. `element` names the element in errors.
uint64_t parse_memory_kib(const std::string& value, const std::string& unit, const std::string& element);

std::string generate_uuid();
// Accepts 32 hex digits with or without the 8-4-4-4-12 dashes; returns the lower-case dashed form or "".
std::string normalize_uuid(const std::string& text);
bool valid_domain_name(const std::string& name);

// How vireod wires a running domain to its VMM.
struct VmmWiring {
  std::string api_socket;  // --api-socket
  std::string serial;      // --serial value chosen by the daemon ("pty", "unix=PATH", "file=PATH", "none")
};

// The VM configuration for a definition (what vireo-vmm runs, `--config`), and the same as a vireo-vmm
// command line (without argv[0]; config::to_flags). Throws Error when the definition cannot
// run on vireo-vmm (no <kernel>: Vireo has no firmware; unsupported disk/interface types).
config::VmConfig vm_config(const DomainDef& def, const VmmWiring& wiring);
std::vector<std::string> vmm_args(const DomainDef& def, const VmmWiring& wiring);

// `<interface type='bridge'>`s: the tap each needs, created and enslaved by the daemon's monitor before
// vireo-vmm runs. `net_index` counts the `--net` options of vmm_args() (one per interface, in order).
// A bridge port without <target dev> gets the kernel's next free vnetN: vmm_args() then emits
// `tap=vnet%d` (kAutoTapName), which the monitor replaces with the name it got.
inline constexpr const char* kAutoTapName = "vnet%d";
struct BridgePort {
  size_t net_index = 0;
  std::string bridge;
  std::string tap;  // a name or kAutoTapName
  std::string mac;  // the guest's; the tap gets it with the first byte 0xfe (as libvirt does)
};
std::vector<BridgePort> bridge_plan(const DomainDef& def);

}  // namespace vireo::domain
