// Domain XML: golden files (XML in -> normalized XML out, -> vireo-vmm argv, -> unsupported report),
// round trips, defaults, units and error messages.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <ostream>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "domain/domain.h"

using namespace vireo::domain;

namespace {

const std::string kGolden = std::string(VIREO_SOURCE_DIR) + "/tests/unit/domain/golden/";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "<missing " + path + ">";
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += x + "\n";
  return s;
}

const VmmWiring kWiring{"/run/vireo/domains/NAME.api", "stdio"};

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, NormalizedXmlArgvAndReport) {
  const std::string name = GetParam();
  ParseResult r = parse_domain_xml(slurp(kGolden + name + ".xml"));
  const std::string xml = write_domain_xml(r.def);
  std::string args;
  try {
    args = join_lines(vmm_args(r.def, kWiring));
  } catch (const vireo::Error& e) {
    args = std::string("error: ") + e.what() + "\n";
  }
  const std::string report = join_lines(r.unsupported);
  if (std::getenv("VIREO_UPDATE_GOLDEN")) {
    std::ofstream(kGolden + name + ".out.xml") << xml;
    std::ofstream(kGolden + name + ".args") << args;
    std::ofstream(kGolden + name + ".unsupported") << report;
    GTEST_SKIP() << "golden files for " << name << " rewritten";
  }
  EXPECT_EQ(xml, slurp(kGolden + name + ".out.xml"));
  EXPECT_EQ(args, slurp(kGolden + name + ".args"));
  EXPECT_EQ(report, slurp(kGolden + name + ".unsupported"));

  // The normalized form is a fixed point: parsing it again gives the same bytes, and reports the same
  // unsupported elements (they were kept, not dropped).
  ParseResult again = parse_domain_xml(xml);
  EXPECT_EQ(write_domain_xml(again.def), xml);
  EXPECT_EQ(again.unsupported, r.unsupported);
}

INSTANTIATE_TEST_SUITE_P(Domain, Golden, ::testing::Values("i686", "libvirt-kvm", "minimal", "units-cpu", "unsupported"));

TEST(DomainXml, LibvirtExampleModel) {
  ParseResult r = parse_domain_xml(slurp(kGolden + "libvirt-kvm.xml"));
  const DomainDef& d = r.def;
  EXPECT_EQ(d.name, "web01");
  EXPECT_EQ(d.uuid, "6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10");
  EXPECT_EQ(d.memory_kib, 1048576u);
  EXPECT_EQ(d.vcpus, 2u);
  EXPECT_TRUE(d.acpi);
  EXPECT_TRUE(d.apic);
  EXPECT_EQ(d.cpu.mode, "host-passthrough");
  ASSERT_EQ(d.devices.disks.size(), 1u);
  EXPECT_EQ(d.devices.disks[0].driver_type, "qcow2");
  EXPECT_EQ(d.devices.disks[0].cache, "none");
  ASSERT_EQ(d.devices.interfaces.size(), 1u);
  EXPECT_EQ(d.devices.interfaces[0].source, "br0");
  EXPECT_EQ(d.devices.interfaces[0].mac, "52:54:00:6b:3c:58");
  EXPECT_EQ(d.devices.serials.size(), 1u);
  EXPECT_EQ(d.devices.controllers.size(), 2u);
  EXPECT_EQ(d.devices.emulator, "/usr/bin/qemu-system-x86_64");
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("devices/emulator"), std::string::npos);
}

TEST(DomainXml, GeneratesUuidAndMac) {
  const std::string xml =
      "<domain type='kvm'><name>a</name><memory>1024</memory><devices>"
      "<interface type='bridge'><source bridge='br0'/></interface></devices></domain>";
  ParseResult a = parse_domain_xml(xml), b = parse_domain_xml(xml);
  EXPECT_EQ(normalize_uuid(a.def.uuid), a.def.uuid);
  EXPECT_EQ(a.def.uuid.size(), 36u);
  EXPECT_EQ(a.def.uuid[14], '4');  // version 4
  EXPECT_NE(a.def.uuid, b.def.uuid);
  const std::string mac = a.def.devices.interfaces.at(0).mac;
  EXPECT_EQ(mac.substr(0, 9), "52:54:00:");
  EXPECT_EQ(mac.size(), 17u);
  EXPECT_EQ(a.def.devices.interfaces[0].model, "virtio");
  // Without generation the uuid stays empty.
  EXPECT_EQ(parse_domain_xml(xml, {.generate_uuid = false}).def.uuid, "");
}

TEST(DomainXml, MemoryUnits) {
  EXPECT_EQ(parse_memory_kib("1024", "", "memory"), 1024u);
  EXPECT_EQ(parse_memory_kib("1024", "KiB", "memory"), 1024u);
  EXPECT_EQ(parse_memory_kib("1024", "k", "memory"), 1024u);
  EXPECT_EQ(parse_memory_kib("1000", "KB", "memory"), 977u);  // 1,000,000 bytes, rounded up to KiB
  EXPECT_EQ(parse_memory_kib("4096", "b", "memory"), 4u);
  EXPECT_EQ(parse_memory_kib("4097", "bytes", "memory"), 5u);
  EXPECT_EQ(parse_memory_kib("64", "M", "memory"), 65536u);
  EXPECT_EQ(parse_memory_kib("64", "MiB", "memory"), 65536u);
  EXPECT_EQ(parse_memory_kib("1", "MB", "memory"), 977u);
  EXPECT_EQ(parse_memory_kib("2", "G", "memory"), 2097152u);
  EXPECT_EQ(parse_memory_kib("2", "GiB", "memory"), 2097152u);
  EXPECT_EQ(parse_memory_kib("1", "T", "memory"), 1073741824u);
  EXPECT_EQ(parse_memory_kib("1", "TiB", "memory"), 1073741824u);
}

struct BadCase {
  const char* xml;
  const char* message;
};

// Stable, readable ctest names: the expected message with non-alphanumerics as '_'.
void PrintTo(const BadCase& c, std::ostream* os) {
  std::string s;
  for (const char* p = c.message; *p && s.size() < 48; ++p) s += std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
  *os << s;
}

class BadXml : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadXml, ExactMessage) {
  try {
    parse_domain_xml(GetParam().xml);
    FAIL() << "accepted: " << GetParam().xml;
  } catch (const vireo::Error& e) {
    EXPECT_EQ(std::string(e.what()), GetParam().message);
  }
}

#define DOM(body) "<domain type='kvm'><name>x</name>" body "</domain>"
INSTANTIATE_TEST_SUITE_P(
    Domain, BadXml,
    ::testing::Values(
        BadCase{DOM("<memory unit='MB2'>64</memory>"), "memory: unknown unit 'MB2'"},
        BadCase{DOM("<memory>6x4</memory>"), "memory: invalid value '6x4'"},
        BadCase{DOM("<memory>0</memory>"), "memory: must be greater than zero"},
        BadCase{DOM("<memory>99999999999999999999999</memory>"), "memory: value '99999999999999999999999' is too large"},
        BadCase{DOM(""), "domain: missing <memory>"},
        BadCase{"<domain type='kvm'><memory>1</memory></domain>", "domain: missing <name>"},
        BadCase{"<domain><name>x</name><memory>1</memory></domain>", "domain: missing attribute 'type'"},
        BadCase{"<domain type='xen'><name>x</name></domain>", "domain: unsupported type 'xen' (expected kvm or qemu)"},
        BadCase{"<vm/>", "expected root element <domain>, found <vm>"},
        BadCase{"<domain type='kvm'>\n<name>x</name>\n<memory>1</memory>\n</domian>",
                "invalid XML at line 4: start-end tags mismatch"},
        BadCase{"<domain type='kvm'><name>a/b</name><memory>1</memory></domain>", "name: invalid domain name 'a/b'"},
        BadCase{DOM("<name>y</name><memory>1</memory>"), "domain: duplicate <name>"},
        BadCase{DOM("<uuid>1234</uuid><memory>1</memory>"), "uuid: malformed uuid '1234'"},
        BadCase{DOM("<memory>1</memory><vcpu>0</vcpu>"), "vcpu: value '0' is out of range (1..254)"},
        BadCase{DOM("<memory>1</memory><vcpu current='3'>2</vcpu>"), "vcpu current: value '3' is out of range (1..2)"},
        BadCase{DOM("<memory>1</memory><on_crash>explode</on_crash>"),
                "on_crash: unsupported value 'explode' (expected one of: destroy, restart, preserve, rename-restart, "
                "coredump-destroy, coredump-restart)"},
        BadCase{DOM("<memory>1</memory><os><type>xen</type></os>"), "os/type: unsupported OS type 'xen' (expected hvm)"},
        BadCase{DOM("<memory>1</memory><os><type arch='aarch64'>hvm</type></os>"),
                "os/type: unsupported arch 'aarch64' (expected x86_64 or i686)"},
        BadCase{DOM("<memory>1</memory><cpu mode='fast'/>"),
                "cpu mode: unsupported value 'fast' (expected one of: custom, host-model, host-passthrough, maximum)"},
        BadCase{DOM("<memory>1</memory><vcpu>2</vcpu><cpu mode='host-model'><topology sockets='2' cores='2'/></cpu>"),
                "cpu/topology: sockets*dies*clusters*cores*threads is 4 but vcpu is 2"},
        BadCase{DOM("<memory>1</memory><devices><disk type='file'><source file='/a'/></disk></devices>"),
                "devices/disk[0]: missing <target dev='...'>"},
        BadCase{DOM("<memory>1</memory><devices><disk type='file'><target dev='vda'/></disk></devices>"),
                "devices/disk[0]: missing <source>"},
        BadCase{DOM("<memory>1</memory><devices><disk><source file='/a'/><target dev='vda'/><driver type='vmdk'/></disk></devices>"),
                "devices/disk[0] driver type: unsupported value 'vmdk' (expected one of: raw, qcow2)"},
        BadCase{DOM("<memory>1</memory><devices><disk><source file='/a'/><target dev='vda'/></disk>"
                    "<disk><source file='/b'/><target dev='vda'/></disk></devices>"),
                "devices/disk: duplicate target dev 'vda'"},
        BadCase{DOM("<memory>1</memory><devices><interface type='bridge'><mac address='01:00:00:00:00:01'/>"
                    "<source bridge='b'/></interface></devices>"),
                "devices/interface[0]: invalid mac address '01:00:00:00:00:01'"},
        BadCase{DOM("<memory>1</memory><devices><interface type='bridge'/></devices>"),
                "devices/interface[0]: type 'bridge' needs <source bridge='...'>"},
        BadCase{DOM("<memory>1</memory><devices><interface type='ethernet'/></devices>"),
                "devices/interface[0]: type 'ethernet' needs <target dev='tapN'>"},
        BadCase{DOM("<memory>1</memory><devices><serial type='file'/></devices>"),
                "devices/serial: type 'file' needs <source path='...'>"},
        BadCase{DOM("<memory>1</memory><maxMemory slots='4'>0</maxMemory>"), "maxMemory: must not be less than <memory>"}));

TEST(DomainXml, CurrentMemoryIsClampedAndDefaulted) {
  auto d = parse_domain_xml(DOM("<memory unit='MiB'>64</memory><currentMemory unit='MiB'>128</currentMemory>")).def;
  EXPECT_EQ(d.current_memory_kib, 65536u);
  d = parse_domain_xml(DOM("<memory unit='MiB'>64</memory>")).def;
  EXPECT_EQ(d.current_memory_kib, 65536u);
  d = parse_domain_xml(DOM("<memory unit='MiB'>64</memory><currentMemory>1024</currentMemory>")).def;
  EXPECT_EQ(d.current_memory_kib, 1024u);
}

TEST(DomainXml, SerialGetsAConsole) {
  auto d = parse_domain_xml(DOM("<memory>1</memory><devices><serial type='pty'/></devices>")).def;
  ASSERT_EQ(d.devices.consoles.size(), 1u);
  EXPECT_EQ(d.devices.consoles[0].target_type, "serial");
  EXPECT_EQ(d.devices.consoles[0].type, "pty");
}

TEST(VmmArgs, NeedsAKernel) {
  auto d = parse_domain_xml(DOM("<memory>1024</memory>")).def;
  try {
    vmm_args(d, kWiring);
    FAIL();
  } catch (const vireo::Error& e) {
    EXPECT_EQ(std::string(e.what()), "domain 'x': no <os><kernel>: Vireo has no firmware and boots kernels directly");
  }
}

TEST(VmmArgs, RejectsWhatTheVmmCannotDo) {
  auto check = [](const std::string& xml, const std::string& msg) {
    auto d = parse_domain_xml(xml).def;
    try {
      vmm_args(d, kWiring);
      ADD_FAILURE() << "accepted " << xml;
    } catch (const vireo::Error& e) {
      EXPECT_EQ(std::string(e.what()), msg);
    }
  };
  check(DOM("<memory>1024</memory><os><kernel>/k</kernel></os><devices><disk><source file='/a'/><target dev='sda'/></disk></devices>"),
        "disk 'sda': bus 'scsi' is not supported (vireo-vmm has virtio disks only)");
  check(DOM("<memory>1024</memory><os><kernel>/k</kernel></os><devices><disk><source file='/a,b'/><target dev='vda'/></disk></devices>"),
        "disk 'vda': '/a,b' contains ',' or '=', which vireo-vmm options cannot carry");
  check(DOM("<memory>1024</memory><os><kernel>/k</kernel></os><devices><interface type='network'><mac address='52:54:00:00:00:02'/>"
            "<source network='default'/></interface></devices>"),
        "interface 52:54:00:00:00:02: type 'network' needs a libvirt-style network service, which Vireo does not have; use "
        "type 'bridge'");
}

TEST(VmmArgs, SerialWiringAndMemoryUnits) {
  auto d = parse_domain_xml(DOM("<memory unit='KiB'>2560</memory><os><kernel>/k</kernel></os><devices><serial type='pty'/></devices>")).def;
  auto a = vmm_args(d, {"/s.api", "unix=/s.con"});
  std::vector<std::string> want = {"--name", "x",      "--kernel", "/k",           "--memory",     "2560K",
                                   "--cpus", "1",      "--serial", "unix=/s.con",  "--api-socket", "/s.api"};
  EXPECT_EQ(a, want);
}

// libvirt's check='full' is QEMU's enforce: every feature of the model or no start; other policies let
// vireo-vmm drop what the host lacks (with a warning), as QEMU does.
TEST(VmmArgs, CpuCheckFullEnforces) {
  auto cpu_arg = [](const std::string& cpu) {
    auto d = parse_domain_xml("<domain type='kvm'><name>x</name><memory>131072</memory><os><kernel>/k</kernel></os>" +
                              cpu + "</domain>").def;
    auto a = vmm_args(d, kWiring);
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == "--cpu") return a[i + 1];
    return std::string("(none)");
  };
  EXPECT_EQ(cpu_arg("<cpu mode='custom' check='full'><model>Haswell</model></cpu>"), "custom=Haswell,enforce");
  EXPECT_EQ(cpu_arg("<cpu mode='custom' check='partial'><model>Haswell</model></cpu>"), "custom=Haswell");
  EXPECT_EQ(cpu_arg("<cpu mode='custom' check='none'><model>qemu64</model></cpu>"), "custom=qemu64");
  EXPECT_EQ(cpu_arg("<cpu mode='custom'><model>qemu64</model></cpu>"), "custom=qemu64");
  // host-model is vireo-vmm's default, so the argv leaves --cpu out rather than repeating it.
  EXPECT_EQ(cpu_arg("<cpu mode='host-model' check='full'/>"), "(none)");
}

TEST(Uuid, Normalize) {
  EXPECT_EQ(normalize_uuid("6F1C6E3A2B7D4C599E0B5A7D2C8E4F10"), "6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10");
  EXPECT_EQ(normalize_uuid("6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10"), "6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10");
  EXPECT_EQ(normalize_uuid("6f1c6e3a2b7d-4c59-9e0b-5a7d2c8e4f10"), "");
  EXPECT_EQ(normalize_uuid("zz1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10"), "");
  EXPECT_EQ(normalize_uuid(""), "");
}

}  // namespace
