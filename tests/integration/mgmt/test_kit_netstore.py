"""Open vSwitch VLAN isolation, Linux bridge VLAN filtering and an LVM pool on a loop device: the parts this
machine's kernel may lack (openvswitch, bridge VLAN filtering, device mapper), so they run in the KVM kit,
always (a missing kit is a failure, not a skip). The checks themselves are in kit_netstore.py."""
import os
import re

os.environ["VIREO_KVM_ROUTE"] = "kit"  # the kernel features are the point, not /dev/kvm

from conftest import BUILD, SOURCE, HERE  # noqa: E402

import vireo_testing as vt  # noqa: E402

CHECKS = ["ovs_tag_oa", "ovs_tag_ob", "ovs_tag_oc", "ovs_ids_oa", "ovs_oa_to_ob", "ovs_oa_to_oc", "ovs_oc_to_oa",
          "ovs_trunk", "ovs_ports_removed", "lbr_vlan_filtering", "lbr_access_vlan", "lbr_la_to_lb", "lbr_la_to_lc",
          "lbr_lc_to_lb", "lvm_define", "lvm_build", "lvm_start", "lvm_vol_create", "lvm_vol_list", "lvm_dev",
          "lvm_pool_info", "lvm_domain_start", "lvm_domain_disk", "lvm_vol_delete", "lvm_destroy", "lvm_delete"]


def test_ovs_vlans_bridge_vlans_and_lvm_in_the_kit():
    route, why = vt.kvm_route()
    assert route == "kit", f"the KVM kit is needed for these kernel features: {why}"
    r = vt.run_kvm_script(f"/usr/bin/python3 {HERE}/kit_netstore.py", timeout=600)
    out = r.stdout.decode(errors="replace")
    assert r.returncode is not None, r.text()
    results = dict(re.findall(r"^CHECK (\S+) (ok|FAIL.*)$", out, re.M))
    missing = [c for c in CHECKS if c not in results]
    failed = {c: v for c, v in results.items() if v != "ok"}
    assert not missing and not failed, f"missing {missing}, failed {failed}\n{r.text()}"
    assert r.returncode == 0, r.text()
