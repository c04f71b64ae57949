"""Virtual networks with the real parts: vireod runs inside a fresh network namespace (the "host"), makes its
bridge through netlink, its nftables table and its dnsmasq there; "guests" are further namespaces wired to
the bridge (veth) running busybox's udhcpc, and domains (the VMM double) whose taps the monitor plugs in.
Nothing here touches the machine's own network: every address lives in namespaces this test creates."""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, VMM_DOUBLE, Daemon, domain_xml

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
NFT = shutil.which("nft") or "/usr/sbin/nft"


def sh(*args, check=True, timeout=30):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


class Netns:
    """A network namespace this test made; removing it kills only the processes inside it."""
    count = 0

    def __init__(self, tag):
        Netns.count += 1
        self.name = f"vt{os.getpid() % 100000}{tag}{Netns.count}"
        sh("ip", "netns", "add", self.name)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *args, check=True, timeout=30):
        return sh("ip", "netns", "exec", self.name, *args, check=check, timeout=timeout)

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def remove(self):
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def host(short_root):
    for tool in (DNSMASQ, NFT, BUSYBOX):
        assert os.path.exists(tool), f"{tool} missing: scripts/setup.sh installs it"
    ns = Netns("h")
    yield ns
    ns.remove()


def start_daemon(root, ns, defaults=True):
    d = Daemon(root, VMM_DOUBLE, prefix=ns.prefix())
    if defaults:
        root.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([*ns.prefix(), str(BUILD / "vireod"), "--root", str(root), "--define-defaults"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    d.start()
    return d


UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc hook: apply the lease
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "$ip" > "$LEASE_OUT"
    ;;
esac
"""


class Guest:
    """A namespace on the network's bridge through a veth pair, configured by DHCP."""

    def __init__(self, host, tmp, tag, mac, bridge="virbr0", hostname=None):
        self.ns = Netns("g" + tag)
        self.tag = tag
        peer = f"vh{tag}{os.getpid() % 10000}"
        sh("ip", "link", "add", "eth0", "netns", self.ns.name, "address", mac, "type", "veth", "peer", "name", peer,
           "netns", host.name)
        host.run("ip", "link", "set", peer, "master", bridge, "up")
        self.ns.run("ip", "link", "set", "eth0", "up")
        self.script = tmp / f"udhcpc-{tag}.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        self.lease_out = tmp / f"lease-{tag}"
        self.hostname = hostname

    def dhcp(self):
        env_cmd = ["env", f"LEASE_OUT={self.lease_out}", BUSYBOX, "udhcpc", "-i", "eth0", "-s", str(self.script),
                   "-q", "-n", "-t", "10", "-T", "1"]
        if self.hostname:
            env_cmd += ["-x", f"hostname:{self.hostname}"]
        r = self.ns.run(*env_cmd, check=False, timeout=60)
        assert r.returncode == 0, f"udhcpc in {self.ns.name} failed: {r.stdout}\n{r.stderr}"
        return self.lease_out.read_text().strip()

    def ping(self, addr, check=True):
        return self.ns.run(BUSYBOX, "ping", "-c", "1", "-W", "2", addr, check=check)

    def remove(self):
        self.ns.remove()


def test_default_network_built_the_libvirt_way(host, short_root, tmp_path):
    d = start_daemon(short_root / "root", host)
    try:
        assert d.ok("net-list", "--all") == (
            " Name      State    Autostart   Persistent\n"
            "--------------------------------------------\n"
            " default   active   yes         yes\n\n")
        info = d.ok("net-info", "default")
        assert "Bridge:         virbr0\n" in info and "Active:         yes\n" in info
        xml = d.ok("net-dumpxml", "default")
        assert "<forward mode='nat'/>" in xml and "<bridge name='virbr0' stp='on' delay='0'/>" in xml
        assert "<range start='192.168.122.2' end='192.168.122.254'/>" in xml
        # The bridge (netlink), its address, the nftables table and one dnsmasq with its lease file.
        link = json.loads(host.run("ip", "-j", "-d", "link", "show", "virbr0").stdout)[0]
        assert link["linkinfo"]["info_kind"] == "bridge"
        addrs = json.loads(host.run("ip", "-j", "addr", "show", "virbr0").stdout)[0]["addr_info"]
        assert {"local": "192.168.122.1", "prefixlen": 24} in [{k: a[k] for k in ("local", "prefixlen")} for a in addrs]
        rules = host.run(NFT, "list", "table", "inet", "vireo_virbr0").stdout
        assert "masquerade" in rules and 'iifname "virbr0" ip saddr 192.168.122.0/24 accept' in rules
        conf = (short_root / "root/var/lib/vireo/dnsmasq/default.conf").read_text()
        assert "interface=virbr0" in conf and "dhcp-range=192.168.122.2,192.168.122.254,255.255.255.0" in conf
        pids = host.run("pgrep", "-f", "dnsmasq --conf-file=" + str(short_root / "root/var/lib/vireo/dnsmasq/default.conf"))
        assert len(pids.stdout.split()) == 1
        assert host.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        # Destroy takes it all down; start brings it back.
        assert d.ok("net-destroy", "default") == "Network default destroyed\n\n"
        assert host.run("ip", "link", "show", "virbr0", check=False).returncode != 0
        assert host.run(NFT, "list", "table", "inet", "vireo_virbr0", check=False).returncode != 0
        assert d.ok("net-start", "default") == "Network default started\n\n"
        assert host.run("ip", "link", "show", "virbr0").returncode == 0
    finally:
        d.cleanup()


def test_guests_get_leases_ping_each_other_and_reach_beyond_through_nat(host, short_root, tmp_path):
    d = start_daemon(short_root / "root", host)
    outside = Netns("o")
    guests = []
    try:
        # "Beyond": a namespace on a veth uplink with no route back to 192.168.122.0/24, so only NAT answers.
        sh("ip", "link", "add", "up0", "netns", host.name, "type", "veth", "peer", "name", "eth0", "netns", outside.name)
        host.run("ip", "addr", "add", "203.0.113.2/24", "dev", "up0")
        host.run("ip", "link", "set", "up0", "up")
        outside.run("ip", "addr", "add", "203.0.113.1/24", "dev", "eth0")
        outside.run("ip", "link", "set", "eth0", "up")
        host.run("ip", "route", "add", "default", "via", "203.0.113.1")
        # A static host first (net-update --live, applied by SIGHUP to dnsmasq).
        assert d.ok("net-update", "default", "add", "ip-dhcp-host",
                    "<host mac='52:54:00:00:00:02' name='g2' ip='192.168.122.50'/>", "--live", "--config") == \
            "Updated network default persistent config and live state\n\n"
        g1 = Guest(host, tmp_path, "1", "52:54:00:00:00:01", hostname="guest1")
        g2 = Guest(host, tmp_path, "2", "52:54:00:00:00:02")
        guests += [g1, g2]
        ip1, ip2 = g1.dhcp(), g2.dhcp()
        assert ip1.startswith("192.168.122.") and ip1 != "192.168.122.1"
        assert ip2 == "192.168.122.50"  # the static host
        leases = d.ok("net-dhcp-leases", "default")
        lines = leases.splitlines()
        assert lines[0].split() == ["Expiry", "Time", "MAC", "address", "Protocol", "IP", "address", "Hostname",
                                    "Client", "ID", "or", "DUID"]
        assert any("52:54:00:00:00:01" in l and f"{ip1}/24" in l and "guest1" in l and "ipv4" in l for l in lines)
        assert any("52:54:00:00:00:02" in l and f"{ip2}/24" in l for l in lines)
        only = d.ok("net-dhcp-leases", "default", "--mac", "52:54:00:00:00:02")
        assert "52:54:00:00:00:01" not in only and "52:54:00:00:00:02" in only
        g1.ping(ip2)
        g2.ping(ip1)
        g1.ping("192.168.122.1")
        g1.ping("203.0.113.1")  # through NAT
        # Without the masquerade rule the same ping fails: the outside has no route back.
        host.run(NFT, "flush", "chain", "inet", "vireo_virbr0", "postrouting")
        time.sleep(0.2)
        assert g2.ping("203.0.113.1", check=False).returncode != 0
    finally:
        for g in guests:
            g.remove()
        outside.remove()
        d.cleanup()


def test_domain_interface_type_network_attaches_its_tap(host, short_root, guests):
    d = start_daemon(short_root / "root", host)
    try:
        xml = domain_xml("netdom", guests / "spin.elf", devices=(
            "<serial type='pty'/><interface type='network'><source network='default'/>"
            "<mac address='52:54:00:aa:bb:01'/><model type='virtio'/></interface>"))
        f = short_root / "netdom.xml"
        f.write_text(xml)
        r = d.cli("define", str(f))
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
        d.ok("start", "netdom")
        taps = (short_root / "root/run/vireo/domains/netdom.taps").read_text().split()
        assert taps == ["vnet0"]
        master = host.run("readlink", "/sys/class/net/vnet0/master").stdout.strip()
        assert master.endswith("/virbr0"), master
        vmm_pid = int((short_root / "root/run/vireo/domains/netdom.vmmpid").read_text())
        argv = Path(f"/proc/{vmm_pid}/cmdline").read_bytes().split(b"\0")
        assert b"tap=vnet0,mac=52:54:00:aa:bb:01" in argv
        d.ok("destroy", "netdom")
        assert host.run("ip", "link", "show", "vnet0", check=False).returncode != 0
        # An inactive network refuses the start, with one line and nothing left behind.
        d.ok("net-destroy", "default")
        r = d.cli("start", "netdom")
        assert r.returncode == 1
        assert r.stderr == ("error: Failed to start domain 'netdom'\n"
                            "error: Requested operation is not valid: network 'default' is not active\n")
        r = d.cli("start", "netdom")
        assert host.run("ip", "link", "show", "vnet0", check=False).returncode != 0
    finally:
        d.cleanup()


def test_restarted_daemon_finds_networks_up_and_dnsmasq_serving(host, short_root, tmp_path):
    root = short_root / "root"
    d = start_daemon(root, host)
    guests = []
    try:
        conf = str(root / "var/lib/vireo/dnsmasq/default.conf")
        pid_before = host.run("pgrep", "-f", "dnsmasq --conf-file=" + conf).stdout.split()
        d.stop(kill=True)
        d.start()
        assert "default   active" in d.ok("net-list")
        pid_after = host.run("pgrep", "-f", "dnsmasq --conf-file=" + conf).stdout.split()
        assert pid_before == pid_after and len(pid_after) == 1
        assert "restarted" not in d.log.read_text()
        g = Guest(host, tmp_path, "r", "52:54:00:00:00:0a")
        guests.append(g)
        assert g.dhcp().startswith("192.168.122.")
        # The bridge gone while vireod was away: the network is inactive after the restart (not autostarted
        # again here, to see that).
        d.ok("net-autostart", "--disable", "default")
        d.stop(kill=True)
        host.run("ip", "link", "del", "virbr0")
        d.start()
        assert d.ok("net-list", "--all").splitlines()[2].split()[:2] == ["default", "inactive"]
    finally:
        for g in guests:
            g.remove()
        d.cleanup()


def test_bad_xml_clashes_and_busy_names_are_one_line_errors(host, short_root):
    d = start_daemon(short_root / "root", host)
    try:
        def define(name, xml):
            f = short_root / f"{name}.xml"
            f.write_text(xml)
            return d.cli("net-define", str(f))

        listing = d.ok("net-list", "--all")
        r = define("bad", "<network><name>x</name><ip address='10.0.0.1' prefix='24'><dhcp>"
                          "<range start='10.1.0.2' end='10.1.0.9'/></dhcp></ip></network>")
        assert r.returncode == 1 and r.stderr == (
            f"error: Failed to define network from {short_root}/bad.xml\n"
            "error: XML error: range 10.1.0.2 - 10.1.0.9 is not entirely within network 10.0.0.1/24\n")
        r = define("bad2", "<network><name>y</name><forward mode='nat'>")
        assert r.returncode == 1 and r.stderr.splitlines()[1].startswith("error: XML error: invalid XML at line 1")
        # The same subnet as the active default network.
        r = define("clash", "<network><name>clash</name><ip address='192.168.122.254' prefix='24'/></network>")
        assert r.returncode == 0, r.stderr
        r = d.cli("net-start", "clash")
        assert r.returncode == 1 and r.stderr == (
            "error: Failed to start network clash\n"
            "error: operation failed: network 192.168.122.0/24 overlaps network 'default' (192.168.122.0/24)\n")
        assert host.run("ip", "link", "show", "virbr1", check=False).returncode != 0
        # A subnet already on a host interface.
        host.run("ip", "link", "add", "hostif", "type", "veth", "peer", "name", "hostif2")
        host.run("ip", "addr", "add", "10.9.0.5/16", "dev", "hostif")
        r = define("clash2", "<network><name>clash2</name><ip address='10.9.1.1' prefix='24'/></network>")
        r = d.cli("net-start", "clash2")
        assert r.returncode == 1 and r.stderr == (
            "error: Failed to start network clash2\n"
            "error: internal error: Network is already in use by interface hostif\n")
        # A bridge name another network uses.
        r = define("busy", "<network><name>busy</name><bridge name='virbr0'/></network>")
        assert r.returncode == 1 and r.stderr.splitlines()[1] == (
            "error: operation failed: bridge name 'virbr0' already in use by network 'default'")
        # forward mode bridge on a missing bridge.
        r = define("nobr", "<network><name>nobr</name><forward mode='bridge'/><bridge name='nosuchbr'/></network>")
        assert r.returncode == 0
        r = d.cli("net-start", "nobr")
        assert r.returncode == 1 and r.stderr == (
            "error: Failed to start network nobr\n"
            "error: operation failed: bridge 'nosuchbr' of network 'nobr' does not exist\n")
        r = d.cli("net-start", "nope")
        assert r.stderr == ("error: failed to get network 'nope'\n"
                            "error: Network not found: no network with matching name 'nope'\n")
        r = d.cli("net-start", "default")
        assert r.stderr == ("error: Failed to start network default\n"
                            "error: Requested operation is not valid: network is already active\n")
        # Nothing of the failed ones changed anything.
        after = d.ok("net-list", "--all")
        assert "bad" not in after and "busy" not in after and "default   active" in after
        assert listing.splitlines()[2].split() in [l.split() for l in after.splitlines()]
        assert not (short_root / "root/etc/vireo/networks/busy.xml").exists()
    finally:
        d.cleanup()


def test_host_interfaces_list_dump_define_and_bridge_an_uplink(host, short_root):
    d = start_daemon(short_root / "root", host, defaults=False)
    try:
        host.run("ip", "link", "add", "up1", "address", "52:54:00:77:00:01", "type", "veth", "peer", "name", "up1p")
        host.run("ip", "addr", "add", "10.77.0.2/24", "dev", "up1")
        host.run("ip", "link", "set", "up1", "up")
        host.run("ip", "link", "set", "up1p", "up")
        lst = d.ok("iface-list").splitlines()
        assert lst[0].split() == ["Name", "State", "MAC", "Address"]
        assert ["up1", "active", "52:54:00:77:00:01"] in [l.split() for l in lst[2:]]
        x = d.ok("iface-dumpxml", "up1")
        assert x.startswith("<interface type='ethernet' name='up1'>")
        assert "<ip address='10.77.0.2' prefix='24'/>" in x and "<mac address='52:54:00:77:00:01'/>" in x
        # The uplink into a bridge in one command: the bridge takes the uplink's MAC and addresses.
        assert d.ok("iface-bridge", "up1", "br7") == ("Created bridge br7 with attached device up1\n"
                                                      "Bridge interface br7 started\n\n")
        assert host.run("readlink", "/sys/class/net/up1/master").stdout.strip().endswith("/br7")
        bx = d.ok("iface-dumpxml", "br7")
        assert bx.startswith("<interface type='bridge' name='br7'>")
        assert "<ip address='10.77.0.2' prefix='24'/>" in bx and "<interface type='ethernet' name='up1'>" in bx
        addrs = json.loads(host.run("ip", "-j", "addr", "show", "up1").stdout)[0]["addr_info"]
        assert not [a for a in addrs if a["family"] == "inet"]
        assert d.ok("iface-unbridge", "br7") == "Device up1 un-attached from bridge br7\nInterface up1 started\n\n"
        assert host.run("ip", "link", "show", "br7", check=False).returncode != 0
        addrs = json.loads(host.run("ip", "-j", "addr", "show", "up1").stdout)[0]["addr_info"]
        assert "10.77.0.2" in [a["local"] for a in addrs]
        # A defined bridge with a member: start creates and enslaves, destroy removes.
        f = short_root / "br8.xml"
        f.write_text("<interface type='bridge' name='br8'><start mode='onboot'/><protocol family='ipv4'>"
                     "<ip address='10.88.0.1' prefix='24'/></protocol><bridge stp='off' delay='0'>"
                     "<interface type='ethernet' name='up1p'/></bridge></interface>")
        assert d.ok("iface-define", str(f)) == f"Interface br8 defined from {f}\n\n"
        assert ["br8", "inactive"] in [l.split()[:2] for l in d.ok("iface-list", "--all").splitlines()]
        assert d.ok("iface-start", "br8") == "Interface br8 started\n\n"
        assert host.run("readlink", "/sys/class/net/up1p/master").stdout.strip().endswith("/br8")
        assert d.ok("iface-destroy", "br8") == "Interface br8 destroyed\n\n"
        assert host.run("ip", "link", "show", "br8", check=False).returncode != 0
        assert d.ok("iface-undefine", "br8") == "Interface br8 undefined\n\n"
        # Errors: bad XML, unknown interface.
        f.write_text("<interface type='team' name='t0'/>")
        r = d.cli("iface-define", str(f))
        assert r.returncode == 1 and r.stderr.splitlines()[1].startswith(
            "error: XML error: interface type: unsupported value 'team'")
        r = d.cli("iface-dumpxml", "nope0")
        assert r.stderr == ("error: failed to get interface 'nope0'\n"
                            "error: Interface not found: couldn't find interface named 'nope0'\n")
    finally:
        d.cleanup()
