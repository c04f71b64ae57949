"""`vireo` with no verb: the interactive shell on a real pty (libedit), and commands from a pipe."""
import os
import pty
import select
import subprocess
import termios
import time

from conftest import BUILD, domain_xml


class Pty:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.out = b""

    def read_until(self, want, timeout=15):
        want = want.encode() if isinstance(want, str) else want
        deadline = time.monotonic() + timeout
        while want not in self.out and time.monotonic() < deadline:
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.out += chunk
        assert want in self.out, f"did not see {want!r} in {self.out!r}"
        i = self.out.index(want) + len(want)
        seen, self.out = self.out[:i], self.out[i:]
        return seen.decode(errors="replace").replace("\r\n", "\n")

    def send(self, text):
        os.write(self.fd, text.encode())

    def send_key(self, key, timeout=5):
        """A control key (^D, ^P) as a user types it: once the line editor has the terminal in raw mode. Typed
        earlier, while the terminal is still cooked between two prompts, the kernel's line discipline takes it
        (^D becomes a NUL byte when the editor switches to raw mode) and the shell never sees it; a user
        waits for the prompt, and so does this."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.fd)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.01)
        self.send(key)

    def wait(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            # Drain without blocking: a shell that never exits must fail here, not hang the suite.
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:
                    pass
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"shell did not exit; it printed {self.out!r}")


def shell_env(daemon, home):
    e = daemon.env()
    e["HOME"] = str(home)
    e["TERM"] = "dumb"
    e.pop("XDG_CACHE_HOME", None)
    return e


def test_interactive_shell(daemon, short_root, guests):
    f = short_root / "web.xml"
    f.write_text(domain_xml("web", guests / "spin.elf"))
    daemon.ok("define", str(f))
    home = short_root / "home"
    home.mkdir()
    sh = Pty([str(BUILD / "vireo")], shell_env(daemon, home))
    banner = sh.read_until("vireo # ")
    assert banner.endswith("Welcome to vireo, the virtualization interactive terminal.\n\n"
                           "Type:  'help' for help with commands\n       'quit' to quit\n\nvireo # ")

    sh.send("list --all\n")
    out = sh.read_until("vireo # ")
    assert " Id   Name   State\n-----------------------\n -    web    shut off\n\nvireo # " in out
    # virsh's quoting and ';' between commands.
    sh.send("echo 'a b' \"c;d\" e\\ f; uri\n")
    out = sh.read_until("vireo # ")
    assert "a b c;d e f\nvireo:///system\n\nvireo # " in out
    sh.send("nosuch\n")
    assert "error: unknown command: 'nosuch'\nvireo # " in sh.read_until("vireo # ")
    sh.send("help dominfo\n")
    assert "  NAME\n    dominfo - domain information\n\n  SYNOPSIS\n    dominfo <domain>\n" in sh.read_until("vireo # ")
    # One connection for the whole session: starting a domain, then asking, goes through it.
    sh.send("start web; domstate web\n")
    out = sh.read_until("vireo # ")
    assert "Domain 'web' started\n\nrunning\n\nvireo # " in out
    # Tab completion: a verb, then a domain name.
    sh.send("vcpui\t")
    sh.read_until("vcpuinfo ")
    sh.send("we\t")
    sh.read_until("web ")
    sh.send("\n")
    assert "VCPU:           0\n" in sh.read_until("vireo # ")
    sh.send("connect unix:///nonexistent/vireod.sock\n")
    out = sh.read_until("vireo # ")
    assert ("error: failed to connect to the hypervisor\n"
            "error: Failed to connect socket to '/nonexistent/vireod.sock': No such file or directory\n") in out
    sh.send(f"connect unix://{daemon.socket}\n")
    sh.read_until("vireo # ")
    sh.send("destroy web\n")
    assert "Domain 'web' destroyed\n" in sh.read_until("vireo # ")
    sh.send("quit\n")
    assert sh.wait() == 0
    hist = (home / ".cache/vireo/history").read_text()  # libedit's format: spaces as \040
    assert "list\\040--all\n" in hist and "start\\040web;\\040domstate\\040web\n" in hist
    # A new session has the history: ^P brings back the last line ("quit") and Enter runs it.
    sh = Pty([str(BUILD / "vireo")], shell_env(daemon, home))
    sh.read_until("vireo # ")
    sh.send_key("\x10")
    sh.read_until("quit")
    sh.send("\n")
    assert sh.wait() == 0


def test_ctrl_d_leaves_and_readonly_prompt(daemon, short_root):
    home = short_root / "home"
    home.mkdir()
    sh = Pty([str(BUILD / "vireo"), "-r"], shell_env(daemon, home))
    sh.read_until("vireo > ")
    sh.send("hostname\n")
    sh.read_until("vireo > ")
    sh.send_key("\x04")
    assert sh.wait() == 0


def test_commands_from_a_pipe(daemon, short_root, guests):
    f = short_root / "db.xml"
    f.write_text(domain_xml("db", guests / "spin.elf"))
    r = subprocess.run([str(BUILD / "vireo")], input=f"define {f}\nlist --all --name; uri\n# a comment\necho done\n",
                       capture_output=True, text=True, env=daemon.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Domain 'db' defined from {f}\n\ndb\n\nvireo:///system\n\ndone\n"
    # -c before no verb: the shell uses that connection.
    r = subprocess.run([str(BUILD / "vireo"), "-c", f"unix://{daemon.socket}"], input="uri\n", capture_output=True,
                       text=True, env=daemon.env(), timeout=60)
    assert r.stdout == f"unix://{daemon.socket}\n\n"
    r = subprocess.run([str(BUILD / "vireo")], input="echo 'unterminated\n", capture_output=True, text=True,
                       env=daemon.env(), timeout=60)
    assert r.returncode == 1 and r.stderr == "error: dangling quote\n"
