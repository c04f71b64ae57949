// The typed VM configuration: flag syntax, validation, strict JSON, overrides, and flags <-> struct.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "config/flags.h"
#include "config/vm_config.h"

namespace vireo::config {
namespace {

using nlohmann::json;

template <typename F>
std::string msg(F fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Flags, SplitAndOnOff) {
  auto kv = split_kv("--x", "a=1,b,c=");
  ASSERT_EQ(kv.size(), 3u);
  EXPECT_EQ(kv[0], (std::pair<std::string, std::string>{"a", "1"}));
  EXPECT_EQ(kv[1], (std::pair<std::string, std::string>{"b", ""}));
  EXPECT_EQ(kv[2], (std::pair<std::string, std::string>{"c", ""}));
  EXPECT_EQ(msg([] { split_kv("--x", ""); }), "--x: empty value");
  EXPECT_EQ(msg([] { split_kv("--x", "a,"); }), "--x: empty item in 'a,'");
  for (const char* t : {"on", "YES", "true", "1"}) EXPECT_TRUE(parse_on_off("w", t)) << t;
  for (const char* t : {"off", "No", "false", "0"}) EXPECT_FALSE(parse_on_off("w", t)) << t;
  EXPECT_EQ(msg([] { parse_on_off("--native", "sideways"); }), "--native: expected on or off, got 'sideways'");
}

TEST(Flags, ParseDisk) {
  auto d = parse_disk("path=/x.img,format=raw,readonly=on,cache=none,serial=S1,queues=4,engine=threads");
  EXPECT_EQ(d.path, "/x.img");
  EXPECT_EQ(d.format, "raw");
  EXPECT_TRUE(d.read_only);
  EXPECT_TRUE(d.direct);
  EXPECT_EQ(d.serial, "S1");
  EXPECT_EQ(d.queues, 4);
  EXPECT_EQ(d.engine, "threads");
  EXPECT_FALSE(parse_disk("path=a").read_only);
  EXPECT_EQ(msg([] { parse_disk("path=a,fromat=raw"); }), "--disk: unknown key 'fromat'");
  EXPECT_EQ(msg([] { parse_disk("format=raw"); }), "--disk: path= is required");
  EXPECT_EQ(msg([] { parse_disk("path=a,readonly=maybe"); }), "--disk readonly: expected on or off, got 'maybe'");
  EXPECT_EQ(msg([] { parse_disk("path=a,format=vmdk"); }), "--disk: format must be raw or qcow2, not 'vmdk'");
  EXPECT_EQ(msg([] { parse_disk("path=a,queues=0"); }), "--disk: queues must be 1-64, not 0");
  EXPECT_EQ(msg([] { parse_disk("path=a,queues=x"); }), "--disk: queues must be a number, not 'x'");
  EXPECT_EQ(msg([] { parse_disk("path=a,serial=123456789012345678901"); }),
            "--disk: serial is at most 20 characters ('123456789012345678901' has 21)");
  EXPECT_EQ(msg([] { parse_disk("path=a,,readonly=on"); }), "--disk: empty item in 'path=a,,readonly=on'");
  EXPECT_EQ(msg([] { parse_disk("path=a,engine=aio"); }), "--disk: engine must be auto, threads or uring, not 'aio'");
}

TEST(Flags, ParseNetConsoleTransport) {
  auto n = parse_net("tap=vtap0,mac=52:54:00:aa:bb:cc,queues=2");
  EXPECT_EQ(n.tap, "vtap0");
  EXPECT_EQ(*n.mac, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}));
  EXPECT_EQ(n.queues, 2);
  EXPECT_EQ(msg([] { parse_net("mac=52:54:00:aa:bb:cc"); }), "--net: tap= is required");
  EXPECT_EQ(msg([] { parse_net("tap=x,mac=52:54:00:aa:bb"); }), "--net: bad mac '52:54:00:aa:bb' (want xx:xx:xx:xx:xx:xx)");
  EXPECT_EQ(msg([] { parse_net("tap=x,mac=01:54:00:aa:bb:cc"); }), "--net: mac '01:54:00:aa:bb:cc' is a multicast address");
  EXPECT_THROW(parse_net("tap=x,mac=52:54:00:aa:bb:zz"), Error);
  EXPECT_EQ(msg([] { parse_net("tap=waytoolonginterfacename"); }),
            "--net: tap name must be 1-15 characters, not 'waytoolonginterfacename'");
  EXPECT_EQ(msg([] { parse_net("tap=x,queues=17"); }), "--net: queues must be 1-16, not 17");
  EXPECT_EQ(parse_console("stdio").kind, ConsoleConfig::Kind::Stdio);
  EXPECT_EQ(parse_console("pty").kind, ConsoleConfig::Kind::Pty);
  auto u = parse_console("unix=/tmp/c.sock");
  EXPECT_EQ(u.kind, ConsoleConfig::Kind::Unix);
  EXPECT_EQ(u.path, "/tmp/c.sock");
  EXPECT_THROW(parse_console("file=/x"), Error);
  EXPECT_THROW(parse_console("unix="), Error);
  EXPECT_EQ(parse_transport("pci"), Transport::Pci);
  EXPECT_EQ(parse_transport("mmio"), Transport::Mmio);
  EXPECT_EQ(msg([] { parse_transport("ccw"); }), "--transport: must be pci or mmio, not 'ccw'");
}

VmConfig full_config() {
  VmConfig c;
  c.name = "vm1";
  c.arch = cpu::Arch::I686;
  c.boot = {"/k", "/i", "console=ttyS0 quiet"};
  c.memory = parse_memory_spec("size=512M,hugepages=on,prealloc=on");
  c.cpus = 4;
  c.cpu = cpu::parse_cpu_spec("custom=qemu64");
  c.native = false;
  c.serial = parse_serial_spec("file=/tmp/serial.log");
  c.api_socket = "/run/vm1.api";
  c.boot_log = "/tmp/boot.log";
  c.disks.push_back(parse_disk("path=/a.qcow2,format=qcow2,cache=none,serial=root,queues=2"));
  c.disks.push_back(parse_disk("path=/b.img,readonly=on,engine=threads"));
  c.nets.push_back(parse_net("tap=tap0,mac=52:54:00:00:00:01,queues=2"));
  c.nets.push_back(parse_net("tap=tap1"));
  c.console = parse_console("unix=/tmp/con.sock");
  c.rng = true;
  c.balloon = true;
  c.transport = Transport::Mmio;
  return c;
}

TEST(VmConfig, JsonRoundTripIsExact) {
  const VmConfig c = full_config();
  const json j = to_json(c);
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["memory"]["size"], 512ull << 20);
  EXPECT_EQ(j["disks"][0]["cache"], "none");
  EXPECT_EQ(j["nets"][0]["mac"], "52:54:00:00:00:01");
  EXPECT_FALSE(j["nets"][1].contains("mac"));
  EXPECT_EQ(j["cpu"], (json{{"mode", "custom"}, {"model", "qemu64"}}));
  EXPECT_EQ(j["arch"], "i686");
  const VmConfig back = from_json(j, "t");
  EXPECT_EQ(to_json(back), j);
  // Defaults: only the kernel is required.
  const VmConfig d = from_json(json{{"boot", {{"kernel", "/k"}}}}, "t");
  EXPECT_EQ(to_json(d), to_json([] {
              VmConfig x;
              x.boot.kernel = "/k";
              return x;
            }()));
}

TEST(VmConfig, StrictJsonErrorsNameTheKey) {
  auto err = [](const json& j) { return msg([&] { from_json(j, "vm.json"); }); };
  const json base = {{"boot", {{"kernel", "/k"}}}};
  auto with = [&](const std::string& k, const json& v) {
    json j = base;
    j[k] = v;
    return j;
  };
  EXPECT_EQ(err(json::array()), "vm.json: expected an object");
  EXPECT_EQ(err(json::object()), "vm.json: boot: missing");
  EXPECT_EQ(err(with("memroy", 1)), "vm.json: memroy: unknown key");
  EXPECT_EQ(err(with("memory", {{"size", "1G"}})), "vm.json: memory.size: expected an unsigned number");
  EXPECT_EQ(err(with("memory", {{"size", 4097}})), "vm.json: memory: 4097 bytes is not a multiple of 4 KiB");
  EXPECT_EQ(err(with("cpus", 300)), "vm.json: --cpus 300: at most 254 vCPUs are supported (8-bit APIC ids)");
  EXPECT_EQ(err(with("cpus", -1)), "vm.json: cpus: expected an unsigned number");
  EXPECT_EQ(err(with("cpus", 1ull << 40)), "vm.json: cpus: 1099511627776 is out of range (0..4294967295)");
  EXPECT_EQ(err(with("disks", json::array({{{"path", "/a"}, {"format", "vmdk"}}}))),
            "vm.json: disks[0]: format must be raw or qcow2, not 'vmdk'");
  EXPECT_EQ(err(with("disks", json::array({{{"file", "/a"}}}))), "vm.json: disks[0].path: missing");
  EXPECT_EQ(err(with("nets", json::array({{{"tap", "t"}, {"mac", "ff:00:00:00:00:00"}}}))),
            "vm.json: nets[0].mac: mac 'ff:00:00:00:00:00' is a multicast address");
  EXPECT_EQ(err(with("serial", {{"kind", "tcp"}})), "vm.json: serial.kind: unknown kind 'tcp' (stdio, none, file, pty, unix)");
  EXPECT_EQ(err(with("transport", "ccw")), "vm.json: transport: must be pci or mmio, not 'ccw'");
  EXPECT_EQ(err(with("version", 2)), "vm.json: configuration version 2 is not supported (this vireo-vmm reads 1)");
  EXPECT_EQ(err(with("rng", "yes")), "vm.json: rng: expected true or false");
  EXPECT_EQ(err(with("name", "")), "vm.json: --name: must not be empty");
  EXPECT_EQ(err(with("arch", "aarch64")), "vm.json: arch: unknown arch 'aarch64' (expected x86_64 or i686)");
  EXPECT_EQ(err(with("arch", 32)), "vm.json: arch: expected a string");
}

TEST(VmConfig, FileLoadAndAtomicWrite) {
  const std::string path = ::testing::TempDir() + "/vm-config-test.json";
  write_vm_config(path, full_config());
  EXPECT_EQ(to_json(load_vm_config(path)), to_json(full_config()));
  { std::ofstream(path) << "{ not json"; }
  EXPECT_EQ(msg([&] { load_vm_config(path); }).rfind(path + ": not valid JSON: ", 0), 0u);
  std::filesystem::remove(path);
  EXPECT_EQ(msg([&] { load_vm_config(path); }), "--config " + path + ": no such file or directory");
}

TEST(VmConfig, FlagsRebuildTheConfig) {
  VmConfig c = full_config();
  c.serial = parse_serial_spec("unix=/tmp/s.sock");
  const auto f = to_flags(c);
  const std::vector<std::string> want = {
      "--name", "vm1", "--kernel", "/k", "--arch", "i686", "--initrd", "/i", "--cmdline", "console=ttyS0 quiet", "--memory",
      "size=512M,hugepages=on,prealloc=on", "--cpus", "4", "--cpu", "custom=qemu64", "--native", "off", "--serial",
      "unix=/tmp/s.sock", "--api-socket", "/run/vm1.api", "--boot-log", "/tmp/boot.log", "--disk",
      "path=/a.qcow2,format=qcow2,cache=none,serial=root,queues=2", "--disk", "path=/b.img,readonly=on,engine=threads",
      "--net", "tap=tap0,mac=52:54:00:00:00:01,queues=2", "--net", "tap=tap1", "--console", "unix=/tmp/con.sock",
      "--rng", "--balloon", "--transport", "mmio"};
  EXPECT_EQ(f, want);
  c.disks[0].path = "/a,b";
  EXPECT_EQ(msg([&] { to_flags(c); }), "disk /a,b: '/a,b' contains ',' or '=', which vireo-vmm options cannot carry");
}

TEST(VmConfig, HostOverrides) {
  VmConfig c = full_config();
  HostOverrides o;
  o.serial = parse_serial_spec("pty");
  o.api_socket = "/run/new.api";
  o.disks = std::vector<DiskConfig>{parse_disk("path=/moved/a.qcow2,serial=root,queues=2"),
                                    parse_disk("path=/moved/b.img,readonly=on")};
  o.nets = std::vector<NetConfig>{parse_net("tap=tapA,queues=2"), parse_net("tap=tapB")};
  apply_overrides(c, o);
  EXPECT_EQ(c.serial.kind, SerialSpec::Kind::Pty);
  EXPECT_EQ(c.api_socket, "/run/new.api");
  EXPECT_EQ(c.disks[0].path, "/moved/a.qcow2");
  EXPECT_EQ(c.disks[0].format, "qcow2");  // kept
  EXPECT_FALSE(c.disks[0].direct);        // host-side: taken from the override
  EXPECT_EQ(c.disks[1].engine, "auto");
  EXPECT_EQ(c.nets[0].tap, "tapA");
  EXPECT_EQ(format_mac(*c.nets[0].mac), "52:54:00:00:00:01");  // guest-visible: kept

  VmConfig d = full_config();
  HostOverrides bad;
  bad.disks = std::vector<DiskConfig>{parse_disk("path=/x")};
  EXPECT_EQ(msg([&] { apply_overrides(d, bad); }), "--disk: 1 given, the saved VM has 2 (give all of them, in order)");
  bad.disks = std::vector<DiskConfig>{parse_disk("path=/x,serial=other,queues=2"), parse_disk("path=/y,readonly=on")};
  EXPECT_EQ(msg([&] { apply_overrides(d, bad); }), "--disk 0: serial differs from the saved VM");
  HostOverrides mac;
  mac.nets = std::vector<NetConfig>{parse_net("tap=t,mac=52:54:00:00:00:09,queues=2"), parse_net("tap=u")};
  EXPECT_EQ(msg([&] { apply_overrides(d, mac); }), "--net 0: mac differs from the saved VM");
}

}  // namespace
}  // namespace vireo::config
