// The argv vireod builds for each golden definition must be accepted by vireo-vmm's own option parser
// (src/vmm/options.cpp, config::parse_disk/parse_net): no keys or flags vireo-vmm does not know, and it
// describes exactly the VM configuration domain::vm_config() builds (the form vireod hands over as JSON).
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "domain/domain.h"
#include "config/flags.h"
#include "vmm/options.h"

namespace {

const std::string kGolden = std::string(VIREO_SOURCE_DIR) + "/tests/unit/domain/golden/";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string host_kernel() {
  DIR* d = ::opendir("/boot");
  if (!d) return "";
  std::string found;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("vmlinuz-", 0) == 0) found = "/boot/" + n;
  }
  ::closedir(d);
  return found;
}

class Compat : public ::testing::TestWithParam<std::string> {};

TEST_P(Compat, GoldenArgvParsesInVireoVmm) {
  // An i686 domain needs a kernel with a 32-bit entry (the host's bzImage is 64-bit): the 32-bit test guest.
  const bool i686 = GetParam() == "i686";
  const std::string kernel = i686 ? std::string(VIREO_BUILD_DIR) + "/tests/guests/hello32.elf" : host_kernel();
  if (kernel.empty()) GTEST_SKIP() << "no /boot/vmlinuz-* to stand in for the guest kernel";
  ASSERT_EQ(::access(kernel.c_str(), R_OK), 0) << kernel << " missing";
  auto parsed = vireo::domain::parse_domain_xml(slurp(kGolden + GetParam() + ".xml"));
  std::vector<std::string> a = vireo::domain::vmm_args(parsed.def, {"/tmp/vireo-compat.api", "stdio"});
  size_t nets = 0, disks = 0;
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == "--kernel") a[i + 1] = kernel;
    else if (a[i] == "--initrd") a[i + 1] = "/dev/null";
    else if (a[i] == "--net") {
      // The monitor replaces the vnetN placeholder with the tap it created.
      std::string& v = a[i + 1];
      if (v.rfind(std::string("tap=") + vireo::domain::kAutoTapName, 0) == 0)
        v = "tap=vnet0" + v.substr(4 + std::string(vireo::domain::kAutoTapName).size());
      EXPECT_NO_THROW(vireo::config::parse_net(v)) << v;
      ++nets;
    } else if (a[i] == "--disk") {
      EXPECT_NO_THROW(vireo::config::parse_disk(a[i + 1])) << a[i + 1];
      ++disks;
    }
  }
  EXPECT_EQ(nets, parsed.def.devices.interfaces.size());
  EXPECT_EQ(disks, parsed.def.devices.disks.size());
  std::vector<const char*> argv{"vireo-vmm"};
  for (auto& s : a) argv.push_back(s.c_str());
  try {
    auto r = vireo::vmm::parse_options(static_cast<int>(argv.size()), argv.data());
    ASSERT_TRUE(r.launch.has_value());
    EXPECT_EQ(r.launch->config.disks.size(), disks);
    EXPECT_EQ(r.launch->config.nets.size(), nets);
    // The flags rebuild the very configuration vm_config() produces (same JSON), apart from the stand-ins.
    auto want = vireo::domain::vm_config(parsed.def, {"/tmp/vireo-compat.api", "stdio"});
    want.boot.kernel = kernel;
    if (!want.boot.initrd.empty()) want.boot.initrd = "/dev/null";
    for (auto& n : want.nets)
      if (n.tap == vireo::domain::kAutoTapName) n.tap = "vnet0";
    EXPECT_EQ(vireo::config::to_json(r.launch->config).dump(1), vireo::config::to_json(want).dump(1));
  } catch (const vireo::Error& e) {
    ADD_FAILURE() << "vireo-vmm rejects the argv for " << GetParam() << ": " << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Domain, Compat, ::testing::Values("i686", "libvirt-kvm", "minimal", "units-cpu", "unsupported"));

TEST(Compat, DiskKeysVireoVmmLacksAreNotPassed) {
  auto parsed = vireo::domain::parse_domain_xml(
      "<domain type='kvm'><name>d</name><memory>65536</memory><os><type>hvm</type><kernel>/k</kernel></os>"
      "<devices><disk type='file'><driver name='qemu' type='raw' cache='unsafe' io='io_uring' discard='unmap'/>"
      "<source file='/d.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>");
  auto a = vireo::domain::vmm_args(parsed.def, {"/s.api", "stdio"});
  std::string disk;
  for (size_t i = 0; i + 1 < a.size(); ++i)
    if (a[i] == "--disk") disk = a[i + 1];
  EXPECT_EQ(disk, "path=/d.img,format=raw");  // unsafe runs as writeback, the default
  EXPECT_NO_THROW(vireo::config::parse_disk(disk));
  const auto& u = parsed.unsupported;
  EXPECT_NE(std::find(u.begin(), u.end(), "devices/disk driver io='io_uring'"), u.end());
  EXPECT_NE(std::find(u.begin(), u.end(), "devices/disk driver discard='unmap'"), u.end());
  EXPECT_NE(std::find(u.begin(), u.end(), "devices/disk driver cache='unsafe'"), u.end());
  // Kept in the stored XML.
  const std::string out = vireo::domain::write_domain_xml(parsed.def);
  EXPECT_NE(out.find("cache='unsafe'"), std::string::npos);
  EXPECT_NE(out.find("io='io_uring'"), std::string::npos);
  EXPECT_NE(out.find("discard='unmap'"), std::string::npos);
}

TEST(Compat, BridgePlanMatchesNetOptions) {
  auto parsed = vireo::domain::parse_domain_xml(
      "<domain type='kvm'><name>d</name><memory>65536</memory><os><type>hvm</type><kernel>/k</kernel></os>"
      "<devices><interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='tapx'/></interface>"
      "<interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>"
      "<interface type='bridge'><mac address='52:54:00:00:00:03'/><source bridge='br1'/><target dev='mytap'/>"
      "</interface></devices></domain>");
  auto a = vireo::domain::vmm_args(parsed.def, {"/s.api", "stdio"});
  std::vector<std::string> nets;
  for (size_t i = 0; i + 1 < a.size(); ++i)
    if (a[i] == "--net") nets.push_back(a[i + 1]);
  ASSERT_EQ(nets.size(), 3u);
  EXPECT_EQ(nets[0], "tap=tapx,mac=52:54:00:00:00:01");
  EXPECT_EQ(nets[1], "tap=vnet%d,mac=52:54:00:00:00:02");
  EXPECT_EQ(nets[2], "tap=mytap,mac=52:54:00:00:00:03");
  auto plan = vireo::domain::bridge_plan(parsed.def);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].net_index, 1u);
  EXPECT_EQ(plan[0].bridge, "br0");
  EXPECT_EQ(plan[0].tap, "vnet%d");
  EXPECT_EQ(plan[0].mac, "52:54:00:00:00:02");
  EXPECT_EQ(plan[1].net_index, 2u);
  EXPECT_EQ(plan[1].bridge, "br1");
  EXPECT_EQ(plan[1].tap, "mytap");
}

// <interface type='network'> is supported: vireod resolves it to a bridge port (daemon/domain_devices.cpp)
// before vmm_args runs, so it is not reported; an unresolved one still cannot reach vireo-vmm.
TEST(Compat, NetworkInterfacesAreResolvedBeforeVmmArgs) {
  auto parsed = vireo::domain::parse_domain_xml(
      "<domain type='kvm'><name>d</name><memory>65536</memory><os><type>hvm</type><kernel>/k</kernel></os>"
      "<devices><interface type='network'><source network='default'/></interface></devices></domain>");
  const auto& u = parsed.unsupported;
  EXPECT_EQ(std::find(u.begin(), u.end(), "devices/interface type='network'"), u.end());
  try {
    vireo::domain::vmm_args(parsed.def, {"/s.api", "stdio"});
    ADD_FAILURE() << "type='network' must be refused";
  } catch (const vireo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("type 'network'"), std::string::npos) << e.what();
  }
}

}  // namespace
