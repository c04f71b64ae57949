"""The virtio test guests (tests/guests/virtio) against QEMU's virtio devices, under TCG.

This checks the guests and their polling driver library against an independent device implementation, on
both transports (modern-only virtio-pci on -M pc; virtio-mmio v2 on -M microvm), so that a failure of the
same guest under vireo-vmm points at our devices. QEMU's isa-debug-exit turns a guest status S into the
exit code (S << 1) | 1."""

import shutil
import subprocess

import pytest

from vireo_testing import BUILD_DIR

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
GUESTS = BUILD_DIR / "tests" / "guests"
# microvm's virtio-mmio transports (512 bytes each from 0xfeb00000, IRQ 5+). A PVH guest does not get the
# Linux auto-cmdline, so announce them all; empty transports report device id 0 and are skipped.
MMIO_CMDLINE = " ".join(f"virtio_mmio.device=512@{0xfeb00000 + 512 * i:#x}:{5 + i}" for i in range(24))


def qemu(guest, transport, devices, append="", extra=(), mem="64M", timeout=120):
    """devices: QEMU device specs with '@' where the transport suffix goes ("virtio-blk@,drive=d0")."""
    elf = GUESTS / f"{guest}.elf"
    if not elf.exists():
        pytest.skip(f"{elf} not built")
    args = [QEMU, "-accel", "tcg", "-cpu", "max", "-nodefaults", "-no-user-config", "-nographic", "-m", mem,
            "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-no-reboot",
            "-kernel", str(elf)] + list(extra)
    if transport == "pci":
        args += ["-M", "pc"]
        devices = [d.replace("@", "-pci", 1) + ",disable-legacy=on" for d in devices]
    else:
        args += ["-M", "microvm", "-global", "virtio-mmio.force-legacy=false"]
        devices = [d.replace("@", "-device", 1) for d in devices]
        append = (append + " " + MMIO_CMDLINE).strip()
    for d in devices:
        args += ["-device", d]
    if append:
        args += ["-append", append]
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    out = r.stdout.decode(errors="replace").replace("\r", "")
    # -M pc prints SeaBIOS noise before the guest's first line.
    lines = [l.split("Booting from ROM..")[-1] for l in out.split("\n")]
    status = (r.returncode - 1) >> 1 if r.returncode & 1 else None
    return status, lines


def pattern_ok(path, start, sectors, seed):
    data = open(path, "rb").read()
    return all(data[o] == (((o * 131 + seed) ^ (o >> 9)) & 0xFF) for o in range(start * 512, (start + sectors) * 512))


def make_disk(path, size=4 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_blk_pattern(tmp_path, transport):
    disk = make_disk(tmp_path / "disk.img")
    status, lines = qemu("virtio_blk", transport, ["virtio-blk@,drive=d0"], "mode=pattern sectors=64 start=16 seed=7",
                         ["-drive", f"file={disk},format=raw,if=none,id=d0"])
    assert status == 0, lines
    assert f"virtio_blk: capacity=8192 transport={transport}" in lines
    assert "virtio_blk: wrote 64 sectors at 16" in lines and "virtio_blk: readback ok" in lines
    assert pattern_ok(disk, 16, 64, 7)
    assert open(disk, "rb").read(16 * 512) == bytes(16 * 512)


def test_blk_errors_and_malformed(tmp_path):
    disk = make_disk(tmp_path / "disk.img")
    drive = ["-drive", f"file={disk},format=raw,if=none,id=d0"]
    status, lines = qemu("virtio_blk", "mmio", ["virtio-blk@,drive=d0,serial=QSERIAL"], "mode=errors", drive)
    assert status == 0, lines
    assert "virtio_blk: serial=QSERIAL" in lines and "virtio_blk: errors ok" in lines
    status, lines = qemu("virtio_blk", "mmio", ["virtio-blk@,drive=d0", "virtio-rng@"], "mode=malformed", drive)
    assert status == 0, lines
    assert "virtio_blk: device needs reset" in lines and "virtio_blk: rng still works" in lines


def test_blk_readonly(tmp_path):
    disk = make_disk(tmp_path / "disk.img")
    status, lines = qemu("virtio_blk", "pci", ["virtio-blk@,drive=d0"], "mode=readonly",
                         ["-drive", f"file={disk},format=raw,if=none,id=d0,readonly=on"])
    assert status == 0, lines
    assert "virtio_blk: readonly ok" in lines


@pytest.mark.parametrize("transport", ["pci", "mmio"])
def test_rng(transport):
    status, lines = qemu("virtio_rng", transport, ["virtio-rng@"])
    assert status == 0, lines
    got = [l for l in lines if l.startswith("virtio_rng: bytes=")]
    assert len(got) == 2 and got[0] != got[1] and len(got[0]) == len("virtio_rng: bytes=") + 64


def test_net_user_network():
    # QEMU's user network answers ARP and ICMP echo for 10.0.2.2.
    status, lines = qemu("virtio_net", "pci", ["virtio-net@,netdev=n0"], "ip=10.0.2.15 peer=10.0.2.2 count=2",
                         ["-netdev", "user,id=n0"])
    assert status == 0, lines
    assert "virtio_net: echo reply seq=2" in lines and "virtio_net: ok" in lines


def test_balloon():
    status, lines = qemu("virtio_balloon", "pci", ["virtio-balloon@"], "pages=1024 hold_mcycles=1", mem="128M")
    assert status == 0, lines
    assert "virtio_balloon: inflated 1024 pages" in lines
