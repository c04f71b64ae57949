// The DeviceManager on a real KVM VM (skips without /dev/kvm; also run through the KVM kit): which devices a
// configuration creates, where they land, and that creation is deterministic (snapshots rely on it).
#include "vmm/device_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "config/flags.h"
#include "pci/pci.h"

namespace vireo::vmm {
namespace {

struct Rig {
  std::unique_ptr<kvm::KvmSystem> sys;
  std::unique_ptr<kvm::Vm> vm;
  std::unique_ptr<GuestMemory> mem;
  std::unique_ptr<DeviceManager> dm;
  std::vector<std::pair<int, std::string>> exits;

  explicit Rig(const config::VmConfig& cfg) {
    sys = std::make_unique<kvm::KvmSystem>();
    vm = std::make_unique<kvm::Vm>(*sys);
    vm->create_irqchip();
    mem = std::make_unique<GuestMemory>(MemoryConfig{.size = 16 << 20, .thp = false, .name = "dm-test"});
    MachineEvents ev;
    ev.exit = [this](int code, const std::string& why) { exits.emplace_back(code, why); };
    ev.boot_log = [](const std::string&) {};
    dm = std::make_unique<DeviceManager>(*vm, *mem, ev);
    dm->create_devices(cfg, boot::KernelKind::TestGuestElf64);
  }
  uint32_t pci_read(uint8_t slot, uint16_t off) {
    uint32_t addr = 0x8000'0000u | (uint32_t{slot} << 11) | off, v = 0;
    dm->pio_bus().write(0xcf8, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&addr), 4));
    dm->pio_bus().read(0xcfc, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
  }
};

bool have_kvm() { return ::access("/dev/kvm", R_OK | W_OK) == 0; }

class DeviceManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_kvm()) GTEST_SKIP() << "no /dev/kvm (runs in the KVM kit: device_manager_test_in_kit)";
    disk_ = std::filesystem::temp_directory_path() / ("vireo-dm-" + std::to_string(::getpid()) + ".img");
    std::ofstream(disk_).write(std::string(1 << 16, 'x').data(), 1 << 16);
    cfg_.boot.kernel = "/unused";
    cfg_.serial = parse_serial_spec("none");
    cfg_.disks.push_back(config::parse_disk("path=" + disk_.string() + ",format=raw"));
    cfg_.rng = true;
    cfg_.balloon = true;
  }
  void TearDown() override {
    if (!disk_.empty()) std::filesystem::remove(disk_);
  }
  std::filesystem::path disk_;
  config::VmConfig cfg_;
};

std::vector<std::string> ids(const DeviceManager& dm) {
  std::vector<std::string> out;
  for (const auto& i : dm.infos()) out.push_back(i.id);
  return out;
}

TEST_F(DeviceManagerTest, PciLayout) {
  Rig r(cfg_);
  EXPECT_EQ(ids(*r.dm), (std::vector<std::string>{"serial0", "i8042", "rtc", "debug-exit", "boot-marker", "acpi0", "pci0",
                                                  "disk0", "rng0", "balloon0"}));
  const auto infos = r.dm->infos();
  EXPECT_EQ(infos[7].details.rfind("pci 00:01.0 bar0=0xc0000000 path=", 0), 0u) << infos[7].details;
  EXPECT_EQ(infos[8].details, "pci 00:02.0 bar0=0xc0008000");
  EXPECT_EQ(infos[4].details, "io 0x502 (32-bit), io 0x80 (8-bit)");
  // The guest finds them with CF8/CFC: virtio 1.x ids 0x1040 + type.
  EXPECT_EQ(r.pci_read(1, 0), 0x1042'1af4u);
  EXPECT_EQ(r.pci_read(2, 0), 0x1044'1af4u);
  EXPECT_EQ(r.pci_read(3, 0), 0x1045'1af4u);
  EXPECT_EQ(r.pci_read(4, 0), 0xffff'ffffu);
  EXPECT_NE(r.dm->balloon(), nullptr);
  // Every grant is recorded under its owner; the BARs come from the PCI window.
  std::map<std::string, uint64_t> mmio;
  for (const auto& g : r.dm->resources().grants())
    if (g.kind == ResourceKind::Mmio) mmio[g.owner] = g.base;
  EXPECT_EQ(mmio["virtio-blk:disk0 BAR0"], 0xC000'0000u);
  EXPECT_EQ(mmio["virtio-rng:rng0 BAR0"], 0xC000'8000u);
  EXPECT_EQ(mmio["pci0"], 0xE000'0000u);
  EXPECT_EQ(r.dm->cmdline_additions(), "");
  // Devices reach the machine only through its events.
  const uint8_t v = 0x42;
  r.dm->pio_bus().write(0x501, std::span<const uint8_t>(&v, 1));
  ASSERT_EQ(r.exits.size(), 1u);
  EXPECT_EQ(r.exits[0], (std::pair<int, std::string>{0x42, "debug-exit 66"}));
}

TEST_F(DeviceManagerTest, MmioLayoutIsDeterministic) {
  cfg_.transport = config::Transport::Mmio;
  std::vector<DeviceInfo> first;
  std::string cmdline;
  {
    Rig r(cfg_);
    first = r.dm->infos();
    cmdline = r.dm->cmdline_additions();
    uint32_t magic = 0;
    r.dm->mmio_bus().read(0xD000'1000, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&magic), 4));
    EXPECT_EQ(magic, 0x74726976u);  // "virt": rng0's window
    EXPECT_EQ(ids(*r.dm), (std::vector<std::string>{"serial0", "i8042", "rtc", "debug-exit", "boot-marker", "acpi0",
                                                    "disk0", "rng0", "balloon0"}));
  }
  EXPECT_EQ(cmdline, "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 "
                     "virtio_mmio.device=4K@0xd0002000:7");
  Rig again(cfg_);
  const auto second = again.dm->infos();
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].details, second[i].details) << first[i].id;
}

TEST_F(DeviceManagerTest, StartupErrorsLeaveNothingBehind) {
  cfg_.disks.push_back(config::parse_disk("path=/nonexistent/x.img,format=raw"));
  try {
    Rig r(cfg_);
    ADD_FAILURE() << "missing disk accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.img"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vireo::vmm
