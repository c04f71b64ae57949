"""Connection URIs, with the same grammar as the C++ client (src/client/uri.cpp; both are checked
against tests/data/uris.json):

  (none) | vireo:///system | vireo+unix:///system[?socket=PATH] | unix:///PATH   the local vireod
  vireo+ssh://[USER@]HOST[:PORT]/[system][?keyfile=K&no_verify=1&known_hosts=F&socket=S&helper=H&command=SSH&no_tty=1]
  vireo+tls://HOST[:PORT]/[?pkipath=DIR&no_verify=1]   (vireo://HOST/ is TLS too, as in libvirt)
  vireo+tcp://HOST[:PORT]/                            (only when vireod is configured insecure)
"""
import os
import urllib.parse

TLS_PORT = 16514
TCP_PORT = 16509

_PARAMS = {
    "unix": {"socket"},
    "ssh": {"keyfile", "no_verify", "known_hosts", "socket", "helper", "command", "no_tty"},
    "tls": {"pkipath", "no_verify"},
    "tcp": set(),
}


class URIError(ValueError):
    pass


def state_root():
    root = os.environ.get("VIREO_ROOT", "")
    return root.rstrip("/") if root not in ("", "/") else ""


def default_socket(readonly=False):
    return state_root() + "/run/vireo/" + ("vireod-ro.sock" if readonly else "vireod.sock")


class URI:
    def __init__(self, kind, text):
        self.kind = kind          # "unix" | "ssh" | "tls" | "tcp"
        self.text = text          # what getURI() reports
        self.socket = ""          # unix: the path ("" = default); ssh: the remote socket ("" = its default)
        self.host = ""
        self.port = 0
        self.user = ""
        self.params = {}

    def flag(self, name):
        return self.params.get(name, "0") not in ("", "0")


def parse(uri):
    if uri is None or uri == "":
        return URI("unix", "vireo:///system")

    def bad(why):
        return URIError(f"invalid connection URI '{uri}': {why}")

    if uri.startswith("unix:"):
        rest = uri[len("unix://"):] if uri.startswith("unix://") else uri[len("unix:"):]
        if not rest.startswith("/"):
            raise bad("expected unix:///absolute/path")
        u = URI("unix", uri)
        u.socket = rest
        return u
    try:
        s = urllib.parse.urlsplit(uri)
    except ValueError as e:
        raise bad(str(e)) from None
    scheme = s.scheme
    # libvirt's local QEMU URIs name the local daemon, so scripts written for them run unchanged.
    if scheme == "qemu" and not s.netloc and s.path in ("/system", "/session"):
        return URI("unix", uri)
    if scheme == "vireo":
        kind = "tls" if s.netloc else "unix"
    elif scheme in ("vireo+unix", "vireo+ssh", "vireo+tls", "vireo+tcp"):
        kind = scheme.split("+", 1)[1]
    else:
        raise bad(f"unsupported scheme '{scheme}' (use vireo:///system, unix:///PATH, vireo+ssh://HOST/, "
                  "vireo+tls://HOST/ or vireo+tcp://HOST/)")
    if s.path not in ("", "/", "/system", "/session"):
        raise bad(f"unknown path '{s.path}' (expected /system)")
    u = URI(kind, uri)
    for key, value in urllib.parse.parse_qsl(s.query, keep_blank_values=True):
        if key not in _PARAMS[kind]:
            raise bad(f"unknown parameter '{key}'")
        u.params[key] = value
    if kind == "unix":
        if s.netloc:
            raise bad("a unix URI names no host")
        u.socket = u.params.get("socket", "")
        if u.socket and not u.socket.startswith("/"):
            raise bad("socket must be an absolute path")
        return u
    if not s.hostname:
        raise bad("missing host name")
    u.host = s.hostname
    try:
        port = s.port
    except ValueError:
        raise bad("invalid port") from None
    if port == 0:
        raise bad("invalid port")
    u.port = port or (TLS_PORT if kind == "tls" else TCP_PORT if kind == "tcp" else 0)
    u.user = urllib.parse.unquote(s.username or "")
    if kind != "ssh" and u.user:
        raise bad("a user name is only meaningful with vireo+ssh")
    u.socket = u.params.get("socket", "")
    return u
