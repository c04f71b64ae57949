"""Vireo test support: run things with a working /dev/kvm, here or inside the KVM kit.

Routes (see docs/kvm-kit.md):
  host  /dev/kvm opens here and KVM_GET_API_VERSION returns 12: commands run directly.
  kit   no usable /dev/kvm, but QEMU (TCG, -cpu max emulates AMD SVM), a Debian kernel with 9p and its kvm
        modules, and a static busybox are present: each call boots a small VM whose kernel loads kvm_amd, so
        /dev/kvm works inside it. The host's / is shared read-only over 9p; SOURCE_DIR, BUILD_DIR and any
        extra paths are shared read-write at the same absolute paths; the command runs in a chroot of that.
  none  neither: KVM tests skip with the reason.
A PVM /dev/kvm (kvm_pvm: MSR 0x4b564d11 reads 0x4d5650) runs Vireo's own test guests but not unmodified
kernels or firmware (they run in its instruction emulator and die): calls for such guests pass
unmodified=True and take the kit route on a PVM host.

API (stable, other areas depend on it):
  BUILD_DIR, SOURCE_DIR, kvm_route(), require_kvm(), run_vmm(), run_kvm_script(), Result.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import glob
import gzip
import hashlib
import lzma
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BUILD_DIR", "SOURCE_DIR", "Result", "KitError", "kvm_route", "require_kvm", "run_vmm",
           "run_kvm_script", "host_kvm_is_pvm"]

SOURCE_DIR = Path(os.environ.get("VIREO_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()
BUILD_DIR = Path(os.environ.get("VIREO_BUILD_DIR") or (SOURCE_DIR / "build")).resolve()

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
KVM_CREATE_VM = 0xAE01
KVM_CREATE_VCPU = 0xAE41
KVM_GET_MSRS = 0xC008AE88  # _IOWR(KVMIO, 0x88, struct kvm_msrs) (8-byte header)
PVM_SIGNATURE_MSR = 0x4B564D11
PVM_SIGNATURE = 0x4D5650  # "PVM"

# Kit VM shape: 2 vCPUs so 4-vCPU SMP guests can run (overcommitted), 2 GiB for 64-256 MiB guests.
KIT_CPUS = int(os.environ.get("VIREO_KIT_CPUS", "2"))
KIT_MEMORY_MIB = int(os.environ.get("VIREO_KIT_MEMORY_MIB", "2048"))
# q35, not microvm: microvm is ~0.4 s faster to boot but has no HPET/ACPI PM timer, and under TCG on a
# loaded host the kernel's TSC calibration against the PIT then fails and the boot sometimes hangs.
KIT_MACHINE = os.environ.get("VIREO_KIT_MACHINE", "q35")
# Multi-threaded TCG: single-threaded TCG costs less CPU (~3.3 CPU-s per boot instead of ~5.3), but SMP
# guests stall under it (QEMU's own too). Measured 2026-12-02 on a PVM host during the full suite:
# virtio_linux failed at its 420 s timeout with thread=single and passed in 49 s with thread=multi.
KIT_TCG_THREAD = os.environ.get("VIREO_KIT_TCG_THREAD", "multi")
# quiet: the console only carries kit messages and real problems (it is kept when a call fails).
_KIT_CMDLINE = os.environ.get("VIREO_KIT_CMDLINE", "quiet loglevel=3")
# lpj: skip the per-CPU delay-loop calibration (~0.5 s under TCG; delays use the TSC anyway);
# cryptomgr.notests: skip the crypto self-tests at boot.
_KIT_CMDLINE_FIXED = "panic=-1 mitigations=off rdinit=/init lpj=8000000 cryptomgr.notests " \
                     "i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable"
# 9p message size: bigger is faster for large files; QEMU's virtio-9p accepts up to ~512 KiB.
_MSIZE = 512 * 1024
# Bump when the initramfs layout or init changes (part of the cache key).
_KIT_FORMAT = 3
# Each share is one virtio-9p-pci device on q35's bus 0 (32 slots, a few taken).
_MAX_SHARES = 20

# Modules in the initramfs (with their dependencies from modules.dep): 9p over virtio-pci to reach the shared
# root, kvm_amd for /dev/kvm, tun for taps. Anything else (bridge, veth, vhost_net, ...) is autoloaded on demand
# by the host's own modprobe run against the shared /lib/modules (see _MODPROBE_WRAPPER).
_INITRAMFS_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "kvm_amd", "tun"]


@dataclasses.dataclass
class Result:
    """What a command run with /dev/kvm produced.

    returncode is the exit status (killed by signal N: -N on the host route, 128+N from the kit's shell), or
    None if the call hit its timeout (then timed_out is True and stdout/stderr hold whatever had been written by then).
    """

    returncode: int | None
    stdout: bytes
    stderr: bytes
    route: str
    timed_out: bool = False
    elapsed: float = 0.0
    console: str = ""  # kit route: the kit kernel's console log (kept for debugging failures)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        """stdout and stderr decoded, for assertion messages."""
        return (f"route={self.route} rc={self.returncode} timed_out={self.timed_out}\n"
                f"--- stdout ---\n{self.stdout.decode(errors='replace')}\n"
                f"--- stderr ---\n{self.stderr.decode(errors='replace')}")


class KitError(RuntimeError):
    """The kit itself failed (QEMU did not start, the kit kernel did not boot, shares did not mount)."""


# ----------------------------------------------------------------------------------------------------------
# Route selection

def _host_kvm_status() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"cannot open /dev/kvm: {os.strerror(e.errno)}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
    except OSError as e:
        return False, f"KVM_GET_API_VERSION on /dev/kvm failed: {os.strerror(e.errno)}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return False, f"/dev/kvm reports KVM API version {version}, need {KVM_API_VERSION}"
    return True, "/dev/kvm usable (KVM API 12)"


@functools.lru_cache(maxsize=None)
def host_kvm_is_pvm() -> bool:
    """True if this machine's /dev/kvm is PVM (kvm_pvm): KVM_GET_MSRS of 0x4b564d11 on a vCPU returns
    0x4d5650. On hardware KVM that MSR is unknown (0 entries processed). False when /dev/kvm is unusable."""
    import struct
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    vm = vcpu = -1
    try:
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
        buf = bytearray(struct.pack("<IIIIQ", 1, 0, PVM_SIGNATURE_MSR, 0, 0))
        n = fcntl.ioctl(vcpu, KVM_GET_MSRS, buf, True)
        return n == 1 and struct.unpack_from("<Q", buf, 16)[0] == PVM_SIGNATURE
    except OSError:
        return False
    finally:
        for f in (vcpu, vm):
            if f >= 0:
                os.close(f)
        os.close(fd)


def _is_static_elf(path: str) -> bool:
    """True if path is an ELF64 executable without a PT_INTERP program header (i.e. statically linked)."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return False
            phoff = int.from_bytes(hdr[32:40], "little")
            phentsize = int.from_bytes(hdr[54:56], "little")
            phnum = int.from_bytes(hdr[56:58], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
        for i in range(phnum):
            if int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") == 3:  # PT_INTERP
                return False
        return True
    except OSError:
        return False


def _version_key(v: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", v)]


def _module_path(moddir: Path, name: str, dep: dict[str, list[str]]) -> str | None:
    """modules.dep key for a module name (dashes and underscores are equivalent)."""
    want = name.replace("-", "_")
    for key in dep:
        base = os.path.basename(key).split(".ko")[0].replace("-", "_")
        if base == want:
            return key
    return None


def _read_modules_dep(moddir: Path) -> dict[str, list[str]]:
    dep: dict[str, list[str]] = {}
    with open(moddir / "modules.dep") as f:
        for line in f:
            if ":" not in line:
                continue
            k, v = line.split(":", 1)
            dep[k.strip()] = v.split()
    return dep


def _resolve_modules(moddir: Path, names: list[str]) -> list[str]:
    """Module files (relative to moddir) for names plus their dependencies, in load order."""
    dep = _read_modules_dep(moddir)
    order: list[str] = []

    def add(key: str):
        if key in order:
            return
        # modules.dep lists dependencies so that the last one must be loaded first.
        for d in reversed(dep.get(key, [])):
            add(d)
        order.append(key)

    for n in names:
        key = _module_path(moddir, n, dep)
        if key is None:
            raise FileNotFoundError(f"module {n} not found in {moddir}/modules.dep")
        add(key)
    return order


@dataclasses.dataclass
class _KitInputs:
    qemu: str
    kernel: Path
    moddir: Path
    busybox: str


@functools.lru_cache(maxsize=None)
def _find_kit_inputs() -> tuple[_KitInputs | None, str]:
    qemu = os.environ.get("VIREO_KIT_QEMU") or shutil.which("qemu-system-x86_64") or \
        ("/usr/bin/qemu-system-x86_64" if os.access("/usr/bin/qemu-system-x86_64", os.X_OK) else None)
    if not qemu:
        return None, "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    busybox = None
    for cand in [os.environ.get("VIREO_KIT_BUSYBOX"), "/bin/busybox", "/usr/bin/busybox"]:
        if cand and _is_static_elf(cand):
            busybox = cand
            break
    if not busybox:
        return None, "no statically linked busybox (apt-get install busybox-static)"
    kernels = []
    forced = os.environ.get("VIREO_KIT_KERNEL")
    cands = [forced] if forced else glob.glob("/boot/vmlinuz-*")
    reasons = []
    for k in cands:
        version = os.path.basename(k)[len("vmlinuz-"):]
        moddir = Path("/lib/modules") / version
        if not os.access(k, os.R_OK):
            reasons.append(f"{k}: not readable")
            continue
        if not (moddir / "modules.dep").exists():
            reasons.append(f"{k}: no {moddir}/modules.dep")
            continue
        try:
            _resolve_modules(moddir, _INITRAMFS_MODULES + ["kvm_amd"])
        except (FileNotFoundError, OSError) as e:
            reasons.append(f"{k}: {e}")
            continue
        kernels.append((version, Path(k), moddir))
    if not kernels:
        return None, ("no kernel in /boot with 9p, virtio-pci and kvm_amd modules (apt-get install "
                      "linux-image-amd64): " + "; ".join(reasons))
    kernels.sort(key=lambda t: _version_key(t[0]), reverse=True)
    _, kernel, moddir = kernels[0]
    return _KitInputs(qemu, kernel, moddir, busybox), f"KVM kit: {kernel} under QEMU TCG (-cpu max, AMD SVM)"


@functools.lru_cache(maxsize=None)
def kvm_route(unmodified: bool = False) -> tuple[str, str]:
    """("host", why) if /dev/kvm is usable here, ("kit", why) if the kit can run, ("none", why) otherwise.

    unmodified=True: the caller boots an unmodified kernel or firmware, which a PVM /dev/kvm cannot run, so on a
    PVM host the route is the kit. VIREO_KVM_ROUTE=host|kit|none forces a route (kit on a KVM machine exercises
    the kit; none skips; host keeps even unmodified guests on a PVM host)."""
    forced = os.environ.get("VIREO_KVM_ROUTE", "")
    ok, why_host = _host_kvm_status()
    if forced == "none":
        return "none", "VIREO_KVM_ROUTE=none"
    if forced == "host":
        return ("host", why_host) if ok else ("none", why_host)
    if ok and unmodified and host_kvm_is_pvm():
        ok, why_host = False, "/dev/kvm is PVM (kvm_pvm), which cannot run unmodified kernels or firmware"
    if ok and forced != "kit":
        return "host", why_host
    inputs, why_kit = _find_kit_inputs()
    if inputs is None:
        return "none", f"{why_host}; KVM kit unavailable: {why_kit}"
    return "kit", f"{why_host}; using {why_kit}"


def require_kvm(unmodified: bool = False) -> str:
    """pytest.skip() with the reason when no route to /dev/kvm exists; returns the route otherwise.
    unmodified=True for unmodified kernels/firmware (see kvm_route)."""
    route, why = kvm_route(unmodified)
    if route == "none":
        import pytest
        pytest.skip(f"no /dev/kvm: {why}")
    return route


# ----------------------------------------------------------------------------------------------------------
# Initramfs

_INIT = r"""#!/bin/busybox sh
# Vireo KVM kit init (generated by tests/support/vireo_testing.py).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 0 > /proc/sys/kernel/printk 2>/dev/null
while read -r m; do
  insmod "/modules/$m" || echo "kit: insmod $m failed"
done < /modules.order
ip link set lo up 2>/dev/null
mkdir -p /kit
tries=0
until mount -t 9p -o trans=virtio,version=9p2000.L,msize=__MSIZE__,cache=none kitctl /kit 2>/dev/null; do
  tries=$((tries + 1))
  if [ $tries -ge 50 ]; then echo "kit: cannot mount the control share"; break; fi
  sleep 0.1
done
if [ -f /kit/boot.sh ]; then
  sh /kit/boot.sh
else
  echo "kit: no /kit/boot.sh"
fi
sync
reboot -f
"""

_MODPROBE_WRAPPER = """#!/bin/sh
# Kernel module autoload inside the kit: use the host's modprobe and /lib/modules from the shared root.
exec /bin/chroot /newroot /sbin/modprobe "$@"
"""


def _elf_has_pvh_note(data: bytes) -> bool:
    """True if an ELF64 image has a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        ph = data[phoff + i * phentsize:phoff + (i + 1) * phentsize]
        if int.from_bytes(ph[0:4], "little") != 4:  # PT_NOTE
            continue
        off = int.from_bytes(ph[8:16], "little")
        size = int.from_bytes(ph[32:40], "little")
        pos, end = off, off + size
        while pos + 12 <= end:
            namesz = int.from_bytes(data[pos:pos + 4], "little")
            descsz = int.from_bytes(data[pos + 4:pos + 8], "little")
            ntype = int.from_bytes(data[pos + 8:pos + 12], "little")
            name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def _decompress_payload(payload: bytes) -> bytes | None:
    if payload.startswith(b"\xfd7zXZ\0"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return gzip.decompress(payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd") and shutil.which("zstd"):
        return subprocess.run([shutil.which("zstd"), "-dc"], input=payload, check=True,
                              stdout=subprocess.PIPE).stdout
    return None


def _boot_image(kernel: Path) -> Path:
    """The kernel image QEMU boots. A bzImage decompresses itself at boot, which under TCG costs ~2.5 s per
    call; so the vmlinux ELF inside it is extracted once (cached) and booted through its PVH entry point.
    Falls back to the bzImage when the payload or the PVH note is missing."""
    st = kernel.stat()
    key = hashlib.sha256(f"{kernel} {st.st_size} {st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _kit_cache_dir()
    target = cache / f"vmlinux-{key}"
    if target.exists():
        return target
    if (cache / f"vmlinux-{key}.unusable").exists():
        return kernel
    try:
        d = kernel.read_bytes()
        if d[0x202:0x206] != b"HdrS" or int.from_bytes(d[0x206:0x208], "little") < 0x208:
            raise ValueError("not a bzImage with boot protocol >= 2.08")
        setup_sects = d[0x1f1] or 4
        start = (setup_sects + 1) * 512 + int.from_bytes(d[0x248:0x24c], "little")
        length = int.from_bytes(d[0x24c:0x250], "little")
        elf = _decompress_payload(d[start:start + length])
        if elf is None or not _elf_has_pvh_note(elf):
            raise ValueError("payload compression unsupported or no PVH entry note")
    except (ValueError, OSError, lzma.LZMAError, subprocess.CalledProcessError):
        (cache / f"vmlinux-{key}.unusable").touch()
        return kernel
    fd, tmp = tempfile.mkstemp(prefix=".vmlinux-", dir=cache)
    with os.fdopen(fd, "wb") as f:
        f.write(elf)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    _prune(cache, "vmlinux-", target)
    return target


def _prune(cache: Path, prefix: str, keep: Path):
    """Drop cache entries of an older kernel/format (older than a day, so no running call still uses them)."""
    for p in cache.glob(prefix + "*"):
        try:
            if p != keep and time.time() - p.stat().st_mtime > 86400:
                p.unlink()
        except OSError:
            pass


def _cpio_newc(entries) -> bytes:
    """A newc cpio archive. entries: iterable of (name, mode, data bytes or None)."""
    out = bytearray()
    ino = 1

    def pad4():
        while len(out) % 4:
            out.append(0)

    def put(name: str, mode: int, data: bytes):
        nonlocal ino
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.extend(b"070701" + b"".join(b"%08X" % v for v in fields))
        out.extend(nb)
        pad4()
        out.extend(data)
        pad4()
        ino += 1

    for name, mode, data in entries:
        put(name, mode, data or b"")
    put("TRAILER!!!", 0, b"")
    return bytes(out)


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        zstd = shutil.which("zstd")
        if not zstd:
            raise KitError(f"{path}: zstd-compressed module and no zstd tool")
        return subprocess.run([zstd, "-dc", str(path)], check=True, stdout=subprocess.PIPE).stdout
    return data


def _kit_cache_dir() -> Path:
    d = Path(os.environ.get("VIREO_KIT_CACHE") or (BUILD_DIR / "kvm-kit"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _initramfs(inputs: _KitInputs) -> Path:
    """Build (or reuse) the kit initramfs; the file name carries a hash of every input."""
    mods = _resolve_modules(inputs.moddir, _INITRAMFS_MODULES)
    h = hashlib.sha256()
    h.update(f"format={_KIT_FORMAT}\n{_INIT}\n{_MODPROBE_WRAPPER}\n{_MSIZE}\n".encode())
    for p in [inputs.busybox, str(inputs.kernel)] + [str(inputs.moddir / m) for m in mods]:
        st = os.stat(p)
        h.update(f"{p} {st.st_size} {st.st_mtime_ns}\n".encode())
    target = _kit_cache_dir() / f"initramfs-{h.hexdigest()[:16]}.cpio"
    if target.exists():
        return target
    entries = []
    for d in ["bin", "dev", "proc", "sys", "modules", "kit", "newroot", "tmp", "sbin"]:
        entries.append((d, stat.S_IFDIR | 0o755, None))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, None))  # rdev 0: devtmpfs replaces it anyway
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(inputs.busybox).read_bytes()))
    entries.append(("init", stat.S_IFREG | 0o755, _INIT.replace("__MSIZE__", str(_MSIZE)).encode()))
    entries.append(("sbin/kit-modprobe", stat.S_IFREG | 0o755, _MODPROBE_WRAPPER.encode()))
    order = []
    for m in mods:
        base = os.path.basename(m).split(".ko")[0] + ".ko"
        entries.append((f"modules/{base}", stat.S_IFREG | 0o644, _read_module(inputs.moddir / m)))
        order.append(base)
    entries.append(("modules.order", stat.S_IFREG | 0o644, ("\n".join(order) + "\n").encode()))
    data = _cpio_newc(entries)
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=target.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)  # atomic: parallel builders produce identical files
    _prune(target.parent, "initramfs-", target)
    return target


# ----------------------------------------------------------------------------------------------------------
# Running

def _merged_env(env: dict | None) -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("VIREO_BUILD_DIR", str(BUILD_DIR))
    e.setdefault("VIREO_SOURCE_DIR", str(SOURCE_DIR))
    if env:
        e.update({str(k): str(v) for k, v in env.items()})
    return e


def _run_host(argv: list[str], timeout: float, input: bytes | None, env: dict[str, str]) -> Result:
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)
    except OSError as e:  # same statuses as the shell gives inside the kit
        rc = 127 if e.errno == errno.ENOENT else 126
        return Result(rc, b"", f"{argv[0]}: {os.strerror(e.errno)}\n".encode(), "host",
                      elapsed=time.monotonic() - start)
    try:
        out, err = proc.communicate(input, timeout=timeout)
        return Result(proc.returncode, out, err, "host", elapsed=time.monotonic() - start)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return Result(None, out, err, "host", timed_out=True, elapsed=time.monotonic() - start)


def _die_with_parent():
    """In the child before exec: get SIGKILL when the test process dies (e.g. killed by a ctest timeout), so
    no QEMU or VMM outlives the test that started it."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_SKIP = {"PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLUMNS", "LINES", "VIREO_KVM_ROUTE"}


def _share_roots(paths: list[Path]) -> list[Path]:
    """Absolute, existing directories to share read-write: nested ones dropped, never '/'."""
    dirs = []
    for p in paths:
        p = Path(os.path.abspath(p))
        while not p.exists() and p != p.parent:
            p = p.parent
        if p.exists() and not p.is_dir():
            p = p.parent
        p = Path(os.path.realpath(p))
        if p == Path("/"):
            raise KitError("refusing to share / read-write into the KVM kit; pass a narrower folder")
        dirs.append(p)
    dirs = sorted(set(dirs), key=lambda d: (len(d.parts), str(d)))
    roots: list[Path] = []
    for d in dirs:
        if not any(d == r or r in d.parents for r in roots):
            roots.append(d)
    return roots


def _qemu_escape(s: str) -> str:
    return s.replace(",", ",,")


def _boot_script(shares: list[tuple[str, Path]], ctl: Path, cwd: str) -> str:
    q = shlex.quote
    o9p = f"trans=virtio,version=9p2000.L,msize={_MSIZE}"
    lines = [
        "# per-call kit stage (generated by vireo_testing.py); runs in the initramfs busybox shell",
        "R=/newroot",
        "kit_t() { [ -n \"$KIT_DEBUG\" ] && echo \"kit: $(cut -d' ' -f1 /proc/uptime) $*\"; }",
        "KIT_DEBUG=" + ("1" if os.environ.get("VIREO_KIT_DEBUG") else ""),
        "kit_t stage2 start",
        f"if ! mount -t 9p -o {o9p},ro,cache=loose root $R; then echo 'kit: cannot mount the root share';"
        " exit 1; fi",
        "mount -t proc proc $R/proc",
        "mount -t sysfs sys $R/sys",
        "mount -t devtmpfs dev $R/dev",
        "mkdir -p $R/dev/pts $R/dev/shm",
        "mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts",
        "mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm",
        "echo /sbin/kit-modprobe > /proc/sys/kernel/modprobe",
        "for d in /tmp /var/tmp /run; do [ -d $R$d ] && mount -t tmpfs -o mode=1777 tmpfs $R$d; done",
        # HOME (/root) stays as on the host but writable: an overlay with a throw-away upper layer.
        "mkdir -p /ov && mount -t tmpfs tmpfs /ov && mkdir -p /ov/u /ov/w",
        "mount -t overlay -o lowerdir=$R/root,upperdir=/ov/u,workdir=/ov/w overlay $R/root 2>/dev/null ||"
        " mount -t tmpfs -o mode=700 tmpfs $R/root",
    ]
    for tag, path in shares:
        lines.append(f"mkdir -p $R{q(str(path))} 2>/dev/null")
        lines.append(f"mount -t 9p -o {o9p},cache=none {tag} $R{q(str(path))} || "
                     f"{{ echo {q(f'kit: cannot mount share {tag} at {path}')}; exit 1; }}")
    lines += [
        f"mkdir -p $R{q(str(ctl))} && mount --bind /kit $R{q(str(ctl))}",
        "[ -c $R/dev/kvm ] || chroot $R /sbin/modprobe kvm_amd",
        "[ -c $R/dev/kvm ] || echo 'kit: /dev/kvm missing (kvm_amd did not load; is SVM in -cpu max?)'",
        "chmod 666 $R/dev/kvm 2>/dev/null",
        "kit_t mounts done",
        "echo 'kit: running the script'",
        "cd /",
        f"chroot $R /usr/bin/env -i /bin/sh -c 'cd \"$1\" 2>/dev/null || cd /; . \"$2\"; exec /bin/sh \"$3\"'"
        f" kit {q(cwd)} {q(str(ctl / 'env.sh'))} {q(str(ctl / 'script.sh'))}"
        " </kit/stdin >/kit/stdout 2>/kit/stderr",
        "rc=$?",
        "echo $rc >/kit/rc.tmp && mv /kit/rc.tmp /kit/rc",
        "echo \"kit: script exited with status $rc\"",
        "kit_t script done",
        "sync",
    ]
    return "\n".join(lines) + "\n"


def _run_kit(script: str, timeout: float, files, input: bytes | None, env: dict[str, str]) -> Result:
    start = time.monotonic()
    inputs, why = _find_kit_inputs()
    if inputs is None:
        raise KitError(why)
    initramfs = _initramfs(inputs)
    ctl = Path(tempfile.mkdtemp(prefix="vireo-kit-"))
    try:
        shared = _share_roots([SOURCE_DIR, BUILD_DIR] + [Path(f) for f in files])
        shared = [p for p in shared if p != ctl and ctl not in p.parents]
        if len(shared) > _MAX_SHARES:
            raise KitError(f"{len(shared)} folders to share into the KVM kit; at most {_MAX_SHARES} (one PCI slot "
                           "each): pass common parent folders in `files`")
        shares = [(f"s{i}", p) for i, p in enumerate(shared)]
        (ctl / "script.sh").write_text(script)
        (ctl / "stdin").write_bytes(input or b"")
        env_lines = []
        for k, v in sorted(env.items()):
            if _ENV_NAME.match(k) and k not in _ENV_SKIP and "\0" not in v:
                env_lines.append(f"export {k}={shlex.quote(v)}")
        env_lines.append("export VIREO_KVM_KIT=1")
        (ctl / "env.sh").write_text("\n".join(env_lines) + "\n")
        cwd = os.getcwd()
        (ctl / "boot.sh").write_text(_boot_script(shares, ctl, cwd))
        for name in ["stdout", "stderr"]:
            (ctl / name).write_bytes(b"")
        console = ctl / "console.log"
        argv = [inputs.qemu, "-accel", f"tcg,thread={KIT_TCG_THREAD}", "-cpu", "max",
                "-smp", str(KIT_CPUS), "-m", str(KIT_MEMORY_MIB),
                "-machine", KIT_MACHINE, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", f"file:{console}", "-monitor", "none",
                "-kernel", str(_boot_image(inputs.kernel)), "-initrd", str(initramfs),
                "-append", f"console=ttyS0 {_KIT_CMDLINE} {_KIT_CMDLINE_FIXED}"]

        def fs(idx: str, path: Path, tag: str, ro: bool):
            opts = f"local,id=f{idx},path={_qemu_escape(str(path))},security_model=none,multidevs=remap"
            if ro:
                opts += ",readonly=on"
            dev = "virtio-9p-device" if KIT_MACHINE.startswith("microvm") else "virtio-9p-pci"
            argv.extend(["-fsdev", opts, "-device", f"{dev},fsdev=f{idx},mount_tag={tag}"])

        fs("ctl", ctl, "kitctl", False)
        fs("root", Path("/"), "root", True)
        for tag, p in shares:
            fs(tag, p, tag, False)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        timed_out = False
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            qemu_out, _ = proc.communicate()
        elapsed = time.monotonic() - start
        stdout = (ctl / "stdout").read_bytes()
        stderr = (ctl / "stderr").read_bytes()
        console_text = console.read_text(errors="replace") if console.exists() else ""
        rc_file = ctl / "rc"
        if timed_out and not rc_file.exists():
            return Result(None, stdout, stderr, "kit", timed_out=True, elapsed=elapsed, console=console_text)
        # (timed out after the script had finished: only the kit's power-off was slow; the result stands)
        if not rc_file.exists():
            keep = _keep_failed(ctl)
            raise KitError(
                f"the KVM kit VM ended without running the script (qemu exit {proc.returncode}); "
                f"console log and control files kept in {keep}\n"
                f"--- qemu ---\n{qemu_out.decode(errors='replace')[-2000:]}\n"
                f"--- console (tail) ---\n{console_text[-3000:]}")
        rc = int(rc_file.read_text().strip() or "255")
        return Result(rc, stdout, stderr, "kit", elapsed=elapsed, console=console_text)
    finally:
        if os.environ.get("VIREO_KIT_KEEP"):
            print(f"vireo_testing: kit control folder kept: {ctl}", file=sys.stderr)
        elif ctl.exists():
            shutil.rmtree(ctl, ignore_errors=True)


def _keep_failed(ctl: Path) -> Path:
    """Copy a failed call's control folder (console log, boot.sh, outputs) under BUILD_DIR/kvm-kit/failed/."""
    dest_root = _kit_cache_dir() / "failed"
    dest_root.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=dest_root))
    for p in ctl.iterdir():
        if p.is_file():
            shutil.copy2(p, dest / p.name)
    return dest


def run_kvm_script(script: str, timeout: float = 120, files=(), input: bytes | None = None,
                   env: dict | None = None, unmodified: bool = False) -> Result:
    """Run a /bin/sh script with /dev/kvm available (host, or inside the kit).

    cwd is unchanged; BUILD_DIR, SOURCE_DIR and every path in `files` (files or folders; a file shares its
    folder) are visible at the same absolute paths read-write. `input` is the script's stdin, `env` extra
    environment on top of os.environ. Never hangs: after `timeout` seconds everything is killed and the
    Result has returncode None and timed_out True. unmodified=True: the script boots unmodified kernels or
    firmware (kit route on a PVM host, see kvm_route)."""
    route, why = kvm_route(unmodified)
    e = _merged_env(env)
    if route == "host":
        return _run_host(["/bin/sh", "-c", script], timeout, input, e)
    if route == "kit":
        return _run_kit(script, timeout, list(files), input, e)
    raise KitError(f"no /dev/kvm: {why}")


_ABS_PATH = re.compile(r"(?:^|[=,:])(/[^,:=\s]+)")


def _paths_in_args(args: list[str]) -> list[Path]:
    """Existing host paths mentioned in VMM arguments (whole args or key=/path values), outside the
    always-shared folders, so the kit can share them."""
    found = []
    for a in args:
        for m in _ABS_PATH.finditer(a):
            p = Path(m.group(1))
            parent = p if p.is_dir() else p.parent
            if parent.exists() and parent != Path("/"):
                found.append(parent)
    return found


def run_vmm(args: list[str], timeout: float = 60, input: bytes | None = None, env: dict | None = None,
            files=(), unmodified: bool = False) -> Result:
    """Run BUILD_DIR/vireo-vmm with args (on the host when /dev/kvm works, else inside the kit).

    On the kit route, folders of absolute paths that appear in args (e.g. --disk path=/tmp/x/d.qcow2) and the
    current directory are shared read-write as well, plus anything in `files`. unmodified=True: the VM boots
    an unmodified kernel or firmware (kit route on a PVM host)."""
    vmm = BUILD_DIR / "vireo-vmm"
    route, why = kvm_route(unmodified)
    e = _merged_env(env)
    if route == "host":
        return _run_host([str(vmm)] + [str(a) for a in args], timeout, input, e)
    if route == "kit":
        args = [str(a) for a in args]
        extra = list(files) + _paths_in_args(args)
        cwd = Path(os.getcwd())
        if cwd != Path("/") and not _is_system_dir(cwd):
            extra.append(cwd)
        extra = [p for p in extra if not _is_system_dir(Path(p))]
        script = "exec " + " ".join(shlex.quote(x) for x in [str(vmm)] + args) + "\n"
        return _run_kit(script, timeout, extra, input, e)
    raise KitError(f"no /dev/kvm: {why}")


def _is_system_dir(p: Path) -> bool:
    """Folders visible read-only through the shared root that must not be shared read-write."""
    p = Path(os.path.abspath(p))
    if p == Path("/"):
        return True
    top = p.parts[1] if len(p.parts) > 1 else ""
    return top in {"usr", "bin", "sbin", "lib", "lib64", "etc", "boot", "proc", "sys", "dev", "var", "opt"} \
        and not str(p).startswith("/var/tmp/")
