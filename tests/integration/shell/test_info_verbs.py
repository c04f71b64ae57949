"""help, the host verbs and the domain monitoring verbs, against virsh's test driver for texts and layouts."""
import os
import re
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import BUILD, domain_xml

DEVICES = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
           "<source file='/var/lib/images/web.qcow2'/><target dev='vda' bus='virtio'/></disk>"
           "<disk type='file' device='cdrom'><target dev='sdb' bus='sata'/><readonly/></disk>"
           "<interface type='bridge'><mac address='52:54:00:11:22:33'/><source bridge='br0'/>"
           "<target dev='vrtap8'/><model type='virtio'/></interface>"
           "<interface type='ethernet'><mac address='52:54:00:44:55:66'/><target dev='vrtap9'/>"
           "<model type='virtio'/></interface>")


def virsh(*args, node=None):
    uri = f"test://{node}" if node else "test:///default"
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=60)


def test_tables_match_virsh(daemon, short_root, guests):
    xml = domain_xml("web", guests / "spin.elf", devices=DEVICES, uuid="6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10")
    f = short_root / "web.xml"
    f.write_text(xml)
    daemon.ok("define", str(f))
    node = short_root / "node.xml"
    node.write_text("<node>\n" + xml.replace("<domain type='kvm'>", "<domain type='test'>") + "</node>\n")
    for args in (["domiflist", "--inactive", "web"], ["domiflist", "web"], ["domblklist", "web"],
                 ["domblklist", "--inactive", "--details", "web"]):
        want = virsh(*args, node=node)
        assert want.returncode == 0, want.stderr
        assert daemon.ok(*args) == want.stdout, args
    # virsh's `--domain NAME` spelling of a positional works too.
    assert daemon.ok("domblklist", "--domain", "web") == virsh("domblklist", "web", node=node).stdout


def sections(text, drop=("DESCRIPTION",)):
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^  ([A-Z]+)$", line)
        if m:
            cur = m.group(1)
            out[cur] = []
        elif cur and line:
            out[cur].append(line)
    return {k: v for k, v in out.items() if k not in drop}


@pytest.mark.parametrize("verb", ["dominfo", "domiflist", "domblklist", "domifstat", "vcpuinfo", "hostname", "uri",
                                  "nodeinfo", "capabilities", "sysinfo", "domstate", "autostart", "domifaddr",
                                  "domblkstat"])
def test_verb_help_matches_virsh(daemon, verb):
    want = virsh("help", verb)
    assert want.returncode == 0
    got = daemon.ok("help", verb)
    # The layout is virsh's byte for byte; the DESCRIPTION paragraphs are ours.
    assert sections(got) == sections(want.stdout)
    assert got.startswith("  NAME\n    " + verb + " - ") and got.endswith("\n\n\n")
    assert daemon.ok(verb, "--help") == got


def test_help_lists_groups_like_virsh(daemon):
    got = daemon.ok("help")
    want = virsh("help").stdout
    assert got.startswith("Grouped commands:\n\n Domain Management (help keyword 'domain'):\n")
    want_headers = set(re.findall(r"^ [A-Z].*\(help keyword '[a-z]+'\):$", want, re.M))
    for h in re.findall(r"^ [A-Z].*\(help keyword '[a-z]+'\):$", got, re.M):
        if "Vireo itself" in h:
            continue
        assert h in want_headers, h
    # Each verb line: four spaces, the name padded to 30, a space, the summary (virsh's own lines where the
    # summary is the same).
    assert "    dominfo                        domain information\n" in got
    assert "    dominfo                        domain information\n" in want
    assert daemon.ok("help", "monitor").startswith(" Domain Monitoring (help keyword 'monitor'):\n    domblklist ")
    assert "ssh-helper" not in got and "complete " not in got
    r = daemon.cli("help", "nosuch")
    assert r.returncode == 1 and r.stderr == "error: command or command group 'nosuch' doesn't exist\n"


@pytest.mark.parametrize("args", [["nosuch"], ["list", "--foo"], ["dominfo"], ["uri", "extra"]])
def test_parse_errors_match_virsh(daemon, args):
    want = virsh(*args)
    got = daemon.cli(*args)
    assert got.returncode == want.returncode == 1
    assert got.stderr == want.stderr


def strip_values(text):
    return re.sub(r"^(\S[^:]*:\s+).*$", r"\1", text, flags=re.M)


def test_host_verbs(daemon, short_root):
    assert daemon.ok("hostname") == socket.gethostname() + "\n\n"
    assert daemon.ok("uri") == "vireo:///system\n\n"
    assert daemon.ok("-c", f"unix://{daemon.socket}", "uri") == f"unix://{daemon.socket}\n\n"
    got = daemon.ok("nodeinfo")
    assert strip_values(got) == strip_values(virsh("nodeinfo").stdout)
    fields = dict(re.findall(r"^([^:]+):\s+(.*)$", got, re.M))
    assert fields["CPU model"] == os.uname().machine
    assert int(fields["CPU(s)"]) == os.cpu_count()
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    assert fields["Memory size"] == f"{mem} KiB"
    sockets, cores, threads, cells = (int(fields[k]) for k in ("CPU socket(s)", "Core(s) per socket",
                                                               "Thread(s) per core", "NUMA cell(s)"))
    assert sockets * cores * threads * cells == os.cpu_count()

    caps = ET.fromstring(daemon.ok("capabilities"))
    assert caps.tag == "capabilities"
    assert caps.find("host/cpu/arch").text == os.uname().machine
    assert caps.find("guest/os_type").text == "hvm"
    assert caps.find("guest/arch/emulator").text == daemon.vmm
    assert caps.find("guest/arch/domain").get("type") == "kvm"

    sysinfo = daemon.ok("sysinfo")
    root = ET.fromstring(sysinfo)
    assert root.tag == "sysinfo" and root.get("type") == "smbios"
    dmi = Path("/sys/class/dmi/id")
    if dmi.exists() and (dmi / "bios_vendor").exists():
        assert root.find("bios/entry[@name='vendor']").text == (dmi / "bios_vendor").read_text().strip()
    else:
        assert list(root) == []  # this machine has no SMBIOS tables: nothing is made up
    # The read-only socket may ask all of these.
    assert daemon.ok("-r", "hostname") == socket.gethostname() + "\n\n"


@pytest.fixture
def tap():
    name = f"vrt{os.getpid() % 100000}"
    r = subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_running_domain_statistics(daemon, short_root, guests, tap):
    img = short_root / "disk.img"
    img.write_bytes(b"\0" * 4096)
    devices = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{img}'/>"
               f"<target dev='vda' bus='virtio'/></disk><interface type='ethernet'><mac address='52:54:00:44:55:66'/>"
               f"<target dev='{tap}'/><model type='virtio'/></interface><serial type='pty'/>")
    f = short_root / "web.xml"
    f.write_text(domain_xml("web", guests / "spin.elf", devices=devices).replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>"))
    daemon.ok("define", str(f))
    r = daemon.cli("vcpuinfo", "web")
    assert r.returncode == 1 and r.stderr == "error: Requested operation is not valid: domain is not running\n"
    daemon.ok("start", "web")

    # domifstat: the tap's counters seen from the guest (rx and tx swapped), virsh's eight lines.
    out = daemon.ok("domifstat", "web", tap)
    stats = Path(f"/sys/class/net/{tap}/statistics")
    swapped = {"rx_bytes": "tx_bytes", "rx_packets": "tx_packets", "rx_errs": "tx_errors", "rx_drop": "tx_dropped",
               "tx_bytes": "rx_bytes", "tx_packets": "rx_packets", "tx_errs": "rx_errors", "tx_drop": "rx_dropped"}
    assert out == "".join(f"{tap} {k} {(stats / v).read_text().strip()}\n" for k, v in swapped.items()) + "\n"
    want = virsh("domifstat", "test", "nope")
    r = daemon.cli("domifstat", "web", "nope")
    assert r.returncode == 1
    assert r.stderr == want.stderr.replace("test nope", "web nope")  # virsh's two lines
    assert daemon.ok("domifstat", "web", "52:54:00:44:55:66").startswith(f"52:54:00:44:55:66 rx_bytes ")

    # vcpuinfo: one block per vCPU thread of the VMM, virsh's labels.
    out = daemon.ok("vcpuinfo", "web")
    blocks = out.strip("\n").split("\n\n")
    assert len(blocks) == 2
    ref = virsh("vcpuinfo", "test").stdout.strip("\n").split("\n\n")[0]
    for i, b in enumerate(blocks):
        assert strip_values(b) == strip_values(ref)
        assert b.startswith(f"VCPU:           {i}\nCPU:            ")
        assert re.search(r"^CPU time:       \d+\.\ds$", b, re.M)
        assert re.search(r"^CPU Affinity:   [y-]{%d}$" % os.sysconf("SC_NPROCESSORS_CONF"), b, re.M)
        assert "State:          running" in b

    out = daemon.ok("domstats", "web")
    assert out.startswith("Domain: 'web'\n  state.state=1\n  state.reason=1\n  cpu.time=")
    kv = dict(re.findall(r"^  ([a-z0-9.]+)=(.*)$", out, re.M))
    assert kv["balloon.current"] == "65536" and kv["balloon.maximum"] == "65536"
    assert kv["vcpu.current"] == "2" and kv["vcpu.maximum"] == "2" and kv["vcpu.1.state"] == "1"
    assert kv["net.count"] == "1" and kv["net.0.name"] == tap
    assert kv["net.0.rx.bytes"] == (stats / "tx_bytes").read_text().strip()
    assert kv["block.count"] == "1" and kv["block.0.name"] == "vda" and kv["block.0.path"] == str(img)
    assert daemon.ok("domstats", "--state", "web") == "Domain: 'web'\n  state.state=1\n  state.reason=1\n\n"
    daemon.ok("suspend", "web")
    assert "state.state=3\n  state.reason=1\n" in daemon.ok("domstats", "--state")

    # domifaddr --source arp: the host's neighbour table, matched by the guest's MAC (a documentation-range
    # address on our own tap; nothing is sent).
    for cmd in (["ip", "addr", "add", "198.51.100.1/24", "dev", tap], ["ip", "link", "set", tap, "up"],
                ["ip", "neigh", "replace", "198.51.100.7", "lladdr", "52:54:00:44:55:66", "dev", tap, "nud", "permanent"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)
    want_header = virsh("domifaddr", "test").stdout.splitlines()[:2]
    out = daemon.ok("domifaddr", "web", "--source", "arp")
    assert out.splitlines()[:2] == want_header
    assert out.splitlines()[2:] == [f" {tap:<10} 52:54:00:44:55:66    ipv4         198.51.100.7/0", ""]
    r = daemon.cli("domifaddr", "web")
    assert r.returncode == 1
    assert r.stderr == ("error: Failed to query for interfaces addresses\nerror: this function is not supported by the "
                        "connection driver: virDomainInterfaceAddresses (source 'lease'; use --source arp)\n")

    r = daemon.cli("domblkstat", "web", "vda")
    assert r.returncode == 1
    assert r.stderr == ("error: Failed to get block stats web vda\n"
                        "error: this function is not supported by the connection driver: virDomainBlockStats\n")
