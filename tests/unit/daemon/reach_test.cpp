// vireod.conf parsing, the TLS DN allow-list, and the host driver's readers (with their inputs in a temp dir).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "client/tls.h"
#include "common/error.h"
#include "daemon/config.h"
#include "daemon/host_driver.h"

using namespace vireo::daemon;

static std::string error_of(const std::string& text) {
  try {
    parse_config(text, "vireod.conf");
  } catch (const vireo::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ParsesEverySetting) {
  auto c = parse_config(R"(# comment
listen_tls = 1
listen_tcp = 1   # trailing comment
auth_tcp = "none"
auth_tls = "none"
listen_addr = "127.0.0.1"
tls_port = "16600"
tcp_port = 16601
ca_file = "/p/ca.pem"
cert_file = "/p/cert.pem"
key_file = "/p/key.pem"
tls_allowed_dn_list = [ "C=GB,O=A,CN=*",
                        "O=B" ]
unix_sock_group = "vireo"
unix_sock_rw_perms = "0666"
unix_sock_ro_perms = "0700"
vmm = "/opt/vireo-vmm"
start_timeout = 5
stop_timeout = 7
autostart = 0
)", "t.conf");
  EXPECT_TRUE(c.listen.tls);
  EXPECT_TRUE(c.listen.tcp);
  EXPECT_EQ(c.listen.addr, "127.0.0.1");
  EXPECT_EQ(c.listen.tls_port, 16600);
  EXPECT_EQ(c.listen.tcp_port, 16601);
  EXPECT_EQ(c.listen.ca_file, "/p/ca.pem");
  EXPECT_EQ(c.listen.allowed_dn, (std::vector<std::string>{"C=GB,O=A,CN=*", "O=B"}));
  EXPECT_EQ(*c.group, "vireo");
  EXPECT_EQ(*c.rw_socket_mode, 0666u);
  EXPECT_EQ(c.listen.ro_socket_mode, 0700u);
  EXPECT_EQ(*c.vmm, "/opt/vireo-vmm");
  EXPECT_EQ(*c.start_timeout, 5);
  EXPECT_EQ(*c.stop_timeout, 7);
  EXPECT_FALSE(*c.autostart);
}

TEST(Config, ShippedDefaultFileParsesToTheDefaults) {
  auto c = load_config(VIREO_SOURCE_DIR "/data/vireod.conf", true);
  EXPECT_FALSE(c.listen.tls);
  EXPECT_FALSE(c.listen.tcp);
  EXPECT_EQ(c.listen.tls_port, 16514);
  EXPECT_EQ(c.listen.ro_socket_mode, 0777u);
  EXPECT_FALSE(c.group.has_value());
  // A missing default file is fine; a missing --config file is not.
  EXPECT_FALSE(load_config("/nonexistent/vireod.conf", false).listen.tls);
  EXPECT_THROW(load_config("/nonexistent/vireod.conf", true), vireo::Error);
}

TEST(Config, ErrorsNameFileLineAndProblem) {
  EXPECT_EQ(error_of("listen_tls = 1\nfrobnicate = 2\n"), "vireod.conf:2: unknown setting 'frobnicate'");
  EXPECT_EQ(error_of("listen_tls = 2\n"), "vireod.conf:1: 'listen_tls' must be 0 or 1");
  EXPECT_EQ(error_of("tls_port = \"abc\"\n"), "vireod.conf:1: 'tls_port' must be a number");
  EXPECT_EQ(error_of("tcp_port = 70000\n"), "vireod.conf:1: 'tcp_port' must be a port number (1-65535)");
  EXPECT_EQ(error_of("ca_file = /x\n"), "vireod.conf:1: unexpected '/' (values are numbers, \"strings\" or [lists])");
  EXPECT_EQ(error_of("ca_file = \"/x\n"), "vireod.conf:1: unterminated string");
  EXPECT_EQ(error_of("\n\ntls_allowed_dn_list = [\"a\" \"b\"]\n"), "vireod.conf:3: expected ',' or ']' in the list");
  EXPECT_EQ(error_of("unix_sock_rw_perms = \"0999\"\n"), "vireod.conf:1: 'unix_sock_rw_perms' must be an octal mode like \"0660\"");
  EXPECT_EQ(error_of("listen_tls 1\n"), "vireod.conf:1: expected '=' after 'listen_tls'");
  EXPECT_EQ(error_of("auth_tls = \"sasl\"\n"), "vireod.conf:1: auth_tls must be \"none\" (the client certificate is the credential)");
  EXPECT_EQ(error_of("listen_tcp = 1\n").rfind("vireod.conf:1: listen_tcp = 1 also needs auth_tcp = \"none\"", 0), 0u);
  EXPECT_EQ(error_of("listen_tcp = 1\nauth_tcp = \"none\"\n"), "");
}

TEST(Tls, AllowedDnPatterns) {
  const std::vector<std::string> allow{"C=GB,O=Vireo Test,CN=client*", "C=GB,O=Elsewhere*"};
  EXPECT_TRUE(vireo::tls::dn_allowed("C=GB,O=Vireo Test,CN=client1", allow));
  EXPECT_TRUE(vireo::tls::dn_allowed("C=GB,O=Elsewhere Ltd,CN=anyone", allow));
  EXPECT_FALSE(vireo::tls::dn_allowed("C=GB,O=Vireo Test,CN=intruder", allow));
  EXPECT_FALSE(vireo::tls::dn_allowed("C=US,O=Elsewhere Ltd,CN=x", allow));
  EXPECT_FALSE(vireo::tls::dn_allowed("anything", {}));
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/vireo-host-XXXXXX";
    ASSERT_TRUE(::mkdtemp(t));
    dir = t;
  }
  void TearDown() override { std::system(("rm -rf '" + dir + "'").c_str()); }
  void put(const std::string& rel, const std::string& text) {
    std::string p = dir + "/" + rel;
    std::system(("mkdir -p '" + p.substr(0, p.rfind('/')) + "'").c_str());
    std::ofstream(p) << text;
  }
  std::string dir;
};

TEST_F(TempDir, SysinfoFromDmi) {
  EXPECT_EQ(sysinfo_xml(dir + "/none"), "<sysinfo type='smbios'/>\n");
  put("dmi/bios_vendor", "SeaBIOS\n");
  put("dmi/bios_version", "1.16.2-debian\n");
  put("dmi/sys_vendor", "QEMU\n");
  put("dmi/product_name", "Standard PC (i440FX + PIIX, 1996)\n");
  put("dmi/product_uuid", "6F1C6E3A-2B7D-4C59-9E0B-5A7D2C8E4F10\n");
  EXPECT_EQ(sysinfo_xml(dir + "/dmi"),
            "<sysinfo type='smbios'>\n"
            "  <bios>\n"
            "    <entry name='vendor'>SeaBIOS</entry>\n"
            "    <entry name='version'>1.16.2-debian</entry>\n"
            "  </bios>\n"
            "  <system>\n"
            "    <entry name='manufacturer'>QEMU</entry>\n"
            "    <entry name='product'>Standard PC (i440FX + PIIX, 1996)</entry>\n"
            "    <entry name='uuid'>6F1C6E3A-2B7D-4C59-9E0B-5A7D2C8E4F10</entry>\n"
            "  </system>\n"
            "</sysinfo>\n");
}

TEST_F(TempDir, NodeInfoTopology) {
  // 2 packages x 2 cores x 2 threads, one NUMA node, 3 GiB.
  std::string cpuinfo;
  for (int i = 0; i < 8; ++i) cpuinfo += "processor\t: " + std::to_string(i) + "\ncpu MHz\t\t: 2394.454\n\n";
  put("proc/cpuinfo", cpuinfo);
  put("proc/meminfo", "MemTotal:        3145728 kB\nMemFree:  1 kB\n");
  for (int i = 0; i < 8; ++i) {
    put("sys/devices/system/cpu/cpu" + std::to_string(i) + "/topology/physical_package_id", std::to_string(i / 4) + "\n");
    put("sys/devices/system/cpu/cpu" + std::to_string(i) + "/topology/core_id", std::to_string((i / 2) % 2) + "\n");
  }
  put("sys/devices/system/node/node0/x", "");
  auto n = node_info(dir + "/proc", dir + "/sys");
  EXPECT_EQ(n["cpus"], 8);
  EXPECT_EQ(n["mhz"], 2394);
  EXPECT_EQ(n["sockets"], 2);
  EXPECT_EQ(n["cores"], 2);
  EXPECT_EQ(n["threads"], 2);
  EXPECT_EQ(n["nodes"], 1);
  EXPECT_EQ(n["memory_kib"], 3145728);
}

TEST(HostDriver, ReasonNumbersAreLibvirts) {
  EXPECT_EQ(reason_number("running", "booted"), 1);
  EXPECT_EQ(reason_number("running", "unpaused"), 5);
  EXPECT_EQ(reason_number("paused", "user"), 1);
  EXPECT_EQ(reason_number("shut off", "destroyed"), 2);
  EXPECT_EQ(reason_number("shut off", "daemon"), 8);
  EXPECT_EQ(reason_number("crashed", "panicked"), 1);
  EXPECT_EQ(reason_number("no state", "x"), 0);
}
