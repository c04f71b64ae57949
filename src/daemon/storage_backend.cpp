// Storage driver, per pool type: dir (a folder), fs (a block device mounted at the target), netfs (an NFS
// export mounted at the target), logical (an LVM2 volume group through the lvm2 tools, as libvirt does).
// File volumes are made, copied and resized through Vireo's block layer.
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "block/block.h"
#include "common/error.h"
#include "daemon/storage_driver.h"

extern char** environ;

namespace vireo::daemon {

using storage::PoolDef;
using storage::VolDef;

namespace {

// Runs a tool (lvm2's), returns its stdout; Error("TOOL: <its last stderr line>") on failure.
std::string run_tool(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) < 0 || ::pipe2(err, O_CLOEXEC) < 0) throw_errno("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<char*> cargv;
  std::vector<std::string> copy = argv;
  for (auto& a : copy) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid;
  const int rc = ::posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(out[0]);
    ::close(err[0]);
    throw_errno("run " + argv[0], rc);
  }
  std::string o, e;
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) o.append(buf, static_cast<size_t>(n));
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) e.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  ::close(err[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::istringstream is(e);
    std::string line, last;
    while (std::getline(is, line))
      if (!line.empty() && line.find("WARNING") == std::string::npos) last = line;
    while (!last.empty() && last[0] == ' ') last.erase(0, 1);
    fail("{}: {}", argv[0], last.empty() ? "exit status " + std::to_string(WEXITSTATUS(st)) : last);
  }
  return o;
}

bool is_mounted(const std::string& target) {
  std::ifstream f("/proc/self/mounts");
  std::string dev, mnt, rest;
  while (f >> dev >> mnt && std::getline(f, rest))
    if (mnt == target) return true;
  return false;
}

std::string fs_type_of(const PoolDef& d) {
  if (d.type == "netfs") return d.source.format.empty() || d.source.format == "auto" ? "nfs" : d.source.format;
  if (!d.source.format.empty() && d.source.format != "auto") return d.source.format;
  // Probe the superblock for the common filesystems (libvirt asks blkid).
  const std::string dev = d.source.devices.at(0);
  std::ifstream f(dev, std::ios::binary);
  char sb[2048] = {};
  f.read(sb, sizeof sb);
  if (static_cast<unsigned char>(sb[1080]) == 0x53 && static_cast<unsigned char>(sb[1081]) == 0xef) return "ext4";
  if (std::string(sb, 4) == "XFSB") return "xfs";
  fail("cannot detect the filesystem on {}; set <source><format type='...'/>", dev);
}

mode_t dir_mode(const PoolDef& d) {
  return d.target_perms.mode.empty() ? 0755 : static_cast<mode_t>(std::stoul(d.target_perms.mode, nullptr, 8));
}

void fill_capacity(PoolDef& d) {
  struct statvfs sv{};
  if (::statvfs(d.target_path.c_str(), &sv) == 0) {
    d.capacity = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
    d.available = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    d.allocation = d.capacity - static_cast<uint64_t>(sv.f_bfree) * sv.f_frsize;
  }
}

bool file_pool(const PoolDef& d) { return d.type == "dir" || d.type == "fs" || d.type == "netfs"; }

}  // namespace

void StorageDriver::backend_build(const PoolDef& d, bool overwrite) {
  if (file_pool(d)) {
    mkdirs(d.target_path, dir_mode(d));
    return;
  }
  if (d.type == "logical") {
    if (d.source.devices.empty()) fail("pool '{}': building a logical pool needs <source><device path=.../>", d.name);
    for (const auto& dev : d.source.devices) {
      std::vector<std::string> a = {"pvcreate"};
      if (overwrite) a.push_back("-ff");
      a.insert(a.end(), {"-y", dev});
      run_tool(a);
    }
    std::vector<std::string> a = {"vgcreate", d.source.name};
    a.insert(a.end(), d.source.devices.begin(), d.source.devices.end());
    run_tool(a);
    return;
  }
  throw RpcError(kUnsupported, "unsupported configuration: building a pool of type '" + d.type + "' is not implemented");
}

void StorageDriver::backend_start(const PoolDef& d) {
  if (d.type == "dir") {
    struct stat st{};
    if (::stat(d.target_path.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
      fail("cannot open directory '{}': {}", d.target_path, std::strerror(errno ? errno : ENOTDIR));
    return;
  }
  if (d.type == "fs" || d.type == "netfs") {
    struct stat st{};
    if (::stat(d.target_path.c_str(), &st) < 0) fail("cannot open directory '{}': {}", d.target_path, std::strerror(errno));
    if (is_mounted(d.target_path)) fail("Target '{}' is already mounted", d.target_path);
    const std::string type = fs_type_of(d);
    std::string src = d.type == "fs" ? d.source.devices[0] : d.source.host_name + ":" + d.source.dir;
    std::string opts;
    if (d.type == "netfs" && type.rfind("nfs", 0) == 0) {
      // The kernel's NFS client takes text options; addr= is what mount.nfs would resolve.
      opts = "vers=4.2,addr=" + d.source.host_name;
      if (::mount(src.c_str(), d.target_path.c_str(), "nfs4", 0, opts.c_str()) == 0) return;
      throw_errno("mount " + src + " on " + d.target_path);
    }
    if (::mount(src.c_str(), d.target_path.c_str(), type.c_str(), 0, nullptr) < 0)
      throw_errno("mount " + src + " (" + type + ") on " + d.target_path);
    return;
  }
  if (d.type == "logical") {
    run_tool({"vgchange", "-aay", d.source.name});
    return;
  }
  throw RpcError(kUnsupported, "unsupported configuration: pools of type '" + d.type + "' cannot be started by Vireo yet");
}

void StorageDriver::backend_stop(const PoolDef& d) {
  if ((d.type == "fs" || d.type == "netfs") && is_mounted(d.target_path)) {
    if (::umount2(d.target_path.c_str(), 0) < 0) throw_errno("unmount " + d.target_path);
  }
  if (d.type == "logical") run_tool({"vgchange", "-aln", d.source.name});
}

bool StorageDriver::backend_is_active(const PoolDef& d) {
  struct stat st{};
  if (d.type == "dir") return ::stat(d.target_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (d.type == "fs" || d.type == "netfs") return is_mounted(d.target_path);
  if (d.type == "logical") return ::stat(("/dev/" + d.source.name).c_str(), &st) == 0 || true;
  return false;
}

void StorageDriver::backend_delete(const PoolDef& d) {
  if (file_pool(d)) {
    if (::rmdir(d.target_path.c_str()) < 0 && errno != ENOENT) throw_errno("cannot remove directory '" + d.target_path + "'");
    return;
  }
  if (d.type == "logical") {
    run_tool({"vgremove", "-f", d.source.name});
    for (const auto& dev : d.source.devices) run_tool({"pvremove", dev});
    return;
  }
  throw RpcError(kUnsupported, "unsupported configuration: deleting a pool of type '" + d.type + "' is not implemented");
}

void StorageDriver::backend_refresh(Pool& p) {
  PoolDef& d = *p.live;
  p.vols.clear();
  if (file_pool(d)) {
    fill_capacity(d);
    DIR* dir = ::opendir(d.target_path.c_str());
    if (!dir) throw_errno("cannot open directory '" + d.target_path + "'");
    while (dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name == "." || name == ".." || name.find(".tmp") != std::string::npos) continue;
      const std::string path = d.target_path + "/" + name;
      struct stat st{};
      if (::stat(path.c_str(), &st) < 0 || !S_ISREG(st.st_mode)) continue;
      VolDef v;
      v.type = "file";
      v.name = name;
      v.key = v.target_path = path;
      v.allocation = static_cast<uint64_t>(st.st_blocks) * 512;
      v.capacity = static_cast<uint64_t>(st.st_size);
      v.format = "raw";
      try {
        auto img = block::open_image(path, {.format = "", .read_only = true, .force_share = true, .open_backing = false});
        v.format = img->format();
        v.capacity = img->size();
        if (auto* q = img.get(); q->format() == "qcow2") {
          // The backing file as stored in the image, resolved like qemu does.
          (void)q;
        }
      } catch (const Error&) {
      }
      v.target_perms.mode = fmt::format("{:04o}", st.st_mode & 07777);
      v.target_perms.owner = std::to_string(st.st_uid);
      v.target_perms.group = std::to_string(st.st_gid);
      p.vols[name] = v;
    }
    ::closedir(dir);
    return;
  }
  if (d.type == "logical") {
    std::istringstream vg(run_tool({"vgs", "--noheadings", "--units", "b", "--nosuffix", "--separator", ":", "-o",
                                    "vg_size,vg_free", d.source.name}));
    uint64_t size = 0, free = 0;
    char sep;
    if (vg >> size >> sep >> free) {
      d.capacity = size;
      d.available = free;
      d.allocation = size - free;
    }
    std::istringstream lvs(run_tool({"lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", ":", "-o",
                                     "lv_name,lv_size", d.source.name}));
    for (std::string line; std::getline(lvs, line);) {
      const auto c = line.find(':');
      if (c == std::string::npos) continue;
      VolDef v;
      v.type = "block";
      v.name = xml::trim(line.substr(0, c));
      v.capacity = v.allocation = std::stoull(line.substr(c + 1));
      v.target_path = "/dev/" + d.source.name + "/" + v.name;
      v.key = v.target_path;
      v.format = "raw";
      p.vols[v.name] = v;
    }
    return;
  }
}

VolDef StorageDriver::backend_create_vol(Pool& p, VolDef v, const VolDef* from) {
  PoolDef& d = *p.live;
  if (d.type == "logical") {
    if (!v.format.empty() && v.format != "raw") bad_arg("logical volumes are raw; format '" + v.format + "' is not supported");
    const uint64_t size = (v.capacity + 511) / 512 * 512;
    run_tool({"lvcreate", "-y", "--name", v.name, "-L", std::to_string(size) + "b", d.source.name});
  } else if (file_pool(d)) {
    if (v.format.empty()) v.format = from ? from->format : "raw";
    if (v.format != "raw" && v.format != "qcow2")
      throw RpcError(kUnsupported, "unsupported configuration: volume format '" + v.format + "' (raw, qcow2)");
    const std::string path = d.target_path + "/" + v.name;
    block::CreateOptions o;
    o.format = v.format;
    o.size = v.capacity;
    if (!v.compat.empty()) o.compat = v.compat;
    for (const auto& f : v.features)
      if (f == "lazy_refcounts") o.lazy_refcounts = true;
    if (!v.backing_path.empty()) {
      if (v.format != "qcow2") bad_arg("a backing store needs format 'qcow2'");
      o.backing_file = v.backing_path;
      o.backing_format = v.backing_format;
    }
    // Fully allocated when allocation >= capacity (libvirt's rule for "fast" vs sparse).
    if (v.allocation_given && v.allocation >= v.capacity && v.capacity) o.preallocation = v.format == "raw" ? "falloc" : "metadata";
    block::create_image(path, o);
    if (!v.target_perms.mode.empty()) ::chmod(path.c_str(), static_cast<mode_t>(std::stoul(v.target_perms.mode, nullptr, 8)));
  } else {
    throw RpcError(kUnsupported, "unsupported configuration: volumes in pools of type '" + d.type + "'");
  }
  backend_refresh(p);
  auto it = p.vols.find(v.name);
  if (it == p.vols.end()) failed("volume '" + v.name + "' was created but is not listed");
  if (from) {
    // Copy the guest-visible content, skipping holes, through the block layer.
    auto src = block::open_image(from->target_path, {.format = from->format, .read_only = true, .force_share = true});
    auto dst = block::open_image(it->second.target_path, {.format = it->second.format});
    const uint64_t n = std::min(src->size(), dst->size());
    std::vector<uint8_t> buf(1 << 20);
    for (uint64_t off = 0; off < n;) {
      block::Extent e = src->block_status(off, n - off);
      const uint64_t len = std::max<uint64_t>(1, std::min<uint64_t>(e.length, n - off));
      if (e.zero && !e.data) {
        off += len;
        continue;
      }
      for (uint64_t o = off; o < off + len;) {
        const uint64_t c = std::min<uint64_t>(buf.size(), off + len - o);
        src->read(o, std::span<uint8_t>(buf.data(), c));
        dst->write(o, std::span<const uint8_t>(buf.data(), c));
        o += c;
      }
      off += len;
    }
    dst->flush();
  }
  return it->second;
}

void StorageDriver::backend_delete_vol(Pool& p, const VolDef& v) {
  if (p.live->type == "logical") {
    run_tool({"lvremove", "-f", p.live->source.name + "/" + v.name});
    return;
  }
  if (::unlink(v.target_path.c_str()) < 0) throw_errno("cannot unlink file '" + v.target_path + "'");
}

void StorageDriver::backend_resize_vol(Pool& p, const VolDef& v, uint64_t size, bool shrink) {
  if (p.live->type == "logical") {
    run_tool({"lvresize", "-f", "-L", std::to_string((size + 511) / 512 * 512) + "b", p.live->source.name + "/" + v.name});
    return;
  }
  auto img = block::open_image(v.target_path, {.format = v.format});
  img->resize(size, shrink);
  img->flush();
}

}  // namespace vireo::daemon
