"""Byte streams to vireod: the local unix socket, ssh (a `vireo ssh-helper` on the remote side bridges
its stdin/stdout to the remote daemon's socket), TLS (x509 both ways, libvirt's file layout) and plain TCP.
Each connect_* returns a Stream; the JSON-RPC layer above does not care which."""
import os
import shlex
import socket
import ssl
import subprocess

from . import _uri


class TransportError(Exception):
    """A connection failure, with the one-line text the CLI prints too."""


class Stream:
    def __init__(self, sock, proc=None, host=""):
        self.sock = sock
        self.proc = proc
        self.host = host

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        return self.sock.recv(n)

    def failure_detail(self):
        """Why the peer went away (for ssh: the last line ssh or the remote helper wrote on stderr)."""
        if not self.proc:
            return ""
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        lines = [l.strip() for l in err.splitlines() if l.strip()]
        last = lines[-1] if lines else f"ssh exited with status {self.proc.returncode}"
        return f"cannot reach vireod over ssh on '{self.host}': {last}"

    def close(self):
        try:
            self.sock.close()
        finally:
            if self.proc:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                if self.proc.stderr:
                    self.proc.stderr.close()
                self.proc = None


def connect_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise TransportError(f"Failed to connect socket to '{path}': {os.strerror(e.errno) if e.errno else e}") from None
    return Stream(s)


def ssh_argv(u, readonly):
    argv = [u.params.get("command") or "ssh"]
    if u.port:
        argv += ["-p", str(u.port)]
    if u.user:
        argv += ["-l", u.user]
    if u.params.get("keyfile"):
        argv += ["-i", u.params["keyfile"]]
    argv += ["-T", "-e", "none"]
    if u.flag("no_verify"):
        argv += ["-o", "StrictHostKeyChecking=no"]
    if u.params.get("known_hosts"):
        argv += ["-o", "UserKnownHostsFile=" + u.params["known_hosts"]]
    if u.flag("no_tty"):
        argv += ["-o", "BatchMode=yes"]
    remote = [u.params.get("helper") or "vireo", "ssh-helper"]
    if readonly:
        remote.append("--readonly")
    if u.socket:
        remote += ["--socket", u.socket]
    # The remote side runs this through the user's shell: one quoted command line.
    argv += ["--", u.host, " ".join(shlex.quote(a) for a in remote)]
    return argv


def connect_ssh(u, readonly):
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(ssh_argv(u, readonly), stdin=theirs, stdout=theirs, stderr=subprocess.PIPE)
    except OSError as e:
        mine.close()
        raise TransportError(f"cannot run ssh: {e.strerror}") from None
    finally:
        theirs.close()
    return Stream(mine, proc, host=u.host)


def pki_files(u):
    """(cacert, clientcert, clientkey) in libvirt's layout, under $VIREO_ROOT when set."""
    d = u.params.get("pkipath")
    if d:
        return (os.path.join(d, "cacert.pem"), os.path.join(d, "clientcert.pem"), os.path.join(d, "clientkey.pem"))
    if os.geteuid() != 0 and not _uri.state_root():
        home = os.path.expanduser("~/.pki/vireo")
        if os.path.exists(os.path.join(home, "clientcert.pem")):
            return (os.path.join(home, "cacert.pem"), os.path.join(home, "clientcert.pem"),
                    os.path.join(home, "clientkey.pem"))
    r = _uri.state_root()
    return (r + "/etc/pki/CA/cacert.pem", r + "/etc/pki/vireo/clientcert.pem",
            r + "/etc/pki/vireo/private/clientkey.pem")


def _tcp(u):
    try:
        return socket.create_connection((u.host, u.port), timeout=30)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise TransportError(f"unable to connect to server at '{u.host}:{u.port}': {why}") from None


def connect_tls(u):
    ca, cert, key = pki_files(u)
    for what, path in (("CA certificate", ca), ("client certificate", cert), ("client key", key)):
        if not os.access(path, os.R_OK):
            raise TransportError(f"Cannot access {what} '{path}': {os.strerror(2 if not os.path.exists(path) else 13)}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=ca)
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise TransportError(f"cannot load TLS credentials: {e}") from None
    if u.flag("no_verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    raw = _tcp(u)
    try:
        s = ctx.wrap_socket(raw, server_hostname=u.host)
    except ssl.SSLCertVerificationError as e:
        raw.close()
        raise TransportError(f"TLS: the server certificate of '{u.host}' failed verification: {e.verify_message}") from None
    except (ssl.SSLError, OSError) as e:
        raw.close()
        raise TransportError(f"TLS handshake with '{u.host}:{u.port}' failed: {e}") from None
    s.settimeout(None)
    return Stream(s)


def connect_tcp(u):
    s = _tcp(u)
    s.settimeout(None)
    return Stream(s)


def connect(u, readonly):
    if u.kind == "unix":
        return connect_unix(u.socket or _uri.default_socket(readonly))
    if u.kind == "ssh":
        return connect_ssh(u, readonly)
    if u.kind == "tls":
        return connect_tls(u)
    return connect_tcp(u)
