"""vireo: the Python binding of Vireo's management daemon (vireod), with libvirt-python's names.

A libvirt-python script ports by changing its import (`import vireo as libvirt`):

    conn = vireo.open()                   # the local vireod ($VIREO_ROOT honoured), or any URI the CLI takes
    dom = conn.defineXML(xml)
    dom.create()
    state, reason = dom.state()
    dom.destroy(); dom.undefine(); conn.close()

Pure Python over vireod's JSON-RPC (docs/management.md); standard library only. Remote URIs
(vireo+ssh://, vireo+tls://, vireo+tcp://) are described in docs/remote.md.
"""
import json
import threading
import uuid as _uuidmod

from . import _transport, _uri
from ._constants import *  # noqa: F401,F403  (libvirt's constant names)
from ._constants import (VIR_CONNECT_LIST_DOMAINS_ACTIVE, VIR_CONNECT_LIST_DOMAINS_AUTOSTART,
                         VIR_CONNECT_LIST_DOMAINS_INACTIVE, VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART,
                         VIR_CONNECT_LIST_DOMAINS_OTHER, VIR_CONNECT_LIST_DOMAINS_PAUSED,
                         VIR_CONNECT_LIST_DOMAINS_PERSISTENT, VIR_CONNECT_LIST_DOMAINS_RUNNING,
                         VIR_CONNECT_LIST_DOMAINS_SHUTOFF, VIR_CONNECT_LIST_DOMAINS_TRANSIENT, VIR_CONNECT_RO,
                         VIR_DOMAIN_DEFINE_VALIDATE, VIR_DOMAIN_START_VALIDATE, VIR_DOMAIN_XML_INACTIVE,
                         VIR_ERR_ACCESS_DENIED, VIR_ERR_CONFIG_UNSUPPORTED, VIR_ERR_ERROR, VIR_ERR_INTERNAL_ERROR,
                         VIR_ERR_INVALID_ARG, VIR_ERR_INVALID_CONN, VIR_ERR_NO_DOMAIN, VIR_ERR_NO_INTERFACE, VIR_ERR_NO_NETWORK,
                         VIR_ERR_NO_STORAGE_POOL, VIR_ERR_NO_STORAGE_VOL, VIR_ERR_NO_SUPPORT,
                         VIR_ERR_OPERATION_DENIED, VIR_ERR_OPERATION_FAILED, VIR_ERR_OPERATION_INVALID,
                         VIR_ERR_RPC, VIR_ERR_SYSTEM_ERROR, VIR_ERR_XML_ERROR, VIR_FROM_DOMAIN, VIR_FROM_NONE,
                         VIR_FROM_RPC)

__version__ = "0.1.0"
_VERSION_NUMBER = 1000  # 0.1.0 as libvirt encodes versions: major * 1000000 + minor * 1000 + release

# vireod's JSON-RPC error codes (docs/management.md) -> libvirt's error numbers.
_CODES = {
    1: VIR_ERR_NO_DOMAIN,
    2: VIR_ERR_OPERATION_INVALID,
    3: VIR_ERR_XML_ERROR,
    4: VIR_ERR_OPERATION_FAILED,
    5: VIR_ERR_ACCESS_DENIED,
    6: VIR_ERR_INTERNAL_ERROR,
    7: VIR_ERR_CONFIG_UNSUPPORTED,
    8: VIR_ERR_NO_NETWORK,
    9: VIR_ERR_NO_STORAGE_POOL,
    10: VIR_ERR_NO_STORAGE_VOL,
    11: VIR_ERR_NO_INTERFACE,
    12: VIR_ERR_INVALID_ARG,
    -32601: VIR_ERR_NO_SUPPORT,
    -32602: VIR_ERR_INVALID_ARG,
    -32600: VIR_ERR_RPC,
    -32700: VIR_ERR_RPC,
}

_STATES = {"no state": 0, "running": 1, "idle": 2, "blocked": 2, "paused": 3, "in shutdown": 4, "shut off": 5,
           "crashed": 6, "pmsuspended": 7}
# virsh's reason words, by state number, in libvirt's numbering.
_REASONS = {
    1: ["unknown", "booted", "migrated", "restored", "from snapshot", "unpaused", "migration canceled",
        "save canceled", "event wakeup", "crashed", "post-copy", "post-copy failed"],
    3: ["unknown", "user", "migrating", "saving", "dumping", "I/O error", "watchdog", "from snapshot",
        "shutting down", "creating snapshot", "crashed", "starting up", "post-copy", "post-copy failed"],
    4: ["unknown", "user"],
    5: ["unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot", "daemon"],
    6: ["unknown", "panicked"],
}

_error_handler = None


class libvirtError(Exception):
    """libvirt-python's exception: str(e) is the message; get_error_code() is libvirt's error number."""

    def __init__(self, defmsg, code=VIR_ERR_INTERNAL_ERROR, domain=VIR_FROM_NONE):
        Exception.__init__(self, defmsg)
        self.err = (code, domain, defmsg, VIR_ERR_ERROR, None, None, None, 0, 0)

    def get_error_code(self):
        return self.err[0]

    def get_error_domain(self):
        return self.err[1]

    def get_error_message(self):
        return self.err[2]

    def get_error_level(self):
        return self.err[3]

    def get_str1(self):
        return self.err[4]

    def get_str2(self):
        return self.err[5]

    def get_str3(self):
        return self.err[6]

    def get_int1(self):
        return self.err[7]

    def get_int2(self):
        return self.err[8]


def _raise(msg, code, domain=VIR_FROM_DOMAIN, notify=True):
    e = libvirtError(msg, code, domain)
    if notify and _error_handler is not None:
        handler, ctx = _error_handler
        handler(ctx, e.err)
    raise e


def registerErrorHandler(f, ctx):
    """As libvirt: f(ctx, err) is called for every error (libvirtError is still raised). None resets."""
    global _error_handler
    _error_handler = None if f is None else (f, ctx)
    return 0


def getVersion(name=None):
    return _VERSION_NUMBER


def _version_number(text):
    try:
        parts = [int(p) for p in str(text).split(".")[:3]]
    except ValueError:
        return 0
    parts += [0] * (3 - len(parts))
    return parts[0] * 1000000 + parts[1] * 1000 + parts[2]


class _Rpc:
    """JSON-RPC 2.0, one object per line each way, over any transport stream."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = b""
        self.next_id = 1
        self.lock = threading.Lock()

    def _read_line(self):
        while b"\n" not in self.buf:
            try:
                chunk = self.stream.recv(65536)
            except OSError as e:
                detail = self.stream.failure_detail()
                _raise(detail or f"lost connection to vireod: {e.strerror or e}", VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC)
            if not chunk:
                detail = self.stream.failure_detail()
                _raise(detail or "vireod closed the connection", VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def call(self, method, params=None, notify=True):
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            req = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}
            try:
                self.stream.sendall(json.dumps(req).encode() + b"\n")
            except OSError:
                pass  # read anyway: vireod may have said why it hung up
            line = self._read_line()
        try:
            r = json.loads(line)
        except ValueError:
            _raise("malformed reply from vireod", VIR_ERR_RPC, VIR_FROM_RPC)
        if "error" in r:
            e = r["error"] or {}
            code = e.get("code", 0)
            _raise(e.get("message", "unknown error"), _CODES.get(code, VIR_ERR_INTERNAL_ERROR), notify=notify)
        return r.get("result")

    def close(self):
        self.stream.close()


def _flags_keep(s, flags):
    """libvirt's listAllDomains filter groups: within a group any flag matches; groups are ANDed."""
    def group(bits_and_tests):
        wanted = [t for bit, t in bits_and_tests if flags & bit]
        return not wanted or any(t for t in wanted)

    state = s.get("state")
    return (group([(VIR_CONNECT_LIST_DOMAINS_ACTIVE, s["active"]), (VIR_CONNECT_LIST_DOMAINS_INACTIVE, not s["active"])])
            and group([(VIR_CONNECT_LIST_DOMAINS_PERSISTENT, s["persistent"]),
                       (VIR_CONNECT_LIST_DOMAINS_TRANSIENT, not s["persistent"])])
            and group([(VIR_CONNECT_LIST_DOMAINS_RUNNING, state == "running"),
                       (VIR_CONNECT_LIST_DOMAINS_PAUSED, state == "paused"),
                       (VIR_CONNECT_LIST_DOMAINS_SHUTOFF, state == "shut off"),
                       (VIR_CONNECT_LIST_DOMAINS_OTHER, state not in ("running", "paused", "shut off"))])
            and group([(VIR_CONNECT_LIST_DOMAINS_AUTOSTART, s["autostart"]),
                       (VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART, not s["autostart"])]))


def _sort_key(s):
    # virsh's order: running domains by id, then the others by name.
    return (0, s["id"], "") if s["active"] else (1, 0, s["name"].lower())


class virConnect:
    def __init__(self, uri=None, readonly=False):
        try:
            self._uri = _uri.parse(uri)
        except _uri.URIError as e:
            _raise(str(e), VIR_ERR_INVALID_ARG, VIR_FROM_NONE)
        self._readonly = readonly
        try:
            stream = _transport.connect(self._uri, readonly)
        except _transport.TransportError as e:
            _raise(str(e), VIR_ERR_SYSTEM_ERROR, VIR_FROM_RPC)
        self._rpc = _Rpc(stream)
        try:
            self._hello = self._rpc.call("hello", {"readonly": True} if readonly else {})
        except BaseException:
            self._rpc.close()
            raise

    # -- plumbing
    def _call(self, method, **params):
        if self._rpc is None:
            _raise("invalid connection pointer in " + method, VIR_ERR_INVALID_CONN, VIR_FROM_NONE)
        return self._rpc.call(method, params)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_rpc", None) is not None:
                self._rpc.close()
        except Exception:
            pass

    # -- connection
    def close(self):
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None
        return 0

    def getURI(self):
        return self._uri.text

    def getType(self):
        return "VIREO"

    def getVersion(self):
        return _version_number(self._hello.get("hypervisor_version", "0"))

    def getLibVersion(self):
        return _version_number(self._hello.get("version", "0"))

    def getHostname(self):
        return self._call("hostname")["hostname"]

    def getCapabilities(self):
        return self._call("capabilities")["xml"]

    def getSysinfo(self, flags=0):
        return self._call("sysinfo")["xml"]

    def getInfo(self):
        """[model, memory MiB, cpus, MHz, NUMA nodes, sockets, cores per socket, threads per core]"""
        n = self._call("nodeinfo")
        return [n["model"], n["memory_kib"] // 1024, n["cpus"], n["mhz"], n["nodes"], n["sockets"], n["cores"],
                n["threads"]]

    def isAlive(self):
        if self._rpc is None:
            return 0
        try:
            self._call("version")
            return 1
        except libvirtError:
            return 0

    def isSecure(self):
        return 0 if self._uri.kind == "tcp" else 1

    def isEncrypted(self):
        return 1 if self._uri.kind in ("tls", "ssh") else 0

    def isReadOnly(self):  # not in libvirt-python; handy in tests
        return 1 if self._readonly else 0

    # -- domains
    def _summaries(self):
        return sorted(self._call("list"), key=_sort_key)

    def listAllDomains(self, flags=0):
        return [virDomain(self, s) for s in self._summaries() if _flags_keep(s, flags)]

    def listDomainsID(self):
        return [s["id"] for s in self._summaries() if s["active"]]

    def listDefinedDomains(self):
        return [s["name"] for s in self._summaries() if not s["active"]]

    def numOfDomains(self):
        return len(self.listDomainsID())

    def numOfDefinedDomains(self):
        return len(self.listDefinedDomains())

    def _lookup_or_none(self, key):
        if self._rpc is None:
            self._call("lookup")  # raises "invalid connection"
        try:
            return self._rpc.call("lookup", {"domain": key}, notify=False)
        except libvirtError as e:
            if e.get_error_code() != VIR_ERR_NO_DOMAIN:
                _raise(e.get_error_message(), e.get_error_code(), e.get_error_domain())
            return None

    def lookupByName(self, name):
        s = self._lookup_or_none(name)
        if s is None or s["name"] != name:  # vireod also resolves ids and uuids; libvirt's lookup does not
            _raise(f"Domain not found: no domain with matching name '{name}'", VIR_ERR_NO_DOMAIN)
        return virDomain(self, s)

    def lookupByUUIDString(self, uuidstr):
        try:
            norm = str(_uuidmod.UUID(uuidstr))
        except (ValueError, TypeError, AttributeError):
            _raise(f"invalid argument: invalid UUID '{uuidstr}'", VIR_ERR_INVALID_ARG, VIR_FROM_NONE)
        s = self._lookup_or_none(norm)
        if s is None or s["uuid"] != norm:
            _raise(f"Domain not found: no domain with matching uuid '{norm}'", VIR_ERR_NO_DOMAIN)
        return virDomain(self, s)

    def lookupByUUID(self, uuid_bytes):
        return self.lookupByUUIDString(str(_uuidmod.UUID(bytes=bytes(uuid_bytes))))

    def lookupByID(self, id):
        for s in self._call("list"):
            if s["active"] and s["id"] == int(id):
                return virDomain(self, s)
        _raise(f"Domain not found: no domain with matching id {int(id)}", VIR_ERR_NO_DOMAIN)

    def getAllDomainStats(self, stats=0, flags=0):
        """[(virDomain, {"state.state": 1, ...})] for every domain (libvirt's keys; `stats` groups ignored)."""
        return [(d, self._stats_of(d)) for d in self.listAllDomains(0)]

    def domainListGetStats(self, doms, stats=0, flags=0):
        return [(d, self._stats_of(d)) for d in doms]

    def _stats_of(self, d):
        return {k: v for k, v in self._call("domstats", domain=d.UUIDString())["stats"]}

    def defineXML(self, xml):
        return self.defineXMLFlags(xml, 0)

    def defineXMLFlags(self, xml, flags=0):
        r = self._call("define", xml=xml, validate=bool(flags & VIR_DOMAIN_DEFINE_VALIDATE))
        return virDomain(self, self._call("lookup", domain=r["uuid"]))

    def createXML(self, xmlDesc, flags=0):
        if flags & ~VIR_DOMAIN_START_VALIDATE:
            _raise(f"unsupported flags (0x{flags & ~VIR_DOMAIN_START_VALIDATE:x}) in function createXML",
                   VIR_ERR_INVALID_ARG, VIR_FROM_NONE)
        r = self._call("create", xml=xmlDesc, validate=bool(flags & VIR_DOMAIN_START_VALIDATE))
        return virDomain(self, self._call("lookup", domain=r["uuid"]))


class virDomain:
    def __init__(self, conn, summary):
        self._conn = conn
        self._s = summary

    def __repr__(self):
        return f"<vireo.virDomain {self._s['name']!r} {self._s['uuid']}>"

    def __eq__(self, other):
        return isinstance(other, virDomain) and other._s["uuid"] == self._s["uuid"]

    def __hash__(self):
        return hash(self._s["uuid"])

    def _call(self, method, **params):
        return self._conn._call(method, domain=self._s["uuid"], **params)

    def _refresh(self):
        self._s = self._call("lookup")
        return self._s

    def connect(self):
        return self._conn

    def name(self):
        return self._s["name"]

    def UUIDString(self):
        return self._s["uuid"]

    def UUID(self):
        return _uuidmod.UUID(self._s["uuid"]).bytes

    def ID(self):
        s = self._refresh()
        return s["id"] if s["active"] else -1

    def isActive(self):
        return 1 if self._refresh()["active"] else 0

    def isPersistent(self):
        return 1 if self._refresh()["persistent"] else 0

    def isUpdated(self):
        return 0

    def autostart(self):
        return 1 if self._refresh()["autostart"] else 0

    def setAutostart(self, autostart):
        self._call("autostart", enable=bool(autostart))
        return 0

    def info(self):
        """[state, maxMem KiB, memory KiB, nrVirtCpu, cpuTime ns]"""
        i = self._call("info")
        return [_STATES.get(i["state"], 0), i["max_memory_kib"], i["used_memory_kib"], i["vcpus"], i["cpu_time_ns"]]

    def state(self, flags=0):
        s = self._call("domstate")
        self._s = {k: s[k] for k in ("name", "uuid", "id", "state", "reason", "active", "persistent", "autostart")}
        st = _STATES.get(s["state"], 0)
        words = _REASONS.get(st, ["unknown"])
        return [st, words.index(s["reason"]) if s["reason"] in words else 0]

    def OSType(self):
        return self._call("info")["os_type"]

    def maxMemory(self):
        return self._call("info")["max_memory_kib"]

    def vcpus(self):
        """([(number, state, cpuTime ns, cpu)], [cpumap tuple of bools per vCPU])"""
        rows = self._call("vcpuinfo")
        info = [(r["vcpu"], 1 if r["state"] == "running" else 0, r["time_ns"], r["cpu"]) for r in rows]
        maps = [tuple(c == "y" for c in r["affinity"]) for r in rows]
        return (info, maps)

    def interfaceStats(self, path):
        """(rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop) from the guest's view"""
        st = self._call("domifstat", interface=path)
        return tuple(st[k] for k in ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes", "tx_packets",
                                     "tx_errs", "tx_drop"))

    def blockStats(self, path):
        st = self._call("domblkstat", device=path)
        return tuple(st[k] for k in ("rd_req", "rd_bytes", "wr_req", "wr_bytes", "errs"))

    def XMLDesc(self, flags=0):
        return self._call("dumpxml", inactive=bool(flags & VIR_DOMAIN_XML_INACTIVE))["xml"]

    def create(self):
        return self.createWithFlags(0)

    def createWithFlags(self, flags=0):
        if flags:
            _raise(f"unsupported flags (0x{flags:x}) in function createWithFlags", VIR_ERR_INVALID_ARG, VIR_FROM_NONE)
        self._s = self._call("start")
        return 0

    def shutdown(self):
        return self.shutdownFlags(0)

    def shutdownFlags(self, flags=0):
        self._call("shutdown")
        return 0

    def reboot(self, flags=0):
        self._call("reboot")
        return 0

    def destroy(self):
        return self.destroyFlags(0)

    def destroyFlags(self, flags=0):
        self._call("destroy")
        return 0

    def suspend(self):
        self._call("suspend")
        return 0

    def resume(self):
        self._call("resume")
        return 0

    def undefine(self):
        return self.undefineFlags(0)

    def undefineFlags(self, flags=0):
        self._call("undefine")
        return 0


def open(name=None):
    """A read-write connection: None (or "") is the local vireod; otherwise any URI the CLI takes."""
    return virConnect(name)


def openReadOnly(name=None):
    """A read-only connection (queries only): locally through vireod's read-only socket."""
    return virConnect(name, readonly=True)


def openAuth(uri, auth=None, flags=0):
    return virConnect(uri, readonly=bool(flags & VIR_CONNECT_RO))
