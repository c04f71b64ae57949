"""Fixtures for the reach tests (Python binding, remote access, install): a real vireod (the management
tests' Daemon, driving vmm_double.py where there is no KVM), a real sshd on loopback with key
authentication, and x509 certificates made with certtool.

Use from a conftest.py: `from reach_env import *`."""
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("VIREO_SOURCE_DIR") or Path(__file__).resolve().parents[2])
BUILD = Path(os.environ.get("VIREO_BUILD_DIR", SOURCE / "build"))
PYTHON_DIR = SOURCE / "python"

_spec = importlib.util.spec_from_file_location("mgmt_conftest", SOURCE / "tests/integration/mgmt/conftest.py")
mgmt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mgmt)
Daemon = mgmt.Daemon
domain_xml = mgmt.domain_xml
VMM_DOUBLE = mgmt.VMM_DOUBLE
short_root = mgmt.short_root
guests = mgmt.guests
daemon = mgmt.daemon

__all__ = ["SOURCE", "BUILD", "PYTHON_DIR", "Daemon", "domain_xml", "VMM_DOUBLE", "short_root", "guests", "daemon",
           "free_port", "Sshd", "Pki", "python_env", "run_python", "wait_port"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc=None, timeout=10, what="server", log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port}" + (": " + Path(log).read_text() if log else ""))


def python_env(**more):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(PYTHON_DIR) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.update(more)
    return e


def run_python(code_or_file, *args, env=None, timeout=60):
    argv = ["/usr/bin/python3"] + ([str(code_or_file)] if str(code_or_file).endswith(".py") else ["-c", code_or_file])
    return subprocess.run(argv + [str(a) for a in args], env=env or python_env(), capture_output=True, text=True,
                          timeout=timeout)


class Sshd:
    """A real OpenSSH server on 127.0.0.1:<free port>, key authentication only, started from its own config
    and host key (no system service). Sessions get PATH with the build tree first and `session_env`."""

    def __init__(self, workdir, session_env):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = self.dir / "host_key"
        self.client_key = self.dir / "id_client"
        for k in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vireo-test", "-f", str(k)], check=True)
        (self.dir / "authorized_keys").write_text((self.dir / "id_client.pub").read_text())
        pub = (self.dir / "host_key.pub").read_text().split()
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n[localhost]:{self.port} {pub[0]} {pub[1]}\n")
        env = " ".join(f'{k}="{v}"' for k, v in {"PATH": f"{BUILD}:/usr/bin:/bin", **session_env}.items())
        self.log = self.dir / "sshd.log"
        (self.dir / "sshd_config").write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.dir}/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
SetEnv {env}
LogLevel VERBOSE
""")
        # The client side: a config and an `ssh` wrapper for tests that use a URI without port/keyfile.
        (self.dir / "ssh_config").write_text(f"""Host localhost 127.0.0.1
  Port {self.port}
  IdentityFile {self.client_key}
  UserKnownHostsFile {self.known_hosts}
  StrictHostKeyChecking yes
  BatchMode yes
""")
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        (self.bin / "ssh").write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {self.dir}/ssh_config \"$@\"\n")
        (self.bin / "ssh").chmod(0o755)
        self.proc = None

    def start(self):
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdout=logf, stderr=logf, start_new_session=True)
        wait_port(self.port, self.proc, what="sshd", log=self.log)
        return self

    def uri(self, user="root", **params):
        q = {"keyfile": str(self.client_key), "known_hosts": str(self.known_hosts), **params}
        qs = "&".join(f"{k}={v}" for k, v in q.items())
        return f"vireo+ssh://{user}@127.0.0.1:{self.port}/?{qs}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and client certificates, made with certtool, laid
    out as libvirt lays them (CA/cacert.pem; vireo/servercert.pem, vireo/private/serverkey.pem,
    vireo/clientcert.pem, vireo/private/clientkey.pem) under <root>/etc/pki."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = self._ca("ca", "Vireo Test CA")

    def _run(self, *args):
        r = subprocess.run(["certtool", *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    def _key(self, name):
        k = self.dir / f"{name}-key.pem"
        self._run("--generate-privkey", "--key-type=ecdsa", "--outfile", str(k))
        return k

    def _ca(self, name, cn):
        key = self._key(name)
        t = self.dir / f"{name}.info"
        t.write_text(f'cn = "{cn}"\nca\ncert_signing_key\nexpiration_days = 30\n')
        cert = self.dir / f"{name}-cert.pem"
        self._run("--generate-self-signed", "--load-privkey", str(key), "--template", str(t), "--outfile", str(cert))
        return key, cert

    def issue(self, name, template, ca=None):
        ca_key, ca_cert = ca or (self.ca_key, self.ca_cert)
        key = self._key(name)
        t = self.dir / f"{name}.info"
        t.write_text(template + "expiration_days = 30\n")
        cert = self.dir / f"{name}-cert.pem"
        self._run("--generate-certificate", "--load-privkey", str(key), "--load-ca-certificate", str(ca_cert),
                  "--load-ca-privkey", str(ca_key), "--template", str(t), "--outfile", str(cert))
        return key, cert

    def server(self, name="server", cn="localhost"):
        return self.issue(name, f'organization = "Vireo Test"\ncn = "{cn}"\ndns_name = "localhost"\n'
                                f'ip_address = "127.0.0.1"\ntls_www_server\nencryption_key\nsigning_key\n')

    def client(self, name, cn, org="Vireo Test", ca=None):
        return self.issue(name, f'country = "GB"\norganization = "{org}"\ncn = "{cn}"\ntls_www_client\n'
                                f'encryption_key\nsigning_key\n', ca=ca)

    def install_server(self, root, key_cert):
        key, cert = key_cert
        p = Path(root) / "etc/pki"
        (p / "CA").mkdir(parents=True, exist_ok=True)
        (p / "vireo/private").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca_cert, p / "CA/cacert.pem")
        shutil.copy(cert, p / "vireo/servercert.pem")
        shutil.copy(key, p / "vireo/private/serverkey.pem")

    def client_dir(self, name, key_cert, ca_cert=None):
        """A pkipath= directory: cacert.pem, clientcert.pem, clientkey.pem."""
        key, cert = key_cert
        d = self.dir / f"pki-{name}"
        d.mkdir(exist_ok=True)
        shutil.copy(ca_cert or self.ca_cert, d / "cacert.pem")
        shutil.copy(cert, d / "clientcert.pem")
        shutil.copy(key, d / "clientkey.pem")
        return d
