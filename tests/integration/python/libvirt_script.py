#!/usr/bin/python3
"""A libvirt-python program: define, start, inspect, pause, resume, destroy and undefine a domain.

Written against libvirt-python only; tests/integration/python/test_binding.py runs it unchanged with
libvirt on `test:///default` and with its import line changed (`import vireo as libvirt`) against vireod,
and compares the outputs.

usage: libvirt_script.py URI|- KERNEL
"""
import sys

import libvirt

XML = """<domain type='kvm'>
  <name>demo</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='MiB'>64</memory>
  <currentMemory unit='MiB'>64</currentMemory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>%s</kernel>
  </os>
  <devices>
    <serial type='pty'/>
  </devices>
</domain>
"""


def state_name(state):
    return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_SHUTOFF: "shut off"}.get(state, "other %d" % state)


def main():
    uri = None if sys.argv[1] == "-" else sys.argv[1]
    conn = libvirt.open(uri)
    dom = conn.defineXML(XML % sys.argv[2])
    print("defined", dom.name(), dom.UUIDString(), "id", dom.ID(), "active", dom.isActive(),
          "persistent", dom.isPersistent())
    state, reason = dom.state()
    print("state", state_name(state), reason == libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN)
    print("inactive list", dom.name() in conn.listDefinedDomains(),
          [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)].count("demo"))

    dom.create()
    state, reason = dom.state()
    print("started", state_name(state), reason == libvirt.VIR_DOMAIN_RUNNING_BOOTED, "id>0", dom.ID() > 0)
    info = dom.info()
    print("info state", state_name(info[0]), "maxMem", info[1], "memory", info[2], "vcpus", info[3],
          "cpuTime>=0", info[4] >= 0)
    xml = dom.XMLDesc(0)
    print("xml", "<name>demo</name>" in xml, "id='%d'" % dom.ID() in xml)
    print("by uuid", conn.lookupByUUIDString(dom.UUIDString()).name(), "by id", conn.lookupByID(dom.ID()).name())
    print("active list", "demo" in [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)],
          dom.ID() in conn.listDomainsID())
    try:
        dom.create()
    except libvirt.libvirtError as e:
        print("second create refused", isinstance(e.get_error_code(), int))

    dom.suspend()
    state, reason = dom.state()
    print("suspended", state_name(state), reason == libvirt.VIR_DOMAIN_PAUSED_USER)
    dom.resume()
    state, reason = dom.state()
    print("resumed", state_name(state), reason == libvirt.VIR_DOMAIN_RUNNING_UNPAUSED)

    dom.setAutostart(1)
    print("autostart", dom.autostart())
    dom.setAutostart(0)
    print("autostart", dom.autostart())

    dom.destroy()
    state, reason = dom.state()
    print("destroyed", state_name(state), reason == libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, "id", dom.ID(),
          "active", dom.isActive())
    dom.undefine()
    try:
        conn.lookupByName("demo")
        print("still there")
    except libvirt.libvirtError as e:
        print("undefined", e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)
    conn.close()


if __name__ == "__main__":
    main()
