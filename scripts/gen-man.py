#!/usr/bin/python3
"""Man pages generated from the programs' own help texts (the one source; nothing is written twice).

  gen-man.py PROGRAM BINARY SECTION OUTPUT

vireo: the global options from `vireo --help`, then every verb, grouped as `vireo help` groups them, with
`vireo help VERB`'s synopsis, description and options. vireo-vmm, vireod: their CLI11 `--help`. vireo-img:
its qemu-img style `--help` (command syntax lines)."""
import re
import subprocess
import sys

DATE = "2025"
SEE_ALSO = {
    "vireo": "vireod(8), vireo-img(1), vireo-vmm(1)",
    "vireod": "vireo(1), vireo-vmm(1)",
    "vireo-img": "vireo(1), qemu-img(1)",
    "vireo-vmm": "vireod(8), vireo(1)",
}


def run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return r.stdout + (r.stderr if not r.stdout else "")


def esc(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", s, flags=re.M)


def header(prog, section, summary):
    return (f'.TH {prog.upper()} {section} "{DATE}" "Vireo 0.1.0" "Vireo Manual"\n'
            f".SH NAME\n{esc(prog)} \\- {esc(summary)}\n")


def cli11_options(text):
    """(flags, description) pairs from a CLI11 help's Options: section."""
    out = []
    m = re.search(r"^Options:\n(.*?)(?:\n\S|\Z)", text, re.S | re.M)
    if not m:
        return out
    for line in m.group(1).splitlines():
        mm = re.match(r"^  (\S.*?)(?:\s{2,}(\S.*))?$", line)
        if mm:
            out.append((mm.group(1).strip(), (mm.group(2) or "").strip()))
        elif out and line.strip():
            out[-1] = (out[-1][0], (out[-1][1] + " " + line.strip()).strip())
    return out


def cli11_page(prog, binary, section):
    text = run(binary, "--help")
    first = text.splitlines()[0]
    summary = first.split(":", 1)[1].strip() if ":" in first else first
    usage = re.search(r"^Usage: (.*)$", text, re.M)
    page = header(prog, section, summary)
    page += f".SH SYNOPSIS\n.B {esc(prog)}\n{esc(usage.group(1).split(' ', 1)[1] if usage and ' ' in usage.group(1) else '[OPTIONS]')}\n"
    page += f".SH DESCRIPTION\n{esc(summary)}.\n.SH OPTIONS\n"
    for flags, desc in cli11_options(text):
        page += f".TP\n.B {esc(flags)}\n{esc(desc)}\n"
    return page


def vireo_page(binary):
    text = run(binary, "--help")
    page = header("vireo", 1, "the Vireo management shell: virsh's verbs against vireod, locally or remotely")
    page += (".SH SYNOPSIS\n.B vireo\n[\\fIOPTIONS\\fR] [\\fICOMMAND\\fR [\\fIARGS\\fR]...]\n"
             ".SH DESCRIPTION\nWithout a command, \\fBvireo\\fR is an interactive shell (history, line editing and "
             "tab completion; commands are separated by \\fB;\\fR and may be quoted as in a shell). With a command "
             "it runs that one command and exits with status 0, or 1 after printing \\fBerror:\\fR lines.\n"
             ".SH OPTIONS\n")
    for flags, desc in cli11_options(text):
        if flags.startswith("-h,"):
            continue
        page += f".TP\n.B {esc(flags)}\n{esc(desc)}\n"
    listing = run(binary, "help")
    for block in re.split(r"\n\n", listing):
        m = re.match(r"^ (.+) \(help keyword '(\w+)'\):\n(.*)$", block.strip("\n") and block.lstrip("\n"), re.S)
        if not m:
            continue
        page += f".SH {esc(m.group(1).upper())} COMMANDS\n"
        for line in m.group(3).splitlines():
            verb = line.split()[0]
            help_text = run(binary, "help", verb)
            secs = {}
            cur = None
            for l in help_text.splitlines():
                h = re.match(r"^  ([A-Z]+)$", l)
                if h:
                    cur = h.group(1)
                    secs[cur] = []
                elif cur and l.strip():
                    secs[cur].append(l.strip())
            page += f".SS {esc(verb)}\n"
            page += f".B {esc(' '.join(secs.get('SYNOPSIS', [verb])))}\n.PP\n"
            name_line = " ".join(secs.get("NAME", []))
            page += esc(name_line.split(" - ", 1)[1] if " - " in name_line else name_line) + ".\n"
            if secs.get("DESCRIPTION"):
                page += ".PP\n" + esc(" ".join(secs["DESCRIPTION"])) + "\n"
            for opt in secs.get("OPTIONS", []):
                mm = re.match(r"^(\S.*?)\s{2,}(.*)$", opt)
                if mm:
                    page += f".TP\n.B {esc(mm.group(1))}\n{esc(mm.group(2))}\n"
    return page


def img_page(binary):
    text = run(binary, "--help")
    lines = text.splitlines()
    page = header("vireo-img", 1, "Vireo disk image utility (qcow2 and raw), command-line compatible with qemu-img")
    usage = next((l for l in lines if l.startswith("usage:")), "usage: vireo-img command [command options]")
    page += f".SH SYNOPSIS\n.B vireo-img\n{esc(usage.split(' ', 2)[2] if usage.count(' ') >= 2 else '')}\n"
    page += ".SH DESCRIPTION\n" + esc(lines[2] if len(lines) > 2 else "") + "\n.SH COMMANDS\n"
    in_cmds = False
    for l in lines:
        if l.startswith("Command syntax:"):
            in_cmds = True
            continue
        if in_cmds:
            if not l.strip():
                break
            cmd = l.strip()
            page += f".TP\n.B {esc(cmd.split()[0])}\n{esc(cmd)}\n"
    rest = text.split("Command syntax:", 1)[1].split("\n\n", 1)[1] if "Command syntax:" in text else ""
    if rest.strip():
        page += ".SH NOTES\n.nf\n" + esc(rest.strip()) + "\n.fi\n"
    return page


def main():
    prog, binary, section, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    if prog == "vireo":
        page = vireo_page(binary)
    elif prog == "vireo-img":
        page = img_page(binary)
    else:
        page = cli11_page(prog, binary, section)
    page += f".SH SEE ALSO\n{esc(SEE_ALSO.get(prog, ''))}\n"
    with open(out, "w") as f:
        f.write(page)


if __name__ == "__main__":
    main()
