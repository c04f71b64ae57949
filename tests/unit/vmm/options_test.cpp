// vireo-vmm argument parsing and validation (no KVM needed).
#include "vmm/options.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "config/flags.h"

namespace vireo::vmm {
namespace {

constexpr uint64_t MiB = 1ull << 20;

TEST(MemorySpec, PlainSizes) {
  EXPECT_EQ(config::parse_memory_spec("64M").size, 64 * MiB);
  EXPECT_EQ(config::parse_memory_spec("1G").size, 1024 * MiB);
  EXPECT_EQ(config::parse_memory_spec("128").size, 128 * MiB);  // bare number = MiB, as QEMU's -m
  EXPECT_FALSE(config::parse_memory_spec("64M").hugepages);
  EXPECT_TRUE(config::parse_memory_spec("64M").thp);
}

TEST(MemorySpec, KeyValueForm) {
  auto c = config::parse_memory_spec("size=1G,hugepages=on,thp=off,prealloc=on");
  EXPECT_EQ(c.size, 1024 * MiB);
  EXPECT_TRUE(c.hugepages);
  EXPECT_FALSE(c.thp);
  EXPECT_TRUE(c.prealloc);
}

void expect_error(const std::string& spec, const std::string& fragment) {
  try {
    config::parse_memory_spec(spec);
    FAIL() << spec << " accepted";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find(fragment), std::string::npos) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;
    EXPECT_EQ(w.rfind("--memory", 0), 0u) << w;
  }
}

TEST(MemorySpec, Errors) {
  expect_error("0", "greater than 0");
  expect_error("size=0", "greater than 0");
  expect_error("lots", "lots");
  expect_error("", "empty");
  expect_error("size=64M,color=red", "unknown key 'color'");
  expect_error("hugepages=on", "size= missing");
  expect_error("size=64M,hugepages=maybe", "expected on or off");
  expect_error("size=3M,hugepages=on", "2 MiB");
  expect_error("1k", "not a multiple of 4 KiB");
  expect_error("1M", "too small");
  expect_error("100000000G", "");
}

// Runs parse_options on a command line; returns the error text ("" if it parsed).
std::string parse_error(std::vector<std::string> args) {
  args.insert(args.begin(), "vireo-vmm");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  try {
    parse_options(static_cast<int>(argv.size()), argv.data());
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::string guest() {
  const std::string g = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello.elf";
  return g;
}

class Options : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(guest().c_str(), R_OK) != 0) GTEST_SKIP() << "test guests not built (" << guest() << ")";
  }
};

TEST_F(Options, DefaultsAndValues) {
  const char* argv[] = {"vireo-vmm", "--kernel", nullptr, "--memory", "64M", "--cpus", "3", "--serial", "none",
                        "--name", "vm1", "--native", "off", "--cpu", "host-passthrough"};
  const std::string g = guest();
  argv[2] = g.c_str();
  auto r = parse_options(15, argv);
  ASSERT_TRUE(r.launch.has_value());
  const auto& o = r.launch->config;
  EXPECT_EQ(o.boot.kernel, g);
  EXPECT_EQ(o.memory.size, 64 * MiB);
  EXPECT_EQ(o.cpus, 3u);
  EXPECT_EQ(o.serial.kind, SerialSpec::Kind::None);
  EXPECT_EQ(o.name, "vm1");
  EXPECT_FALSE(o.native);
  EXPECT_EQ(o.cpu.mode, cpu::CpuMode::HostPassthrough);

  const char* argv2[] = {"vireo-vmm", "--kernel", g.c_str()};
  auto d = parse_options(3, argv2);
  ASSERT_TRUE(d.launch.has_value());
  EXPECT_EQ(d.launch->config.memory.size, 256 * MiB);
  EXPECT_EQ(d.launch->config.cpus, 1u);
  EXPECT_EQ(d.launch->config.serial.kind, SerialSpec::Kind::Stdio);
  EXPECT_TRUE(d.launch->config.native);
  EXPECT_EQ(d.launch->config.cpu.mode, cpu::CpuMode::HostModel);
}

TEST_F(Options, BadInputIsOneLine) {
  const std::string g = guest();
  struct Case {
    std::vector<std::string> args;
    std::string fragment;
  } cases[] = {
      {{"--kernel", "/nonexistent/vmlinuz"}, "kernel /nonexistent/vmlinuz: no such file"},
      {{"--kernel", g, "--memory", "0"}, "--memory"},
      {{"--kernel", g, "--memory", "junk"}, "--memory"},
      {{"--kernel", g, "--cpus", "0"}, "--cpus"},
      {{"--kernel", g, "--cpus", "-2"}, "--cpus"},
      {{"--kernel", g, "--cpus", "100000"}, "--cpus"},
      {{"--kernel", g, "--cpu", "pentium9"}, "cpu"},
      {{"--kernel", g, "--serial", "tcp"}, "serial"},
      {{"--kernel", g, "--native", "sideways"}, "--native"},
      {{"--kernel", g, "--initrd", "/nonexistent/initrd"}, "initrd /nonexistent/initrd"},
      {{"--kernel", g, "--frobnicate"}, "frobnicate"},
      {{}, "--kernel"},
  };
  for (const auto& c : cases) {
    const std::string e = parse_error(c.args);
    EXPECT_NE(e.find(c.fragment), std::string::npos) << "'" << e << "' lacks '" << c.fragment << "'";
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST_F(Options, TruncatedBzImageIsRejected) {
  const char* vmlinuz = nullptr;
  for (const auto& e : std::filesystem::directory_iterator("/boot"))
    if (e.path().filename().string().rfind("vmlinuz-", 0) == 0) {
      static std::string p;
      p = e.path().string();
      vmlinuz = p.c_str();
      break;
    }
  if (!vmlinuz) GTEST_SKIP() << "no /boot/vmlinuz-* (install linux-image-cloud-amd64)";
  const std::string t = ::testing::TempDir() + "/truncated-bzimage";
  {
    std::ifstream in(vmlinuz, std::ios::binary);
    std::vector<char> head(5000);
    in.read(head.data(), 5000);
    std::ofstream out(t, std::ios::binary);
    out.write(head.data(), in.gcount());
  }
  const std::string e = parse_error({"--kernel", t});
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
}

// --arch i686: the 32-bit guest (ELF32, PVH note) and the test guests (PVH note) are accepted; kernels that need
// long mode are refused before /dev/kvm is opened, with one line.
TEST_F(Options, ArchI686) {
  const std::string g = guest();
  const std::string g32 = std::string(VIREO_BUILD_DIR) + "/tests/guests/hello32.elf";
  const char* a1[] = {"vireo-vmm", "--arch", "i686", "--kernel", g32.c_str()};
  auto r = parse_options(5, a1);
  ASSERT_TRUE(r.launch.has_value());
  EXPECT_EQ(r.launch->config.arch, cpu::Arch::I686);
  const char* a2[] = {"vireo-vmm", "--kernel", g.c_str()};
  EXPECT_EQ(parse_options(3, a2).launch->config.arch, cpu::Arch::X86_64);
  EXPECT_EQ(parse_error({"--arch", "i686", "--kernel", g}), "");  // PVH note: entered in 32-bit mode
  EXPECT_EQ(parse_error({"--arch", "i386", "--kernel", g}), "--arch: unknown arch 'i386' (expected x86_64 or i686)");

  // hello.elf without its PVH note: a 64-bit-only ELF.
  std::string bytes;
  {
    std::ifstream in(g, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto at = bytes.find(std::string("Xen\0", 4));
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'N';  // "Nen": no longer Xen's PHYS32_ENTRY note
  const std::string t = ::testing::TempDir() + "/hello-no-pvh.elf";
  std::ofstream(t, std::ios::binary) << bytes;
  EXPECT_EQ(parse_error({"--kernel", t}), "");
  EXPECT_EQ(parse_error({"--arch", "i686", "--kernel", t}),
            "kernel " + t + ": a 64-bit ELF kernel without a PVH entry note cannot run on an i686 VM (its CPU has no long mode)");
  std::filesystem::remove(t);
}

// --config FILE: the JSON file is the configuration; flags given as well override it.
TEST_F(Options, ConfigFileAndOverrides) {
  const std::string g = guest();
  const std::string path = ::testing::TempDir() + "/vm-options-test.json";
  config::VmConfig c;
  c.name = "from-file";
  c.boot.kernel = g;
  c.memory.size = 96 * MiB;
  c.cpus = 2;
  c.disks.push_back(config::parse_disk("path=/a.img,format=raw,serial=s1"));
  c.rng = true;
  config::write_vm_config(path, c);

  const char* a1[] = {"vireo-vmm", "--config", path.c_str()};
  auto r = parse_options(3, a1);
  ASSERT_TRUE(r.launch.has_value());
  EXPECT_EQ(config::to_json(r.launch->config), config::to_json(c));

  const char* a2[] = {"vireo-vmm", "--config", path.c_str(), "--cpus", "3", "--disk", "path=/b.img", "--name", "cli"};
  r = parse_options(9, a2);
  ASSERT_TRUE(r.launch.has_value());
  const auto& o = r.launch->config;
  EXPECT_EQ(o.name, "cli");
  EXPECT_EQ(o.cpus, 3u);
  EXPECT_EQ(o.memory.size, 96 * MiB);  // from the file
  ASSERT_EQ(o.disks.size(), 1u);       // a repeatable flag replaces the list
  EXPECT_EQ(o.disks[0].path, "/b.img");
  EXPECT_TRUE(o.rng);

  EXPECT_EQ(parse_error({"--config", "/nonexistent/vm.json"}), "--config /nonexistent/vm.json: no such file or directory");
  { std::ofstream(path) << R"({"boot": {"kernel": ")" << g << R"("}, "memroy": {"size": 1}})"; }
  EXPECT_EQ(parse_error({"--config", path}), path + ": memroy: unknown key");
  { std::ofstream(path) << "{\"boot\": "; }
  EXPECT_EQ(parse_error({"--config", path}).rfind(path + ": not valid JSON: ", 0), 0u);
  EXPECT_EQ(parse_error({}), "--kernel is required (or --config FILE)");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace vireo::vmm
