// vireo/config: the command-line syntax of VM settings ("key=value,key=value" items, on/off words, sizes),
// shared by vireo-vmm's flags and anything else that accepts the same spellings. The one key=value splitter
// and the one boolean parser live here. Each parser throws vireo::Error with a one-line message naming the
// flag ("--disk: unknown key 'fromat'") and returns a struct of config/vm_config.h, already validated.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/vm_config.h"

namespace vireo::config {

// "k=v,k=v" -> ordered pairs; a bare word (no '=') maps to "". Empty text or an empty item is an error.
std::vector<std::pair<std::string, std::string>> split_kv(const std::string& flag, const std::string& text);

// on/yes/true/1 and off/no/false/0 (case-insensitive); throws Error("<what>: expected on or off, got 'x'").
bool parse_on_off(const std::string& what, const std::string& text);

// "SIZE" or "size=SIZE[,hugepages=on|off][,thp=on|off][,prealloc=on|off]"; SIZE without a suffix is MiB
// (as QEMU's -m). Throws Error("--memory: ...").
MemoryConfig parse_memory_spec(const std::string& text);
// Checks a memory size for every source (flags, JSON): > 0, aligned (4 KiB, 2 MiB with hugepages), >= 2 MiB.
void validate_memory(const std::string& what, const MemoryConfig& m);

DiskConfig parse_disk(const std::string& text);           // path=F,format=raw,readonly=on,cache=none,serial=S,queues=N,engine=E
NetConfig parse_net(const std::string& text);             // tap=NAME,mac=M,queues=N
ConsoleConfig parse_console(const std::string& text);     // stdio | pty | unix=PATH
Transport parse_transport(const std::string& text);       // pci | mmio
std::array<uint8_t, 6> parse_mac(const std::string& what, const std::string& text);  // xx:xx:xx:xx:xx:xx, unicast
std::string format_mac(const std::array<uint8_t, 6>& mac);
std::string format_serial(const SerialSpec& s);  // "stdio", "none", "pty", "file=PATH", "unix=PATH"

// The vireo-vmm flags that rebuild `c` (the inverse of vmm::parse_options, defaults omitted). Throws Error when
// a value cannot be carried in a key=value flag (a path containing ',' or '=').
std::vector<std::string> to_flags(const VmConfig& c);

}  // namespace vireo::config
