// vireod internals without processes: state-root layout, atomic writes, and JSON-RPC handling in-process.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "daemon/daemon.h"
#include "daemon/netdev.h"
#include "daemon/util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace vireo::daemon;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/vireo-daemon-test-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST(Paths, RootRelocatesEverything) {
  Paths p = Paths::for_root("/srv/v/");
  EXPECT_EQ(p.config, "/srv/v/etc/vireo");
  EXPECT_EQ(p.state, "/srv/v/var/lib/vireo");
  EXPECT_EQ(p.run, "/srv/v/run/vireo");
  EXPECT_EQ(p.socket(), "/srv/v/run/vireo/vireod.sock");
  Paths sys = Paths::for_root("");
  EXPECT_EQ(sys.config, "/etc/vireo");
  EXPECT_EQ(sys.state, "/var/lib/vireo");
  EXPECT_EQ(sys.socket(), "/run/vireo/vireod.sock");
}

TEST(AtomicWrite, ReplacesWholeFileAndLeavesNoTemp) {
  TempDir t;
  const std::string f = t.path + "/a.xml";
  atomic_write(f, "first");
  atomic_write(f, "second", 0640);
  EXPECT_EQ(read_file(f), "second");
  struct stat st{};
  ASSERT_EQ(::stat(f.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  int n = 0;
  for (auto& e : fs::directory_iterator(t.path)) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1);
  EXPECT_EQ(list_dir(t.path, ".xml"), std::vector<std::string>{"a"});
  EXPECT_THROW(atomic_write(t.path + "/missing/x", "y"), vireo::Error);
  EXPECT_FALSE(try_read_file(t.path + "/nope").has_value());
}

TEST(Process, IdentityOfSelf) {
  EXPECT_GT(process_start_time(::getpid()), 0u);
  EXPECT_NE(process_cmdline(::getpid()).find("daemon_test"), std::string::npos);
  EXPECT_EQ(process_start_time(0x3ffffff), 0u);
  EXPECT_TRUE(pidfd_open(::getpid()).valid());
}

class Rpc : public ::testing::Test {
 protected:
  void SetUp() override {
    Options o;
    o.root = t.path;
    o.vmm = "/nonexistent/vireo-vmm";
    o.self_exe = "/nonexistent/vireod";
    d = std::make_unique<Daemon>(o);
    d->load();
  }
  json call(const std::string& method, json params = json::object()) {
    return d->handle(json{{"jsonrpc", "2.0"}, {"id", 7}, {"method", method}, {"params", params}});
  }
  TempDir t;
  std::unique_ptr<Daemon> d;
};

const char* kXml = "<domain type='kvm'><name>r</name><memory unit='MiB'>64</memory>"
                   "<os><kernel>/k</kernel></os><devices><graphics type='vnc'/></devices></domain>";

TEST_F(Rpc, DefineListLookupUndefine) {
  json r = call("define", {{"xml", kXml}});
  ASSERT_TRUE(r.contains("result")) << r.dump();
  EXPECT_EQ(r["id"], 7);
  EXPECT_EQ(r["result"]["name"], "r");
  EXPECT_EQ(r["result"]["unsupported"], json::array({"devices/graphics"}));
  const std::string uuid = r["result"]["uuid"];
  EXPECT_TRUE(fs::exists(t.path + "/etc/vireo/domains/r.xml"));

  r = call("list");
  ASSERT_EQ(r["result"].size(), 1u);
  EXPECT_EQ(r["result"][0]["state"], "shut off");
  EXPECT_EQ(r["result"][0]["id"], -1);
  EXPECT_EQ(call("lookup", {{"domain", uuid}})["result"]["name"], "r");

  // Same name, other uuid: refused.
  std::string other = std::string(kXml).replace(std::string(kXml).find("<memory"), 0,
                                                "<uuid>11111111-2222-4333-8444-555555555555</uuid>");
  r = call("define", {{"xml", other}});
  EXPECT_EQ(r["error"]["code"], kOperationFailed);
  EXPECT_EQ(r["error"]["message"], "operation failed: domain 'r' already exists with uuid " + uuid);

  r = call("start", {{"domain", "r"}});
  EXPECT_EQ(r["error"]["code"], kOperationFailed);
  EXPECT_EQ(r["error"]["message"], "operation failed: cannot run vireo-vmm '/nonexistent/vireo-vmm': no such file or directory");

  EXPECT_EQ(call("destroy", {{"domain", "r"}})["error"]["message"], "Requested operation is not valid: domain is not running");
  EXPECT_TRUE(call("undefine", {{"domain", "r"}}).contains("result"));
  EXPECT_EQ(call("lookup", {{"domain", "r"}})["error"]["code"], kNoDomain);
  EXPECT_EQ(call("lookup", {{"domain", "r"}})["error"]["message"], "Domain not found: no domain with matching name 'r'");
  EXPECT_FALSE(fs::exists(t.path + "/etc/vireo/domains/r.xml"));
}

TEST_F(Rpc, ValidateAndXmlErrors) {
  json r = call("define", {{"xml", kXml}, {"validate", true}});
  EXPECT_EQ(r["error"]["code"], kUnsupported);
  r = call("define", {{"xml", "<domain type='kvm'><name>x</name></domain>"}});
  EXPECT_EQ(r["error"]["code"], kXmlError);
  EXPECT_EQ(r["error"]["message"], "XML error: domain: missing <memory>");
  EXPECT_EQ(call("nosuch")["error"]["code"], -32601);
  EXPECT_EQ(call("start")["error"]["code"], -32602);  // no domain param
  EXPECT_EQ(call("start", json::array({1}))["error"]["code"], -32602);
  // Wrongly typed members are errors, never exceptions out of handle().
  EXPECT_EQ(d->handle(json{{"jsonrpc", 2}, {"id", 1}, {"method", "list"}})["error"]["code"], -32600);
  EXPECT_EQ(d->handle(json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", 5}})["error"]["code"], -32600);
  EXPECT_EQ(call("define", {{"xml", 5}})["error"]["code"], -32602);
  EXPECT_EQ(call("autostart", {{"domain", json::object()}})["error"]["code"], -32602);
  EXPECT_EQ(d->handle(json{{"id", 1}, {"method", "list"}})["error"]["code"], -32600);
  // A notification (no id) gets no reply.
  EXPECT_TRUE(d->handle(json{{"jsonrpc", "2.0"}, {"method", "list"}}).is_null());
}

TEST_F(Rpc, DefinitionsSurviveAReload) {
  ASSERT_TRUE(call("define", {{"xml", kXml}}).contains("result"));
  ASSERT_TRUE(call("autostart", {{"domain", "r"}, {"enable", true}}).contains("result"));
  d.reset();
  SetUp();  // a new daemon on the same root (the old one released the lock)
  json r = call("list");
  ASSERT_EQ(r["result"].size(), 1u);
  EXPECT_EQ(r["result"][0]["autostart"], true);
  EXPECT_EQ(r["result"][0]["persistent"], true);
}

TEST_F(Rpc, SecondDaemonOnSameRootIsRefused) {
  Options o;
  o.root = t.path;
  Daemon other(o);
  try {
    other.load();
    FAIL();
  } catch (const vireo::Error& e) {
    EXPECT_EQ(std::string(e.what()), "another vireod is already running on " + t.path + "/run/vireo");
  }
}

}  // namespace

// Bridge taps (netdev.cpp). Creating real taps/bridges is covered in the KVM kit (mgmt_kvm,
// test_libvirt_domain_xml_starts); here: the errors and the taps-file bookkeeping, which need no privileges.
TEST(BridgeTap, MissingBridgeIsAOneLineError) {
  try {
    vireo::daemon::attach_bridge_tap("vnet%d", "nobr-vireo0", "52:54:00:00:00:01");
    ADD_FAILURE() << "attach to a missing bridge succeeded";
  } catch (const vireo::Error& e) {
    EXPECT_STREQ(e.what(), "bridge 'nobr-vireo0': no such device");
  }
}

TEST(BridgeTap, NonBridgeDeviceIsRefused) {
  try {
    vireo::daemon::attach_bridge_tap("vnet%d", "lo", "52:54:00:00:00:01");
    ADD_FAILURE() << "attach to lo succeeded";
  } catch (const vireo::Error& e) {
    EXPECT_STREQ(e.what(), "bridge 'lo': not a bridge device");
  }
}

TEST(BridgeTap, BadNamesAreRefused) {
  EXPECT_THROW(vireo::daemon::attach_bridge_tap("", "br0", ""), vireo::Error);
  EXPECT_THROW(vireo::daemon::attach_bridge_tap("a-name-that-is-too-long", "br0", ""), vireo::Error);
}

TEST(BridgeTap, TapsFileOfGoneTapsIsCleared) {
  char tmpl[] = "/tmp/vireo-taps-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string f = std::string(tmpl) + "/d.taps";
  vireo::daemon::atomic_write(f, "vireo-gone0\nvireo-gone1\n");
  EXPECT_EQ(vireo::daemon::read_taps_file(f), (std::vector<std::string>{"vireo-gone0", "vireo-gone1"}));
  EXPECT_TRUE(vireo::daemon::delete_tap("vireo-gone0"));
  EXPECT_TRUE(vireo::daemon::delete_taps_in_file(f).empty());
  EXPECT_NE(::access(f.c_str(), F_OK), 0);
  EXPECT_TRUE(vireo::daemon::delete_taps_in_file(f).empty());  // no file: nothing to do
  ::rmdir(tmpl);
}
