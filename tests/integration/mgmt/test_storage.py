"""Storage pools and volumes with the real parts: a dir pool under a temporary state root, raw and qcow2
volumes made by vireod through Vireo's block layer and checked with the real qemu-img; a domain whose disk is
a volume; restart survival; one-line errors. (LVM on a loop device runs in the KVM kit: test_storage_kit.py.)
vireod runs in its own network namespace so its default network never touches the machine's network."""
import json
import os
import subprocess

import pytest

from conftest import BUILD, VMM_DOUBLE, domain_xml
from test_network import Netns, start_daemon


@pytest.fixture
def host(short_root):
    ns = Netns("s")
    yield ns
    ns.remove()


def qemu_img_info(path):
    r = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_default_pool_and_dir_pool_volumes(host, short_root):
    root = short_root / "root"
    d = start_daemon(root, host)
    try:
        images = root / "var/lib/vireo/images"
        assert images.is_dir()
        lines = d.ok("pool-list", "--all").splitlines()
        assert lines[:3] == [" Name      State    Autostart", "-------------------------------", " default   active   yes"]
        xml = d.ok("pool-dumpxml", "default")
        assert xml.startswith("<pool type='dir'>\n  <name>default</name>\n")
        assert f"  <target>\n    <path>{images}</path>\n  </target>\n" in xml
        assert "  <source>\n  </source>\n" in xml

        target = short_root / "p1"
        assert d.ok("pool-define-as", "p1", "dir", "--target", str(target)) == "Pool p1 defined\n\n"
        assert d.ok("pool-build", "p1") == "Pool p1 built\n\n" and target.is_dir()
        assert d.ok("pool-start", "p1") == "Pool p1 started\n\n"
        assert d.ok("pool-autostart", "p1") == "Pool p1 marked as autostarted\n\n"
        info = d.ok("pool-info", "p1").splitlines()
        assert info[0] == "Name:           p1" and info[2] == "State:          running" and info[4] == "Autostart:      yes"
        assert info[5].startswith("Capacity:       ") and info[5].endswith("iB")

        assert d.ok("vol-create-as", "p1", "a.img", "10M", "--format", "raw") == "Vol a.img created\n\n"
        a = target / "a.img"
        i = qemu_img_info(a)
        assert i["format"] == "raw" and i["virtual-size"] == 10 * 2**20
        assert os.stat(a).st_blocks == 0  # sparse
        assert d.ok("vol-create-as", "p1", "b.qcow2", "1G", "--format", "qcow2", "--backing-vol", "a.img",
                    "--backing-vol-format", "raw") == "Vol b.qcow2 created\n\n"
        i = qemu_img_info(target / "b.qcow2")
        assert i["format"] == "qcow2" and i["virtual-size"] == 2**30
        assert i["backing-filename"] == str(a) and i["backing-filename-format"] == "raw"
        # Preallocated when allocation == capacity (libvirt's "fast" raw volume).
        d.ok("vol-create-as", "p1", "full.img", "1M", "--allocation", "1M", "--format", "raw")
        assert os.stat(target / "full.img").st_blocks * 512 >= 2**20

        lst = d.ok("vol-list", "p1").splitlines()
        assert lst[0] == " Name       Path" or lst[0].split() == ["Name", "Path"]
        assert [l.split()[0] for l in lst[2:] if l] == ["a.img", "b.qcow2", "full.img"]
        det = d.ok("vol-list", "p1", "--details").splitlines()
        assert det[0].split() == ["Name", "Path", "Type", "Capacity", "Allocation"]
        row = [l for l in det if l.startswith(" b.qcow2")][0].split()
        assert row[:5] == ["b.qcow2", str(target / "b.qcow2"), "file", "1.00", "GiB"]
        assert d.ok("vol-info", "a.img", "--pool", "p1").splitlines()[:3] == [
            "Name:           a.img", "Type:           file", "Capacity:       10.00 MiB"]
        assert d.ok("vol-path", "a.img", "--pool", "p1") == f"{a}\n\n"
        assert d.ok("vol-key", str(a)) == f"{a}\n\n"  # looked up by path, no --pool
        assert d.ok("vol-pool", str(a)) == "p1\n\n"
        vx = d.ok("vol-dumpxml", "b.qcow2", "--pool", "p1")
        assert vx.startswith("<volume type='file'>\n  <name>b.qcow2</name>\n  <key>")
        assert "<capacity unit='bytes'>1073741824</capacity>" in vx and "<format type='qcow2'/>" in vx

        # Upload/download through the block layer, checked with qemu-io.
        data = os.urandom(3 * 2**20 + 123)
        src = short_root / "up.bin"
        src.write_bytes(data)
        assert d.ok("vol-upload", "a.img", str(src), "--pool", "p1") == "\n"
        assert a.read_bytes()[:len(data)] == data
        back = short_root / "down.bin"
        d.ok("vol-download", "b.qcow2", str(back), "--pool", "p1", "--length", str(len(data)))
        assert back.read_bytes() == data  # through the qcow2's backing file
        # Clone copies the guest-visible content; resize; wipe.
        assert d.ok("vol-clone", "a.img", "c.img", "--pool", "p1") == "Vol c.img cloned from a.img\n\n"
        assert (target / "c.img").read_bytes()[:len(data)] == data
        r = d.cli("vol-resize", "a.img", "5M", "--pool", "p1")
        assert r.returncode == 1 and r.stderr == (
            "error: Failed to change size of volume 'a.img' to 5M\n"
            "error: invalid argument: Can't shrink capacity below current capacity unless shrink flag explicitly specified\n")
        assert d.ok("vol-resize", "a.img", "20M", "--pool", "p1") == "Size of volume 'a.img' successfully changed to 20M\n\n"
        assert qemu_img_info(a)["virtual-size"] == 20 * 2**20
        d.ok("vol-resize", "b.qcow2", "+1G", "--delta", "--pool", "p1")
        assert qemu_img_info(target / "b.qcow2")["virtual-size"] == 2 * 2**30
        assert d.ok("vol-wipe", "c.img", "--pool", "p1") == "Vol c.img wiped\n\n"
        assert (target / "c.img").read_bytes() == bytes(10 * 2**20)

        # A domain whose disk is a volume gets the volume's path and format at start.
        f = short_root / "vd.xml"
        f.write_text(domain_xml("vd", short_root / "spin.elf", devices=(
            "<serial type='pty'/><disk type='volume' device='disk'><driver name='qemu'/>"
            "<source pool='p1' volume='b.qcow2'/><target dev='vda' bus='virtio'/></disk>")))
        (short_root / "spin.elf").write_bytes(b"\x7fELF")
        r = d.cli("define", str(f))
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
        d.ok("start", "vd")
        pid = int((root / "run/vireo/domains/vd.vmmpid").read_text())
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        assert f"path={target}/b.qcow2,format=qcow2".encode() in argv
        assert "<source pool='p1' volume='b.qcow2'/>" in d.ok("dumpxml", "vd")
        d.ok("destroy", "vd")

        # Restart: pools stay active with their volumes.
        d.stop(kill=True)
        d.start()
        assert [l.split()[:2] for l in d.ok("pool-list").splitlines()[2:] if l] == [["default", "active"], ["p1", "active"]]
        assert "b.qcow2" in d.ok("vol-list", "p1")

        assert d.ok("vol-delete", "c.img", "--pool", "p1") == "Vol c.img deleted\n\n"
        assert not (target / "c.img").exists()
        r = d.cli("pool-delete", "p1")
        assert r.returncode == 1 and r.stderr.splitlines()[1] == "error: Requested operation is not valid: storage pool 'p1' is still active"
        assert d.ok("pool-destroy", "p1") == "Pool p1 destroyed\n\n"
        for v in ("a.img", "b.qcow2", "full.img"):
            (target / v).unlink()
        assert d.ok("pool-delete", "p1") == "Pool p1 deleted\n\n" and not target.exists()
        assert d.ok("pool-undefine", "p1") == "Pool p1 has been undefined\n\n"
        assert "p1" not in d.ok("pool-list", "--all")
    finally:
        d.cleanup()


def test_storage_errors_are_one_line_and_change_nothing(host, short_root):
    d = start_daemon(short_root / "root", host)
    try:
        before = d.ok("pool-list", "--all")
        r = d.cli("pool-define-as", "p2", "dir")
        assert r.returncode == 1 and r.stderr == ("error: Failed to define pool p2\n"
                                                  "error: XML error: missing storage pool target path\n")
        f = short_root / "bad.xml"
        f.write_text("<pool type='dir'><name>x</name><target><path>/tmp/x</path></target>")
        r = d.cli("pool-define", str(f))
        assert r.returncode == 1 and r.stderr.splitlines()[1].startswith("error: XML error: invalid XML at line 1")
        f.write_text("<pool type='lvm'><name>x</name></pool>")
        r = d.cli("pool-define", str(f))
        assert r.stderr.splitlines()[1].startswith("error: XML error: pool type: unsupported value 'lvm'")
        # A pool on the same folder as another.
        images = short_root / "root/var/lib/vireo/images"
        r = d.cli("pool-define-as", "dup", "dir", "--target", str(images))
        assert r.returncode == 1 and r.stderr.splitlines()[1] == "error: operation failed: Storage source conflict with pool: 'default'"
        # Starting a pool whose folder does not exist.
        d.ok("pool-define-as", "nodir", "dir", "--target", str(short_root / "missing"))
        r = d.cli("pool-start", "nodir")
        assert r.returncode == 1 and r.stderr == (
            "error: Failed to start pool nodir\n"
            f"error: operation failed: cannot open directory '{short_root}/missing': No such file or directory\n")
        d.ok("pool-undefine", "nodir")
        d.ok("vol-create-as", "default", "v.img", "1M")
        r = d.cli("vol-create-as", "default", "v.img", "1M")
        assert r.returncode == 1 and r.stderr == ("error: Failed to create vol v.img\n"
                                                  "error: operation failed: storage vol 'v.img' already exists\n")
        r = d.cli("vol-info", "nope", "--pool", "default")
        assert r.stderr == ("error: failed to get vol 'nope'\n"
                            "error: Storage volume not found: no storage vol with matching name 'nope'\n")
        r = d.cli("pool-info", "nope")
        assert r.stderr == ("error: failed to get pool 'nope'\n"
                            "error: Storage pool not found: no storage pool with matching name 'nope'\n")
        r = d.cli("vol-create-as", "default", "w.vmdk", "1M", "--format", "vmdk")
        assert r.returncode == 1 and r.stderr.splitlines()[1] == "error: unsupported configuration: volume format 'vmdk' (raw, qcow2)"
        assert not (images / "w.vmdk").exists()
        assert d.ok("pool-list", "--all") == before
    finally:
        d.cleanup()
