"""The install step (docs/install.md): a DESTDIR tree that works as a system install."""
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, SOURCE, Daemon, VMM_DOUBLE, domain_xml, python_env, run_python

PREFIX = "/usr"


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["cmake", "--install", str(BUILD), "--prefix", PREFIX], env=dict(os.environ, DESTDIR=str(d)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def libdir(dest):
    pcs = list(dest.glob("usr/lib*/**/pkgconfig/vireo.pc")) + list(dest.glob("usr/lib/pkgconfig/vireo.pc"))
    assert pcs, "no vireo.pc installed"
    return pcs[0].parent.parent


def test_tree(dest):
    lib = libdir(dest).relative_to(dest)
    want = ["usr/bin/vireo", "usr/bin/vireo-img", "usr/bin/vireo-vmm", "usr/sbin/vireod",
            f"{lib}/libvireo.so.0.1.0", f"{lib}/libvireo.so.0", f"{lib}/libvireo.so", f"{lib}/pkgconfig/vireo.pc",
            f"{lib}/pkgconfig/vireo-cxx.pc", "usr/include/vireo/vireo.h", "usr/include/vireo/client/client.h",
            "usr/include/vireo/common/fd.h", "usr/lib/python3/dist-packages/vireo/__init__.py",
            "usr/lib/python3/dist-packages/vireo/_transport.py", "usr/lib/systemd/system/vireod.service",
            "usr/lib/systemd/system/vireod.socket", "usr/lib/systemd/system/vireod-ro.socket",
            "usr/lib/systemd/system/vireod-tls.socket", "usr/share/bash-completion/completions/vireo",
            "usr/share/bash-completion/completions/vireo-img", "usr/share/man/man1/vireo.1",
            "usr/share/man/man1/vireo-img.1", "usr/share/man/man1/vireo-vmm.1", "usr/share/man/man8/vireod.8",
            "etc/vireo/vireod.conf"]
    for w in want:
        assert (dest / w).exists() or (dest / w).is_symlink(), w
    for b in ("usr/bin/vireo", "usr/bin/vireo-img", "usr/bin/vireo-vmm", "usr/sbin/vireod"):
        assert os.access(dest / b, os.X_OK), b
    assert os.readlink(dest / lib / "libvireo.so.0") == "libvireo.so.0.1.0"
    r = subprocess.run(["objdump", "-p", str(dest / lib / "libvireo.so.0.1.0")], capture_output=True, text=True)
    assert "SONAME               libvireo.so.0" in r.stdout
    unit = (dest / "usr/lib/systemd/system/vireod.service").read_text()
    assert "ExecStart=/usr/sbin/vireod\n" in unit and "KillMode=process\n" in unit
    assert "ListenStream=/run/vireo/vireod-ro.sock\n" in (dest / "usr/lib/systemd/system/vireod-ro.socket").read_text()
    # Nothing of the build tree leaks into installed files.
    for f in dest.rglob("*"):
        if f.is_file() and f.suffix in (".pc", ".service", ".socket", ".conf"):
            assert str(BUILD) not in f.read_text() and str(SOURCE) not in f.read_text(), f


def test_installed_programs_run(dest, short_root):
    r = subprocess.run([str(dest / "usr/bin/vireo"), "help", "uri"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("  NAME\n    uri - ")
    assert subprocess.run([str(dest / "usr/bin/vireo-img"), "--version"], capture_output=True, text=True).returncode == 0
    # vireod finds the installed VMM (../bin/vireo-vmm) and reads the installed default vireod.conf.
    d = Daemon(short_root / "root", "", extra=["--config", str(dest / "etc/vireo/vireod.conf")])
    env_vmm = d.env()
    env_vmm.pop("VIREO_VMM", None)
    d.root.mkdir(parents=True)
    logf = open(d.log, "ab")
    proc = subprocess.Popen([str(dest / "usr/sbin/vireod"), "--root", str(d.root), "--config",
                             str(dest / "etc/vireo/vireod.conf")], env=env_vmm, stdout=logf, stderr=logf)
    try:
        deadline = time.monotonic() + 10
        while not d.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        caps = d.ok("capabilities")
        assert f"<emulator>{dest}/usr/bin/vireo-vmm</emulator>" in caps
    finally:
        proc.terminate()
        proc.wait(10)


def test_pkg_config_builds_c_and_cxx_programs(dest, daemon, short_root, guests):
    lib = libdir(dest)
    env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=str(dest), PKG_CONFIG_PATH=str(lib / "pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "vireo"], env=env, capture_output=True, text=True)
    assert flags.returncode == 0, flags.stderr
    assert flags.stdout.split() == [f"-I{dest}/usr/include/vireo", f"-L{lib}", "-lvireo"]
    exe = short_root / "list_domains"
    r = subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", str(SOURCE / "src/client/examples/list_domains.c"), "-o",
                        str(exe), *flags.stdout.split()], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (short_root / "web.xml").write_text(domain_xml("web", guests / "spin.elf"))
    daemon.ok("define", str(short_root / "web.xml"))
    run_env = dict(daemon.env(), LD_LIBRARY_PATH=str(lib))
    r = subprocess.run([str(exe), f"unix://{daemon.socket}"], capture_output=True, text=True, env=run_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "domain web shut off (unknown)\n" in r.stdout
    # It really is the shared library that ran.
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=run_env).stdout
    assert f"libvireo.so.0 => {lib}/libvireo.so.0" in ldd

    cxx = short_root / "list.cpp"
    cxx.write_text('#include <client/client.h>\n#include <cstdio>\nint main() {\n'
                   '  vireo::client::Connection c("");\n'
                   '  for (auto& d : c.list()) std::printf("%s %s\\n", d.name.c_str(), d.state.c_str());\n'
                   '  try { c.lookup("nope"); } catch (const vireo::client::ClientError& e) { std::printf("%d %s\\n", e.code(), e.what()); }\n}\n')
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "vireo-cxx"], env=env, capture_output=True, text=True)
    assert cflags.returncode == 0, cflags.stderr
    r = subprocess.run(["c++", str(cxx), "-o", str(short_root / "listxx"), *cflags.stdout.split()],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(short_root / "listxx")], capture_output=True, text=True, env=run_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "web shut off\n1 Domain not found: no domain with matching name 'nope'\n"


def test_installed_python_module(dest, daemon):
    site = dest / "usr/lib/python3/dist-packages"
    r = run_python("import vireo, sys; c = vireo.open(); print(vireo.__file__); print(c.getURI(), len(c.listAllDomains()))",
                   env=dict(daemon.env(), PYTHONPATH=str(site)))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{site}/vireo/__init__.py\nvireo:///system 0\n"


def test_units_verify(dest, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    for u in ("vireod.service", "vireod.socket", "vireod-ro.socket", "vireod-tls.socket"):
        text = (dest / "usr/lib/systemd/system" / u).read_text()
        (units / u).write_text(text.replace("/usr/sbin/vireod", str(dest / "usr/sbin/vireod")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *[str(p) for p in sorted(units.iterdir())]],
                       capture_output=True, text=True, cwd=units)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_man_pages(dest):
    out = subprocess.run(["man", "-l", "-P", "cat", str(dest / "usr/share/man/man1/vireo.1")], capture_output=True,
                         text=True, env=dict(os.environ, MANWIDTH="200")).stdout
    assert "DOMAIN MONITORING COMMANDS" in out and "HOST AND HYPERVISOR COMMANDS" in out
    # The verbs' synopses and options are those `vireo help VERB` prints.
    assert "domblklist <domain> [--inactive] [--details]" in out
    assert "additionally display the type and device value" in out
    vireod = subprocess.run(["man", "-l", "-P", "cat", str(dest / "usr/share/man/man8/vireod.8")], capture_output=True,
                            text=True, env=dict(os.environ, MANWIDTH="200")).stdout
    assert "--listen" in vireod and "--config" in vireod
    img = (dest / "usr/share/man/man1/vireo-img.1").read_text()
    assert ".B convert" in img


def test_bash_completion(dest, daemon, short_root, guests):
    (short_root / "web.xml").write_text(domain_xml("web", guests / "spin.elf"))
    daemon.ok("define", str(short_root / "web.xml"))
    comp = dest / "usr/share/bash-completion/completions"

    def complete(script, *words):
        arr = " ".join("'" + w + "'" for w in words)
        r = subprocess.run(["bash", "-c", f"source {comp / script}; COMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}; "
                                          f"_{script.replace('-', '_')}; printf '%s\\n' \"${{COMPREPLY[@]}}\""],
                           capture_output=True, text=True, env=daemon.env(), timeout=60)
        assert r.returncode == 0, r.stderr
        return [l for l in r.stdout.splitlines() if l]

    vireo = str(dest / "usr/bin/vireo")
    assert sorted(complete("vireo", vireo, "domi")) == ["domifaddr", "domiflist", "domifstat", "dominfo"]
    assert complete("vireo", vireo, "dominfo", "w") == ["web"]
    assert complete("vireo", vireo, "list", "--st") == ["--state-running", "--state-paused", "--state-shutoff",
                                                        "--state-other"]
    assert complete("vireo", vireo, "-c", f"unix://{daemon.socket}", "start", "") == ["web"]
    assert complete("vireo", vireo, "help", "mon") == ["monitor"]
    img = str(dest / "usr/bin/vireo-img")
    assert complete("vireo-img", img, "co") == ["commit", "compare", "convert"]
    assert "--backing-chain" in complete("vireo-img", img, "info", "--")
    assert complete("vireo-img", img, "create", "-f", "") == ["qcow2", "raw"]


def test_reinstall_keeps_the_admins_config(dest):
    conf = dest / "etc/vireo/vireod.conf"
    conf.write_text("listen_tls = 1\n")
    r = subprocess.run(["cmake", "--install", str(BUILD), "--prefix", PREFIX], env=dict(os.environ, DESTDIR=str(dest)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert conf.read_text() == "listen_tls = 1\n"
    assert "Keeping existing" in r.stdout


def test_socket_activation(short_root, guests):
    """systemd's socket-passing protocol (LISTEN_FDS/LISTEN_FDNAMES), driven by systemd-socket-activate."""
    root = short_root / "root"
    run = root / "run/vireo"
    run.mkdir(parents=True)
    rw, ro = run / "vireod.sock", run / "vireod-ro.sock"
    logf = open(short_root / "act.log", "ab")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(rw), "--fdname=vireod", "-l", str(ro),
                             "--fdname=vireod-ro", "-E", f"VIREO_VMM={VMM_DOUBLE}", str(BUILD / "vireod"), "--root",
                             str(root)], stdout=logf, stderr=logf, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (rw.exists() and ro.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        d = Daemon(root, VMM_DOUBLE)
        (short_root / "w.xml").write_text(domain_xml("web", guests / "spin.elf"))
        assert d.ok("define", str(short_root / "w.xml")) == f"Domain 'web' defined from {short_root / 'w.xml'}\n\n"
        assert d.ok("-r", "list", "--all", "--name") == "web\n\n"
        r = d.cli("-r", "start", "web")
        assert r.stderr.endswith("error: access denied: 'start' is not allowed on a read-only connection\n")
        log = (short_root / "act.log").read_text()
        assert "listening on systemd socket 'vireod'" in log and "listening on systemd socket 'vireod-ro'" in log
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    # The sockets are systemd's (here: systemd-socket-activate's): vireod does not remove them.
    assert "exiting" in (short_root / "act.log").read_text()


def test_vireod_under_systemd(short_root, guests):
    comm = Path("/proc/1/comm").read_text().strip()
    if comm != "systemd" or not Path("/run/systemd/system").is_dir():
        pytest.skip(f"PID 1 is '{comm}', not systemd: vireod cannot be run as a systemd service on this machine "
                    "(socket activation itself is tested with systemd-socket-activate above)")
    root = short_root / "sysroot"
    name = f"vireod-test-{os.getpid()}"
    units = Path("/run/systemd/system")
    sock = root / "run/vireo/vireod.sock"
    (units / f"{name}.socket").write_text(f"[Socket]\nListenStream={sock}\nFileDescriptorName=vireod\n"
                                          f"Service={name}.service\n")
    (units / f"{name}.service").write_text(f"[Service]\nExecStart={BUILD / 'vireod'} --root {root}\n"
                                           f"Environment=VIREO_VMM={VMM_DOUBLE}\nKillMode=process\n")
    try:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "start", f"{name}.socket"], check=True)
        d = Daemon(root, VMM_DOUBLE)
        assert d.ok("list", "--all") == " Id   Name   State\n--------------------\n\n"
        st = subprocess.run(["systemctl", "is-active", f"{name}.service"], capture_output=True, text=True)
        assert st.stdout.strip() == "active"
        (short_root / "w.xml").write_text(domain_xml("web", guests / "spin.elf"))
        d.ok("define", str(short_root / "w.xml"))
        d.ok("start", "web")
        subprocess.run(["systemctl", "restart", f"{name}.service"], check=True)
        assert d.ok("domstate", "web") == "running\n\n"  # KillMode=process: the domain survived
        d.ok("destroy", "web")
    finally:
        subprocess.run(["systemctl", "stop", f"{name}.socket", f"{name}.service"])
        for u in (f"{name}.socket", f"{name}.service"):
            (units / u).unlink(missing_ok=True)
        subprocess.run(["systemctl", "daemon-reload"])
