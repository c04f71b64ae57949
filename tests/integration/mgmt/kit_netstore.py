"""Runs inside the KVM kit (a Debian kernel with the openvswitch, 8021q/bridge VLAN filtering, dm and loop
support the host kernel may lack): Open vSwitch VLAN isolation and Linux bridge VLAN filtering for domain
taps made by vireod's monitor, and an LVM logical pool on a loop device. Prints "CHECK name ok" or
"CHECK name FAIL why" lines; test_kit_netstore.py asserts them. Uses the VMM double: the checks are about the
host plumbing, frames are written into and read from the domains' taps directly."""
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import time

B = os.environ["VIREO_BUILD_DIR"]
S = os.environ["VIREO_SOURCE_DIR"]
DOUBLE = f"{S}/tests/integration/mgmt/vmm_double.py"
R = tempfile.mkdtemp(prefix="vk", dir="/tmp")
# The kit's / is the host's, read-only: LVM keeps its metadata backups under LVM_SYSTEM_DIR instead of
# /etc/lvm (vireod passes its environment to the lvm2 tools); no udev in the kit, so device-mapper makes
# its own nodes.
os.makedirs(f"{R}/lvm", exist_ok=True)
if os.path.exists("/etc/lvm/lvm.conf"):
    open(f"{R}/lvm/lvm.conf", "w").write(open("/etc/lvm/lvm.conf").read())
ENV = dict(os.environ, VIREO_ROOT=f"{R}/root", DM_DISABLE_UDEV="1", LVM_SYSTEM_DIR=f"{R}/lvm")
failures = 0


def check(name, ok, why=""):
    global failures
    print(f"CHECK {name} {'ok' if ok else 'FAIL ' + str(why)}", flush=True)
    if not ok:
        failures += 1


def run(*a, check_rc=True, env=None):
    r = subprocess.run(list(a), capture_output=True, text=True, env=env or ENV, timeout=120)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(a)}: rc {r.returncode}: {r.stdout} {r.stderr}")
    return r


def vireo(*a, check_rc=True):
    return run(f"{B}/vireo", *a, check_rc=check_rc)


def xmlfile(name, text):
    p = f"{R}/{name}.xml"
    with open(p, "w") as f:
        f.write(text)
    return p


def domain(name, iface):
    k = f"{R}/spin.elf"
    if not os.path.exists(k):
        open(k, "wb").write(b"\x7fELF")
    return xmlfile(name, f"""<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type><kernel>{k}</kernel></os><devices><serial type='pty'/>{iface}</devices></domain>""")


TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    return fd


def frame(src_mac, payload):
    src = bytes.fromhex(src_mac.replace(":", ""))
    return b"\0" * 10 + b"\xff" * 6 + src + b"\x88\xb5" + payload.ljust(46, b"\0")  # vnet hdr + broadcast


def received(fd, payload, wait=1.5):
    end = time.monotonic() + wait
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0, end - time.monotonic()))
        if not r:
            break
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if payload in data:
            return True
    return False


def taps_of(name):
    return open(f"{R}/root/run/vireo/domains/{name}.taps").read().split("\n")[0].split()[0]


def isolation(prefix, macs, groups):
    """macs/groups: per domain; frames from each reach exactly the domains of the same group."""
    fds = {d: open_tap(taps_of(d)) for d in macs}
    for d in macs:
        payload = f"{prefix}-from-{d}".encode()
        os.write(fds[d], frame(macs[d], payload))
        # Same group first, with time to spare: the first frame of a flow goes up to ovs-vswitchd, which is
        # slow in the kit under load (missed a 1.5 s window once). Once those have arrived, a frame that was
        # going to leak to another group would have too, so the short window there proves the isolation.
        others = sorted((o for o in macs if o != d), key=lambda o: groups[o] != groups[d])
        for o in others:
            want = groups[o] == groups[d]
            got = received(fds[o], payload, wait=15 if want else 1.5)
            check(f"{prefix}_{d}_to_{o}", got == want, f"frame {'not ' if want else ''}received")
    for fd in fds.values():
        os.close(fd)


def main():
    os.makedirs(f"{R}/root", exist_ok=True)
    # --- Open vSwitch: a real ovsdb-server and ovs-vswitchd with their files on the kit's tmpfs.
    ovs = f"{R}/ovs"
    os.makedirs(ovs)
    os.makedirs("/run/openvswitch", exist_ok=True)
    run("ovsdb-tool", "create", f"{ovs}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
    run("ovsdb-server", f"{ovs}/conf.db", "--remote=punix:/run/openvswitch/db.sock", "--pidfile=" + f"{ovs}/ovsdb.pid",
        "--detach", "--log-file=" + f"{ovs}/ovsdb.log")
    run("ovs-vsctl", "--no-wait", "init")
    run("ovs-vswitchd", "--pidfile=" + f"{ovs}/vswitchd.pid", "--detach", "--log-file=" + f"{ovs}/vswitchd.log",
        "unix:/run/openvswitch/db.sock")
    run("ovs-vsctl", "add-br", "ovsbr0")
    run("ip", "link", "set", "ovsbr0", "up")
    d = subprocess.Popen([f"{B}/vireod", "--root", f"{R}/root", "--vmm", DOUBLE, "--start-timeout", "60"],
                         stdout=open(f"{R}/vireod.log", "w"), stderr=subprocess.STDOUT, env=ENV)
    for _ in range(400):
        if os.path.exists(f"{R}/root/run/vireo/vireod.sock"):
            break
        time.sleep(0.05)
    try:
        vireo("net-define", xmlfile("ovsnet", """<network><name>ovsnet</name><forward mode='bridge'/>
<bridge name='ovsbr0'/><virtualport type='openvswitch'/>
<portgroup name='v10' default='yes'><vlan><tag id='10'/></vlan></portgroup>
<portgroup name='v20'><vlan><tag id='20'/></vlan></portgroup></network>"""))
        vireo("net-start", "ovsnet")
        macs = {"oa": "52:54:00:10:00:0a", "ob": "52:54:00:10:00:0b", "oc": "52:54:00:20:00:0c"}
        pg = {"oa": "v10", "ob": "v10", "oc": "v20"}
        for n, mac in macs.items():
            vireo("define", domain(n, f"<interface type='network'><source network='ovsnet' portgroup='{pg[n]}'/>"
                                      f"<mac address='{mac}'/><model type='virtio'/></interface>"))
            vireo("start", n)
        for n in macs:
            tap = taps_of(n)
            tag = run("ovs-vsctl", "get", "Port", tap, "tag").stdout.strip()
            check(f"ovs_tag_{n}", tag == ("10" if pg[n] == "v10" else "20"), f"tag {tag}")
            ext = run("ovs-vsctl", "get", "Interface", tap, "external_ids").stdout
            check(f"ovs_ids_{n}", macs[n] in ext and "iface-id" in ext, ext)
        isolation("ovs", macs, pg)
        # A trunk port from the interface's own <vlan trunk='yes'>.
        vireo("define", domain("ot", "<interface type='bridge'><source bridge='ovsbr0'/><virtualport type='openvswitch'/>"
                                     "<vlan trunk='yes'><tag id='10'/><tag id='20' nativeMode='untagged'/></vlan>"
                                     "<mac address='52:54:00:30:00:01'/><model type='virtio'/></interface>"))
        vireo("start", "ot")
        tp = taps_of("ot")
        trunks = run("ovs-vsctl", "get", "Port", tp, "trunks").stdout.strip()
        mode = run("ovs-vsctl", "get", "Port", tp, "vlan_mode").stdout.strip()
        check("ovs_trunk", trunks == "[10, 20]" and mode == "native-untagged", f"{trunks} {mode}")
        for n in list(macs) + ["ot"]:
            vireo("destroy", n)
        ports = run("ovs-vsctl", "list-ports", "ovsbr0").stdout.split()
        check("ovs_ports_removed", ports == [], ports)

        # --- Linux bridge VLAN filtering (the host kernel may lack CONFIG_BRIDGE_VLAN_FILTERING).
        run("ip", "link", "add", "lbr0", "type", "bridge")
        run("ip", "link", "set", "lbr0", "up")
        lmacs = {"la": "52:54:00:40:00:0a", "lb": "52:54:00:40:00:0b", "lc": "52:54:00:40:00:0c"}
        lvl = {"la": 10, "lb": 10, "lc": 20}
        for n, mac in lmacs.items():
            vireo("define", domain(n, f"<interface type='bridge'><source bridge='lbr0'/><vlan><tag id='{lvl[n]}'/></vlan>"
                                      f"<mac address='{mac}'/><model type='virtio'/></interface>"))
            vireo("start", n)
        vf = open("/sys/class/net/lbr0/bridge/vlan_filtering").read().strip()
        check("lbr_vlan_filtering", vf == "1", vf)
        vl = json.loads(run("bridge", "-j", "vlan", "show", "dev", taps_of("la")).stdout)
        vids = [(v["vlan"], "PVID" in v.get("flags", [])) for e in vl for v in e["vlans"]]
        check("lbr_access_vlan", vids == [(10, True)], vids)
        isolation("lbr", lmacs, lvl)
        for n in lmacs:
            vireo("destroy", n)

        # --- LVM: a logical pool on a loop device; LVs as volumes; a domain whose disk is one.
        for m in ("loop", "dm_mod"):
            run("modprobe", m, check_rc=False)
        img = f"{R}/pv.img"
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        loop = run("losetup", "-f", "--show", img).stdout.strip()
        r = vireo("pool-define-as", "lv", "logical", "--source-dev", loop, "--source-name", "vg_vireo", check_rc=False)
        check("lvm_define", r.returncode == 0 and r.stdout == "Pool lv defined\n\n", r.stdout + r.stderr)
        r = vireo("pool-build", "lv", check_rc=False)
        check("lvm_build", r.returncode == 0, r.stderr)
        r = vireo("pool-start", "lv", check_rc=False)
        check("lvm_start", r.returncode == 0, r.stderr)
        r = vireo("vol-create-as", "lv", "lv1", "8M", check_rc=False)
        check("lvm_vol_create", r.returncode == 0 and r.stdout == "Vol lv1 created\n\n", r.stdout + r.stderr)
        lst = vireo("vol-list", "lv", "--details").stdout.splitlines()
        row = [l.split() for l in lst if l.startswith(" lv1")]
        check("lvm_vol_list", row and row[0][:5] == ["lv1", "/dev/vg_vireo/lv1", "block", "8.00", "MiB"], lst)
        check("lvm_dev", os.path.exists("/dev/vg_vireo/lv1") or os.path.exists("/dev/mapper/vg_vireo-lv1"), os.listdir("/dev"))
        info = vireo("pool-info", "lv").stdout
        check("lvm_pool_info", "State:          running" in info and "Capacity:       60.00 MiB" in info, info)
        vireo("define", domain("lvd", "<disk type='volume' device='disk'><source pool='lv' volume='lv1'/>"
                                      "<target dev='vda' bus='virtio'/></disk>"))
        r = vireo("start", "lvd", check_rc=False)
        check("lvm_domain_start", r.returncode == 0, r.stderr)
        if r.returncode == 0:
            pid = int(open(f"{R}/root/run/vireo/domains/lvd.vmmpid").read())
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            check("lvm_domain_disk", b"path=/dev/vg_vireo/lv1,format=raw" in argv, argv)
            vireo("destroy", "lvd")
        r = vireo("vol-delete", "lv1", "--pool", "lv", check_rc=False)
        check("lvm_vol_delete", r.returncode == 0 and "lv1" not in vireo("vol-list", "lv").stdout, r.stderr)
        check("lvm_destroy", vireo("pool-destroy", "lv", check_rc=False).returncode == 0)
        r = vireo("pool-delete", "lv", check_rc=False)
        check("lvm_delete", r.returncode == 0 and run("vgs", "vg_vireo", check_rc=False).returncode != 0, r.stderr)
        run("losetup", "-d", loop, check_rc=False)
    finally:
        d.terminate()
        d.wait(10)
        print("--- vireod log")
        print(open(f"{R}/vireod.log").read())
    print(f"DONE failures={failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
