"""vireo+ssh://, vireo+tls://, vireo+tcp:// and the read-only socket against a real vireod (docs/remote.md)."""
import os
import subprocess
import sys

import pytest

from conftest import (BUILD, PYTHON_DIR, SOURCE, Daemon, Pki, Sshd, VMM_DOUBLE, domain_xml, free_port, python_env,
                      run_python)

sys.path.insert(0, str(PYTHON_DIR))
import vireo  # noqa: E402

SCRIPT = SOURCE / "tests/integration/python/libvirt_script.py"


def write(path, text):
    path.write_text(text)
    return str(path)


def populate(d, root, guests):
    """Three domains: one running, two defined (one with autostart)."""
    for n in ("web", "db", "cache"):
        d.ok("define", write(root / f"{n}.xml", domain_xml(n, guests / "spin.elf")))
    d.ok("start", "web")
    d.ok("autostart", "db")
    listing = d.ok("list", "--all")
    assert listing.count("\n") == 6, listing  # header, divider, three rows, the empty line
    return listing


def libvirt_reference(guests):
    r = subprocess.run(["/usr/bin/python3", str(SCRIPT), "test:///default", str(guests / "spin.elf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def run_ported_script(uri, guests, tmp, env=None):
    ported = tmp / "ported.py"
    ported.write_text(SCRIPT.read_text().replace("\nimport libvirt\n", "\nimport vireo as libvirt\n"))
    return run_python(ported, uri, guests / "spin.elf", env=env)


# ------------------------------------------------------------------------------------------------ ssh

@pytest.fixture
def ssh_setup(short_root, guests):
    d = Daemon(short_root / "root", VMM_DOUBLE)
    d.start()
    sshd = Sshd(short_root / "ssh", {"VIREO_ROOT": str(d.root)}).start()
    try:
        yield d, sshd
    finally:
        sshd.stop()
        d.cleanup()


def test_ssh_lists_the_same_domains_as_the_local_socket(ssh_setup, short_root, guests):
    d, sshd = ssh_setup
    local = populate(d, short_root, guests)
    # Explicit URI: port, key, known_hosts.
    r = d.cli("-c", sshd.uri(), "list", "--all", env={"VIREO_ROOT": "/nonexistent"})
    assert r.returncode == 0, r.stderr + sshd.log.read_text()
    assert r.stdout == local
    # The acceptance form: `vireo -c vireo+ssh://localhost/ list --all` (port, key and known_hosts come from
    # the ssh configuration, here through an `ssh` wrapper first in PATH that adds -F).
    env = {"PATH": f"{sshd.bin}:{os.environ['PATH']}", "VIREO_ROOT": "/nonexistent"}
    r = d.cli("-c", "vireo+ssh://localhost/", "list", "--all", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == local
    assert d.cli("-c", "vireo+ssh://localhost/", "dominfo", "web", env=env).stdout == d.ok("dominfo", "web")
    # Write verbs go through too.
    assert d.cli("-c", sshd.uri(), "destroy", "web").stdout == "Domain 'web' destroyed\n\n"
    assert d.ok("domstate", "web") == "shut off\n\n"
    # The sshd really authenticated our key.
    assert "Accepted publickey for root" in sshd.log.read_text()


def test_ssh_from_the_c_library_and_python(ssh_setup, short_root, guests):
    d, sshd = ssh_setup
    populate(d, short_root, guests)
    r = subprocess.run([str(BUILD / "tests/vireo-c-example"), sshd.uri()], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "domain web running (booted)\n" in r.stdout and "domain db shut off (unknown)\n" in r.stdout
    assert "lookup-error Domain not found: no domain with matching name 'no-such-domain'\n" in r.stdout

    with vireo.open(sshd.uri()) as c:
        assert [x.name() for x in c.listAllDomains()] == ["web", "cache", "db"]
        assert c.getURI() == sshd.uri()
        assert c.isEncrypted() == 1
    r = run_ported_script(sshd.uri(), guests, short_root)
    assert r.returncode == 0, r.stderr
    assert r.stdout == libvirt_reference(guests)


def test_ssh_failures_are_one_clear_line(ssh_setup, short_root):
    d, sshd = ssh_setup
    other = short_root / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    uri = sshd.uri(keyfile=str(other), no_tty=1)
    r = d.cli("-c", uri, "list")
    assert r.returncode == 1
    assert r.stderr == ("error: failed to connect to the hypervisor\n"
                        "error: cannot reach vireod over ssh on '127.0.0.1': root@127.0.0.1: Permission denied (publickey).\n")
    # Unknown host key: refused unless no_verify=1.
    empty = short_root / "empty_known_hosts"
    empty.write_text("")
    r = d.cli("-c", sshd.uri(known_hosts=str(empty), no_tty=1), "list")
    assert r.returncode == 1
    assert r.stderr.endswith("error: cannot reach vireod over ssh on '127.0.0.1': Host key verification failed.\n")
    r = d.cli("-c", sshd.uri(known_hosts=str(empty), no_verify=1), "list", "--all", "--name")
    assert r.returncode == 0, r.stderr
    # The remote helper's own error (no daemon at that socket).
    r = d.cli("-c", sshd.uri(socket="/nonexistent/vireod.sock"), "list")
    assert r.returncode == 1
    assert r.stderr.endswith("error: cannot reach vireod over ssh on '127.0.0.1': vireo ssh-helper: Failed to connect "
                             "socket to '/nonexistent/vireod.sock': No such file or directory\n")
    with pytest.raises(vireo.libvirtError) as e:
        vireo.open(uri)
    assert e.value.get_error_message() == \
        "cannot reach vireod over ssh on '127.0.0.1': root@127.0.0.1: Permission denied (publickey)."


def test_ssh_read_only(ssh_setup, short_root, guests):
    d, sshd = ssh_setup
    populate(d, short_root, guests)
    r = d.cli("-r", "-c", sshd.uri(), "start", "db")
    assert r.returncode == 1
    assert r.stderr == "error: Failed to start domain 'db'\nerror: access denied: 'start' is not allowed on a read-only connection\n"
    with vireo.openReadOnly(sshd.uri()) as c:
        assert c.lookupByName("web").isActive() == 1
        with pytest.raises(vireo.libvirtError) as e:
            c.lookupByName("web").destroy()
        assert e.value.get_error_code() == vireo.VIR_ERR_ACCESS_DENIED
    assert d.ok("domstate", "web") == "running\n\n"
    assert "refused 'destroy' from unix (read-only socket): read-only connection" in d.log.read_text()


# ------------------------------------------------------------------------------------------------ TLS

@pytest.fixture
def pki(short_root):
    return Pki(short_root / "pki")


def tls_daemon(root, pki, server, extra_conf=""):
    port = free_port()
    pki.install_server(root, server)
    (root / "etc/vireo").mkdir(parents=True, exist_ok=True)
    (root / "etc/vireo/vireod.conf").write_text(
        f'# test configuration\nlisten_addr = "127.0.0.1"\ntls_port = "{port}"\n{extra_conf}')
    d = Daemon(root, VMM_DOUBLE, extra=["--listen"])
    d.start()
    return d, port


@pytest.fixture
def tls_setup(short_root, pki):
    root = short_root / "root"
    d, port = tls_daemon(root, pki, pki.server(),
                         'tls_allowed_dn_list = [\n  "C=GB,O=Vireo Test,CN=client*",\n  "C=GB,O=Elsewhere*"\n]\n')
    # The client's own certificate in libvirt's layout under the same root (VIREO_ROOT finds it).
    key, cert = pki.client("client1", "client1")
    (root / "etc/pki/vireo/clientcert.pem").write_bytes(cert.read_bytes())
    (root / "etc/pki/vireo/private/clientkey.pem").write_bytes(key.read_bytes())
    try:
        yield d, port
    finally:
        d.cleanup()


def test_tls_lists_the_same_domains_as_the_local_socket(tls_setup, short_root, guests):
    d, port = tls_setup
    local = populate(d, short_root, guests)
    for host in ("localhost", "127.0.0.1"):
        r = d.cli("-c", f"vireo+tls://{host}:{port}/", "list", "--all")
        assert r.returncode == 0, r.stderr + d.log.read_text()
        assert r.stdout == local
    assert d.cli("-c", f"vireo://localhost:{port}/system", "list", "--all").stdout == local
    r = d.cli("-c", f"vireo+tls://localhost:{port}/", "suspend", "web")
    assert r.stdout == "Domain 'web' suspended\n\n"
    assert d.ok("domstate", "--reason", "web") == "paused (user)\n\n"
    assert f"listening on TLS 127.0.0.1:{port}" in d.log.read_text()


def test_tls_from_the_c_library_and_python(tls_setup, short_root, guests):
    d, port = tls_setup
    populate(d, short_root, guests)
    uri = f"vireo+tls://localhost:{port}/"
    env = dict(os.environ, VIREO_ROOT=str(d.root))
    r = subprocess.run([str(BUILD / "tests/vireo-c-example"), uri], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "domain web running (booted)\n" in r.stdout
    r = run_ported_script(uri, guests, short_root, env=python_env(VIREO_ROOT=str(d.root)))
    assert r.returncode == 0, r.stderr
    assert r.stdout == libvirt_reference(guests)
    os.environ["VIREO_ROOT"] = str(d.root)
    try:
        with vireo.open(uri) as c:
            assert [x.name() for x in c.listAllDomains()] == ["web", "cache", "db"]
            assert c.isSecure() == 1 and c.isEncrypted() == 1
        with vireo.openReadOnly(uri) as c:
            with pytest.raises(vireo.libvirtError) as e:
                c.lookupByName("db").create()
            assert e.value.get_error_message() == "access denied: 'start' is not allowed on a read-only connection"
    finally:
        del os.environ["VIREO_ROOT"]


def test_tls_client_certificates_are_checked(tls_setup, pki, short_root):
    d, port = tls_setup
    uri = f"vireo+tls://localhost:{port}/"
    # A certificate from the right CA whose DN is not on the allow-list.
    intruder = pki.client_dir("intruder", pki.client("intruder", "intruder"))
    r = d.cli("-c", uri + f"?pkipath={intruder}", "list")
    assert r.returncode == 1
    assert r.stderr == ("error: failed to connect to the hypervisor\n"
                        "error: access denied: client certificate DN 'C=GB,O=Vireo Test,CN=intruder' is not in "
                        "tls_allowed_dn_list\n")
    assert "refused TLS connection from 127.0.0.1:" in d.log.read_text()
    assert "('C=GB,O=Vireo Test,CN=intruder'): client certificate DN" in d.log.read_text()
    # The second pattern lets another organisation in.
    other = pki.client_dir("other", pki.client("other", "anyone", org="Elsewhere Ltd"))
    assert d.cli("-c", uri + f"?pkipath={other}", "list").returncode == 0
    # A client certificate from another CA.
    rogue_ca = pki._ca("rogue", "Rogue CA")
    rogue = pki.client_dir("rogue", pki.client("rogueclient", "client1", ca=rogue_ca))
    r = d.cli("-c", uri + f"?pkipath={rogue}&no_verify=1", "list")
    assert r.returncode == 1
    assert r.stderr.startswith("error: failed to connect to the hypervisor\n"
                               "error: access denied: the client certificate failed verification: ")
    assert "issuer is unknown" in r.stderr
    with pytest.raises(vireo.libvirtError) as e:
        vireo.open(uri + f"?pkipath={intruder}")
    assert e.value.get_error_code() == vireo.VIR_ERR_ACCESS_DENIED


def test_tls_server_certificate_is_checked(tls_setup, pki, short_root):
    d, port = tls_setup
    uri = f"vireo+tls://localhost:{port}/"
    # Our client certificate is fine, but we trust another CA: the server's certificate is refused.
    rogue_ca = pki._ca("rogue2", "Rogue CA")
    good = pki.client("good", "client2")
    wrong_ca = pki.client_dir("wrongca", good, ca_cert=rogue_ca[1])
    r = d.cli("-c", uri + f"?pkipath={wrong_ca}", "list")
    assert r.returncode == 1
    assert r.stderr.startswith("error: failed to connect to the hypervisor\n"
                               "error: TLS: the server certificate of 'localhost' failed verification: ")
    assert "The certificate issuer is unknown." in r.stderr
    with pytest.raises(vireo.libvirtError) as e:
        vireo.open(uri + f"?pkipath={wrong_ca}")
    assert e.value.get_error_message().startswith("TLS: the server certificate of 'localhost' failed verification")
    # no_verify=1 skips the client's check (the server still checks ours).
    assert d.cli("-c", uri + f"?pkipath={wrong_ca}&no_verify=1", "list").returncode == 0
    with vireo.open(uri + f"?pkipath={wrong_ca}&no_verify=1") as c:
        assert c.listAllDomains() == []


def test_tls_host_name_must_match(short_root, pki):
    root = short_root / "r2"
    d, port = tls_daemon(root, pki, pki.issue("wrongname", 'cn = "elsewhere.example"\ndns_name = "elsewhere.example"\n'
                                              'tls_www_server\nencryption_key\nsigning_key\n'))
    try:
        client = pki.client_dir("c3", pki.client("c3", "client3"))
        r = d.cli("-c", f"vireo+tls://localhost:{port}/?pkipath={client}", "list")
        assert r.returncode == 1
        assert "TLS: the server certificate of 'localhost' failed verification: " in r.stderr
        assert "does not match" in r.stderr
        # Any CA-signed client is let in when there is no allow-list.
        assert d.cli("-c", f"vireo+tls://localhost:{port}/?pkipath={client}&no_verify=1", "list").returncode == 0
    finally:
        d.cleanup()


def test_tls_without_server_certificates_stops_the_daemon(short_root):
    root = short_root / "r3"
    root.mkdir()
    r = subprocess.run([str(BUILD / "vireod"), "--root", str(root), "--listen"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert r.stderr.endswith(f"vireod: error: Cannot access CA certificate '{root}/etc/pki/CA/cacert.pem': "
                             "No such file or directory\n")


# ------------------------------------------------------------------------------------------------ TCP

def test_tcp_only_when_configured_insecure(short_root, guests):
    root = short_root / "root"
    (root / "etc/vireo").mkdir(parents=True)
    port = free_port()
    conf = root / "etc/vireo/vireod.conf"
    conf.write_text(f'listen_tcp = 1\nlisten_addr = "127.0.0.1"\ntcp_port = {port}\n')
    r = subprocess.run([str(BUILD / "vireod"), "--root", str(root)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr == (f"vireod: error: {conf}:1: listen_tcp = 1 also needs auth_tcp = \"none\": plain TCP is neither "
                        "authenticated nor encrypted, so it must be asked for explicitly (use listen_tls for remote "
                        "access)\n")
    conf.write_text(f'listen_tcp = 1\nauth_tcp = "none"\nlisten_addr = "127.0.0.1"\ntcp_port = {port}\n')
    d = Daemon(root, VMM_DOUBLE)
    d.start()
    try:
        local = populate(d, short_root, guests)
        r = d.cli("-c", f"vireo+tcp://127.0.0.1:{port}/", "list", "--all")
        assert r.returncode == 0, r.stderr
        assert r.stdout == local
        with vireo.open(f"vireo+tcp://127.0.0.1:{port}/") as c:
            assert c.isSecure() == 0 and len(c.listAllDomains()) == 3
        assert 'warning: plain TCP connections (auth_tcp = "none") are neither authenticated nor encrypted' in \
            d.log.read_text()
    finally:
        d.cleanup()
    # Not configured: nothing listens.
    d = Daemon(short_root / "plain", VMM_DOUBLE)
    d.start()
    try:
        r = d.cli("-c", f"vireo+tcp://127.0.0.1:{port}/", "list")
        assert r.returncode == 1
        assert r.stderr == ("error: failed to connect to the hypervisor\n"
                            f"error: unable to connect to server at '127.0.0.1:{port}': Connection refused\n")
    finally:
        d.cleanup()


# ------------------------------------------------------------------------------------------------ read-only socket

def test_read_only_socket_allows_queries_only(daemon, short_root, guests):
    populate(daemon, short_root, guests)
    ro = daemon.root / "run/vireo/vireod-ro.sock"
    assert oct(ro.stat().st_mode & 0o777) == "0o777"
    r = daemon.cli("-c", f"unix://{ro}", "list", "--all")
    assert r.returncode == 0 and r.stdout == daemon.ok("list", "--all")
    assert daemon.cli("-r", "dominfo", "web").stdout == daemon.ok("dominfo", "web")
    assert daemon.cli("-r", "dumpxml", "web").stdout == daemon.ok("dumpxml", "web")
    for args, verb in ((["destroy", "web"], "destroy"), (["start", "db"], "start"), (["undefine", "cache"], "undefine")):
        r = daemon.cli("-r", *args)
        assert r.returncode == 1, args
        assert r.stderr.endswith(f"error: access denied: '{verb}' is not allowed on a read-only connection\n"), r.stderr
    r = daemon.cli("-r", "define", write(short_root / "x.xml", domain_xml("x", guests / "spin.elf")))
    assert r.stderr.endswith("error: access denied: 'define' is not allowed on a read-only connection\n")
    assert daemon.ok("list", "--all", "--name") == "web\ncache\ndb\n\n"  # nothing changed
    log = daemon.log.read_text()
    assert "refused 'destroy' from unix (read-only socket): read-only connection" in log
    # Python: openReadOnly() goes to the read-only socket.
    os.environ["VIREO_ROOT"] = str(daemon.root)
    try:
        with vireo.openReadOnly() as c:
            assert c.isReadOnly() == 1
            assert c.lookupByName("web").info()[0] == vireo.VIR_DOMAIN_RUNNING
            with pytest.raises(vireo.libvirtError) as e:
                c.defineXML(domain_xml("y", guests / "spin.elf"))
            assert e.value.get_error_code() == vireo.VIR_ERR_ACCESS_DENIED
    finally:
        del os.environ["VIREO_ROOT"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the client as another user")
def test_read_only_socket_serves_unprivileged_users(short_root, guests):
    # The rw socket's mode lets everyone connect, so vireod's own peer check is what refuses.
    daemon = Daemon(short_root / "root", VMM_DOUBLE, extra=["--socket-mode", "0666"])
    daemon.start()
    request_cleanup = daemon.cleanup
    try:
        _unprivileged(daemon, short_root, guests)
    finally:
        request_cleanup()


def _unprivileged(daemon, short_root, guests):
    populate(daemon, short_root, guests)
    for p in (short_root, daemon.root, daemon.root / "run", daemon.root / "run/vireo"):
        os.chmod(p, 0o755)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BUILD / "vireo")]
    env = dict(os.environ, VIREO_ROOT=str(daemon.root))
    r = subprocess.run(nobody + ["list", "--all"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 1
    assert r.stderr == "error: failed to connect to the hypervisor\nerror: access denied: uid 65534 is not root\n"
    assert "refused connection from uid 65534 pid " in daemon.log.read_text()
    r = subprocess.run(nobody + ["-r", "list", "--all"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == daemon.ok("list", "--all")
