"""python/vireo against a real vireod (the VMM double stands in for vireo-vmm; docs/management.md)."""
import json
import subprocess
import sys

import pytest

from conftest import PYTHON_DIR, SOURCE, domain_xml, python_env, run_python

sys.path.insert(0, str(PYTHON_DIR))
import vireo  # noqa: E402
from vireo import _uri  # noqa: E402

SCRIPT = SOURCE / "tests/integration/python/libvirt_script.py"
LIBVIRT_DIST = "/usr/lib/python3/dist-packages"


def libvirt_module():
    """libvirt-python (python3-libvirt, installed by scripts/setup.sh) is the oracle here: its absence fails."""
    sys.path.append(LIBVIRT_DIST)
    try:
        import libvirt
    finally:
        sys.path.remove(LIBVIRT_DIST)
    return libvirt


def test_constants_match_libvirt_python():
    libvirt = libvirt_module()
    names = [n for n in dir(vireo._constants) if n.startswith("VIR_")]
    assert len(names) > 120
    for n in names:
        assert getattr(libvirt, n) == getattr(vireo, n), n


def test_uri_grammar_matches_the_shared_vectors():
    for v in json.loads((SOURCE / "tests/data/uris.json").read_text()):
        if "error" in v:
            with pytest.raises(_uri.URIError) as e:
                _uri.parse(v["uri"])
            assert str(e.value) == v["error"]
            continue
        u = _uri.parse(v["uri"])
        for k in ("kind", "socket", "host", "port", "user", "text"):
            if k in v:
                assert getattr(u, k) == v[k], (v["uri"], k)
        if "params" in v:
            assert u.params == v["params"]


def test_libvirt_program_runs_with_only_its_import_changed(daemon, guests, short_root):
    """The acceptance program: libvirt's test driver gives the reference output; vireod must give the same."""
    ref = subprocess.run(["/usr/bin/python3", str(SCRIPT), "test:///default", str(guests / "spin.elf")],
                         capture_output=True, text=True, timeout=60)
    assert ref.returncode == 0, ref.stderr
    text = SCRIPT.read_text()
    assert text.count("\nimport libvirt\n") == 1
    ported = short_root / "ported.py"
    ported.write_text(text.replace("\nimport libvirt\n", "\nimport vireo as libvirt\n"))
    r = run_python(ported, "-", guests / "spin.elf", env=python_env(VIREO_ROOT=str(daemon.root)))
    assert r.returncode == 0, r.stderr + daemon.log.read_text()
    assert r.stdout == ref.stdout
    assert "started running True id>0 True" in r.stdout  # the run really went through the lifecycle
    # Nothing left behind in vireod.
    assert daemon.ok("list", "--all", "--name") == "\n"


@pytest.fixture
def conn(daemon, monkeypatch):
    monkeypatch.setenv("VIREO_ROOT", str(daemon.root))
    c = vireo.open()
    yield c
    c.close()


def define(conn, short_root, guests, name, **kw):
    return conn.defineXML(domain_xml(name, guests / "spin.elf", **kw))


def test_errors_carry_libvirt_codes_and_messages(conn, short_root, guests):
    with pytest.raises(vireo.libvirtError) as e:
        conn.lookupByName("nope")
    assert e.value.get_error_code() == vireo.VIR_ERR_NO_DOMAIN
    assert e.value.get_error_message() == "Domain not found: no domain with matching name 'nope'"
    assert str(e.value) == e.value.get_error_message()
    assert e.value.get_error_level() == vireo.VIR_ERR_ERROR

    with pytest.raises(vireo.libvirtError) as e:
        conn.lookupByUUIDString("6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10")
    assert e.value.get_error_code() == vireo.VIR_ERR_NO_DOMAIN
    assert e.value.get_error_message() == "Domain not found: no domain with matching uuid '6f1c6e3a-2b7d-4c59-9e0b-5a7d2c8e4f10'"

    with pytest.raises(vireo.libvirtError) as e:
        conn.defineXML("<domain type='kvm'><name>b</name><memory unit='MB2'>64</memory></domain>")
    assert e.value.get_error_code() == vireo.VIR_ERR_XML_ERROR
    assert e.value.get_error_message() == "XML error: memory: unknown unit 'MB2'"

    d = define(conn, short_root, guests, "web")
    d.create()
    with pytest.raises(vireo.libvirtError) as e:
        d.create()
    assert e.value.get_error_code() == vireo.VIR_ERR_OPERATION_INVALID
    assert e.value.get_error_message() == "Requested operation is not valid: domain is already running"
    d.destroy()
    with pytest.raises(vireo.libvirtError) as e:
        d.resume()
    assert e.value.get_error_code() == vireo.VIR_ERR_OPERATION_INVALID
    assert e.value.get_error_message() == "Requested operation is not valid: domain is not running"

    g = conn.defineXML(domain_xml("gfx", guests / "spin.elf", devices="<graphics type='vnc'/>"))
    assert g.name() == "gfx"
    with pytest.raises(vireo.libvirtError) as e:
        conn.defineXMLFlags(domain_xml("gfx2", guests / "spin.elf", devices="<graphics type='vnc'/>"),
                            vireo.VIR_DOMAIN_DEFINE_VALIDATE)
    assert e.value.get_error_code() == vireo.VIR_ERR_CONFIG_UNSUPPORTED


def test_error_handler_is_called(conn):
    seen = []
    vireo.registerErrorHandler(lambda ctx, err: seen.append((ctx, err[0], err[2])), "ctx")
    try:
        with pytest.raises(vireo.libvirtError):
            conn.lookupByName("nope")
    finally:
        vireo.registerErrorHandler(None, None)
    assert seen == [("ctx", vireo.VIR_ERR_NO_DOMAIN, "Domain not found: no domain with matching name 'nope'")]


def test_open_failures(short_root, monkeypatch):
    monkeypatch.setenv("VIREO_ROOT", str(short_root / "none"))
    with pytest.raises(vireo.libvirtError) as e:
        vireo.open()
    assert e.value.get_error_code() == vireo.VIR_ERR_SYSTEM_ERROR
    assert e.value.get_error_domain() == vireo.VIR_FROM_RPC
    assert e.value.get_error_message() == \
        f"Failed to connect socket to '{short_root}/none/run/vireo/vireod.sock': No such file or directory"
    with pytest.raises(vireo.libvirtError) as e:
        vireo.open("xen:///system")
    assert e.value.get_error_code() == vireo.VIR_ERR_INVALID_ARG
    assert e.value.get_error_message().startswith("invalid connection URI 'xen:///system': unsupported scheme 'xen'")
    with pytest.raises(vireo.libvirtError) as e:
        vireo.open("vireo+tcp://127.0.0.1:1/")
    assert e.value.get_error_message() == "unable to connect to server at '127.0.0.1:1': Connection refused"


def test_connection_queries(conn, daemon):
    assert conn.getURI() == "vireo:///system"
    assert conn.getType() == "VIREO"
    assert conn.getLibVersion() == vireo.getVersion() == 1000
    assert conn.getVersion() == 1000
    assert conn.isAlive() == 1 and conn.isSecure() == 1 and conn.isEncrypted() == 0
    with vireo.open(f"unix://{daemon.socket}") as c2:
        assert c2.getURI() == f"unix://{daemon.socket}"
        assert c2.listAllDomains() == []
    assert conn.close() == 0
    assert conn.isAlive() == 0
    with pytest.raises(vireo.libvirtError) as e:
        conn.listAllDomains()
    assert e.value.get_error_code() == vireo.VIR_ERR_INVALID_CONN


def test_list_flags_lookup_and_identity(conn, daemon, short_root, guests):
    a = define(conn, short_root, guests, "alpha", uuid="11111111-2222-3333-4444-555555555555")
    b = define(conn, short_root, guests, "beta")
    c = conn.createXML(domain_xml("gamma", guests / "spin.elf"))  # transient, started
    b.create()
    a.setAutostart(True)
    names = lambda flags=0: [d.name() for d in conn.listAllDomains(flags)]
    # virsh's order: running by id, then the others by name.
    assert names() == ["gamma", "beta", "alpha"]
    assert names(vireo.VIR_CONNECT_LIST_DOMAINS_ACTIVE) == ["gamma", "beta"]
    assert names(vireo.VIR_CONNECT_LIST_DOMAINS_INACTIVE) == ["alpha"]
    assert names(vireo.VIR_CONNECT_LIST_DOMAINS_TRANSIENT) == ["gamma"]
    assert names(vireo.VIR_CONNECT_LIST_DOMAINS_PERSISTENT | vireo.VIR_CONNECT_LIST_DOMAINS_ACTIVE) == ["beta"]
    assert names(vireo.VIR_CONNECT_LIST_DOMAINS_AUTOSTART) == ["alpha"]
    assert names(vireo.VIR_CONNECT_LIST_DOMAINS_SHUTOFF | vireo.VIR_CONNECT_LIST_DOMAINS_PAUSED) == ["alpha"]
    assert conn.listDefinedDomains() == ["alpha"]
    assert conn.numOfDomains() == 2 and conn.numOfDefinedDomains() == 1
    assert sorted(conn.listDomainsID()) == sorted([b.ID(), c.ID()])

    assert c.isPersistent() == 0 and c.isActive() == 1
    assert conn.lookupByUUIDString("11111111222233334444555555555555").name() == "alpha"
    assert conn.lookupByUUID(a.UUID()) == a
    assert conn.lookupByID(b.ID()) == b
    with pytest.raises(vireo.libvirtError) as e:
        conn.lookupByID(999)
    assert e.value.get_error_message() == "Domain not found: no domain with matching id 999"
    # lookupByName matches names only (vireod's own lookup also takes ids and uuids).
    with pytest.raises(vireo.libvirtError):
        conn.lookupByName(str(b.ID()))
    with pytest.raises(vireo.libvirtError) as e:
        conn.lookupByUUIDString("not-a-uuid")
    assert e.value.get_error_code() == vireo.VIR_ERR_INVALID_ARG

    info = b.info()
    assert info[0] == vireo.VIR_DOMAIN_RUNNING and info[1] == info[2] == 65536 and info[3] == 1
    assert b.OSType() == "hvm" and b.maxMemory() == 65536
    assert "<name>beta</name>" in b.XMLDesc(0) and f"id='{b.ID()}'" in b.XMLDesc(0)
    assert "id='" not in b.XMLDesc(vireo.VIR_DOMAIN_XML_INACTIVE)

    # The CLI sees what the binding did.
    assert daemon.ok("list", "--all", "--name") == "gamma\nbeta\nalpha\n\n"
    assert daemon.ok("list", "--autostart", "--all", "--name") == "alpha\n\n"

    c.destroy()  # a transient domain vanishes when it stops
    with pytest.raises(vireo.libvirtError):
        conn.lookupByName("gamma")
    b.undefine()  # undefining a running domain makes it transient (libvirt semantics)
    assert b.isPersistent() == 0 and b.isActive() == 1
    b.destroy()
    a.undefine()
    assert conn.listAllDomains() == []


def test_shutdown_and_reboot_reach_the_vmm(conn, short_root, guests, daemon):
    d = define(conn, short_root, guests, "web")
    d.create()
    assert d.reboot() == 0
    assert d.shutdown() == 0
    # The VMM double powers off on a shutdown request: the domain ends up shut off (shutdown).
    import time
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and d.state()[0] != vireo.VIR_DOMAIN_SHUTOFF:
        time.sleep(0.05)
    assert d.state() == [vireo.VIR_DOMAIN_SHUTOFF, vireo.VIR_DOMAIN_SHUTOFF_SHUTDOWN]
    d.undefine()


def test_host_and_statistics(conn, daemon, short_root, guests):
    import os
    import socket
    assert conn.getHostname() == socket.gethostname()
    info = conn.getInfo()
    assert info[0] == os.uname().machine and info[2] == os.cpu_count()
    assert info[4] * info[5] * info[6] * info[7] == os.cpu_count()
    assert info[1] == int(open("/proc/meminfo").read().split()[1]) // 1024
    assert "<capabilities>" in conn.getCapabilities() and "<os_type>hvm</os_type>" in conn.getCapabilities()
    assert conn.getSysinfo().startswith("<sysinfo type='smbios'")
    d = conn.defineXML(domain_xml("web", guests / "spin.elf").replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>"))
    with pytest.raises(vireo.libvirtError) as e:
        d.vcpus()
    assert e.value.get_error_code() == vireo.VIR_ERR_OPERATION_INVALID
    d.create()
    vcpus, maps = d.vcpus()
    assert [v[0] for v in vcpus] == [0, 1] and all(v[1] == vireo.VIR_VCPU_RUNNING for v in vcpus)
    assert all(len(m) == os.sysconf("SC_NPROCESSORS_CONF") for m in maps)
    stats = dict(conn.getAllDomainStats())
    assert stats[d]["state.state"] == vireo.VIR_DOMAIN_RUNNING
    assert stats[d]["state.reason"] == vireo.VIR_DOMAIN_RUNNING_BOOTED
    assert stats[d]["vcpu.current"] == 2 and stats[d]["balloon.maximum"] == 65536
    assert conn.domainListGetStats([d])[0][1]["vcpu.maximum"] == 2
    with pytest.raises(vireo.libvirtError) as e:
        d.interfaceStats("nope")
    assert e.value.get_error_message() == "invalid argument: 'nope' is not a known interface"
    with pytest.raises(vireo.libvirtError) as e:
        d.blockStats("")
    assert e.value.get_error_code() == vireo.VIR_ERR_NO_SUPPORT
    d.destroy()
    d.undefine()
