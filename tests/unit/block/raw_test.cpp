#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/block.h"
#include "common/error.h"
#include "helpers.h"

using namespace vireo::block;
using namespace blocktest;

TEST(RawImage, CreateWriteReadAndProbe) {
  TempDir d;
  CreateOptions c;
  c.format = "raw";
  c.size = 1 << 20;
  create_image(d.path("a.raw"), c);
  EXPECT_EQ(probe_format(d.path("a.raw")), "raw");
  auto img = open_image(d.path("a.raw"), rw());
  EXPECT_EQ(img->format(), "raw");
  EXPECT_EQ(img->size(), 1u << 20);
  auto p = pattern(10000, 1);
  img->write(12345, p);
  std::vector<uint8_t> back(10000);
  img->read(12345, back);
  EXPECT_EQ(back, p);
  std::vector<uint8_t> one(1);
  EXPECT_THROW(img->read(1 << 20, one), vireo::Error);
  EXPECT_THROW(img->write((1 << 20) - 1, std::vector<uint8_t>(2)), vireo::Error);
}

TEST(RawImage, SizeIsRoundedUpToSectorsAsQemuDoes) {
  TempDir d;
  write_file(d.path("odd.raw"), std::vector<uint8_t>(100, 0x41));
  auto img = open_image(d.path("odd.raw"), rw());
  EXPECT_EQ(img->size(), 512u);   // qemu-img info: "virtual size: 512 B (512 bytes)"
  std::vector<uint8_t> b(512, 0xff);
  img->read(0, b);
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.begin() + 100), std::vector<uint8_t>(100, 0x41));
  EXPECT_EQ(std::vector<uint8_t>(b.begin() + 100, b.end()), std::vector<uint8_t>(412, 0));
  const Extent e = img->block_status(100, 412);   // past the end of the file: a hole
  EXPECT_TRUE(e.zero);
  EXPECT_FALSE(e.data);
  EXPECT_EQ(e.length, 412u);
  std::vector<uint8_t> one(1);
  EXPECT_THROW(img->read(512, one), vireo::Error);
}

TEST(RawImage, BlockStatusSeesHolesAndData) {
  TempDir d;
  CreateOptions c;
  c.format = "raw";
  c.size = 4 << 20;
  create_image(d.path("a.raw"), c);
  auto img = open_image(d.path("a.raw"), rw());
  img->write(1 << 20, pattern(65536, 2));
  img->flush();
  Extent e = img->block_status(0, 4 << 20);
  EXPECT_FALSE(e.data);
  EXPECT_TRUE(e.zero);
  EXPECT_EQ(e.length, 1u << 20);
  e = img->block_status(1 << 20, 4 << 20);
  EXPECT_TRUE(e.data);
  EXPECT_GE(e.length, 65536u);
  ASSERT_TRUE(e.host_offset.has_value());
  EXPECT_EQ(*e.host_offset, 1u << 20);
}

TEST(RawImage, WriteZeroesDiscardResize) {
  TempDir d;
  CreateOptions c;
  c.format = "raw";
  c.size = 1 << 20;
  create_image(d.path("a.raw"), c);
  auto img = open_image(d.path("a.raw"), rw());
  img->write(0, pattern(1 << 20, 3));
  img->write_zeroes(4096, 8192, false);
  img->discard(65536, 65536);
  auto all = read_all(*img);
  for (size_t i = 4096; i < 4096 + 8192; i++) ASSERT_EQ(all[i], 0) << i;
  EXPECT_NE(all[0], 0);
  EXPECT_THROW(img->resize(4096, false), vireo::Error);
  img->resize(2 << 20, false);
  EXPECT_EQ(img->size(), 2u << 20);
  img->resize(4096, true);
  EXPECT_EQ(img->size(), 4096u);
}

TEST(RawImage, PreallocationFullAllocates) {
  TempDir d;
  CreateOptions c;
  c.format = "raw";
  c.size = 1 << 20;
  c.preallocation = "full";
  create_image(d.path("a.raw"), c);
  auto img = open_image(d.path("a.raw"), ro());
  EXPECT_GE(img->file_allocated_bytes(), 1u << 20);
  c.preallocation = "bogus";
  EXPECT_THROW(create_image(d.path("b.raw"), c), vireo::Error);
}

TEST(ImageLocking, SecondWriterIsRefusedForceShareReaderAllowed) {
  TempDir d;
  CreateOptions c;
  c.format = "qcow2";
  c.size = 1 << 20;
  create_image(d.path("a.qcow2"), c);
  auto w = open_image(d.path("a.qcow2"), rw());
  try {
    open_image(d.path("a.qcow2"), rw());
    FAIL() << "second writer was allowed";
  } catch (const vireo::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Failed to get"), std::string::npos) << e.what();
  }
  EXPECT_THROW(open_image(d.path("a.qcow2"), ro()), vireo::Error);
  OpenOptions shared = ro();
  shared.force_share = true;
  EXPECT_NO_THROW(open_image(d.path("a.qcow2"), shared));
  OpenOptions bad = rw();
  bad.force_share = true;
  EXPECT_THROW(open_image(d.path("a.qcow2"), bad), vireo::Error);
  w.reset();
  EXPECT_NO_THROW(open_image(d.path("a.qcow2"), rw()));
}

TEST(ImageLocking, InteroperatesWithQemuLocks) {
  if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
  TempDir d;
  CreateOptions c;
  c.format = "qcow2";
  c.size = 1 << 20;
  create_image(d.path("a.qcow2"), c);
  {
    auto w = open_image(d.path("a.qcow2"), rw());
    auto r = run("qemu-img info " + d.path("a.qcow2"));
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("lock"), std::string::npos) << r.out;
    EXPECT_EQ(run("qemu-img info -U " + d.path("a.qcow2")).status, 0);
  }
  // qemu-io holds the image read-write (sleeping) while we try to open it.
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execlp("qemu-io", "qemu-io", "-c", "sleep 20000", d.path("a.qcow2").c_str(), nullptr);
    _exit(127);
  }
  bool refused = false;
  std::string msg;
  for (int i = 0; i < 100 && !refused; i++) {
    usleep(50000);
    ASSERT_EQ(waitpid(pid, nullptr, WNOHANG), 0) << "qemu-io exited early";
    OpenOptions probe = ro();
    probe.force_share = true;
    auto img = open_image(d.path("a.qcow2"), probe);  // takes no locks: cannot disturb qemu-io
    img.reset();
    std::string locks = run("cat /proc/locks").out;
    struct stat st {};
    ASSERT_EQ(stat(d.path("a.qcow2").c_str(), &st), 0);
    if (locks.find(":" + std::to_string(st.st_ino) + " 201 201") == std::string::npos) continue;  // not yet
    try {
      open_image(d.path("a.qcow2"), rw());
    } catch (const vireo::Error& e) {
      refused = true;
      msg = e.what();
    }
    break;
  }
  EXPECT_TRUE(refused);
  EXPECT_NE(msg.find("Failed to get"), std::string::npos) << msg;
  OpenOptions shared = ro();
  shared.force_share = true;
  EXPECT_NO_THROW(open_image(d.path("a.qcow2"), shared));
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}
