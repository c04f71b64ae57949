"""ACPI end to end through vireo-vmm (docs/acpi.md): the control socket's `shutdown` is a power-button press;
the acpi_poweroff guest answers with S5 and the VMM exits 0; a guest that ignores the button keeps running
until `stop`; the FADT reset register makes the VMM exit 2. Also checks what the guest read from the tables.

Runs every scenario against BUILD_DIR/vireo-vmm (skipped while that binary has no ACPI device: "vireo-vmm has no
ACPI yet"); vireo-vmm wires ACPI in src/vmm/main.cpp (docs/acpi.md). One KVM session (host or kit) for everything; skipped without KVM."""
import json
import shlex
import sys
from pathlib import Path

import pytest

from vireo_testing import BUILD_DIR, require_kvm, run_kvm_script

GUESTS = BUILD_DIR / "tests" / "guests"
DRIVER = Path(__file__).with_name("acpi_driver.py")
VMMS = {"vireo-vmm": BUILD_DIR / "vireo-vmm"}


@pytest.fixture(scope="module")
def transcript(tmp_path_factory):
    require_kvm()
    for g in ("acpi_poweroff.elf", "acpi_poweroff_pvh.elf"):
        if not (GUESTS / g).exists():
            pytest.skip(f"{GUESTS / g} not built")
    vmms = [str(p) for p in VMMS.values() if p.exists()]
    if not vmms:
        pytest.skip("no vireo-vmm built")
    work = tmp_path_factory.mktemp("acpi")
    out = work / "transcript.json"
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    script = " ".join(shlex.quote(str(x)) for x in [py, DRIVER, out, GUESTS, work, *vmms])
    r = run_kvm_script(script + "\n", timeout=420, files=[work])
    assert not r.timed_out and out.exists(), r.text()
    return json.loads(out.read_text())


@pytest.fixture(params=list(VMMS))
def vm(request, transcript):
    name = request.param
    if name not in transcript:
        pytest.skip(f"{VMMS[name]} not built")
    t = transcript[name]
    devs = ((t["poweroff"].get("query-vm") or {}).get("return") or {}).get("devices") or []
    if not any(d.get("type") == "acpi" for d in devs):
        pytest.skip(f"{name} has no ACPI yet (query-vm lists no acpi device; see docs/acpi.md, Wiring)")
    return t


def lines(rec):
    return rec["serial"].splitlines()


def dump(rec):
    return json.dumps({k: v for k, v in rec.items()}, indent=1)


def test_query_vm_lists_acpi(vm):
    devs = vm["poweroff"]["query-vm"]["return"]["devices"]
    acpi = [d for d in devs if d["type"] == "acpi"]
    assert len(acpi) == 1 and acpi[0]["id"] == "acpi0", devs
    assert acpi[0]["details"].startswith("io 0x600-0x60f sci 9"), acpi


@pytest.mark.parametrize("scenario", ["poweroff", "pvh"])
def test_guest_reads_our_tables(vm, scenario):
    rec = vm[scenario]
    out = lines(rec)
    assert "acpi: madt lapics=2 ioapic_id=2 sci_override=9/0xd" in out, dump(rec)
    assert ("acpi: fadt rev=6 pm1a_evt=0x600 pm1a_cnt=0x604 pm_tmr=0x608 sci=9 smi_cmd=0x0 flags=0x525 "
            "reset=0x60c/0x6") in out, dump(rec)
    assert any(l.startswith("acpi: dsdt=0x") and l.endswith(" s5 slp_typ=5") for l in out), dump(rec)
    rsdp = [l for l in out if l.startswith("acpi: rsdp=")]
    assert rsdp and rsdp[0].startswith("acpi: rsdp=0xf8000 rev=2 xsdt=0xf"), dump(rec)


@pytest.mark.parametrize("scenario", ["poweroff", "pvh"])
def test_shutdown_powers_the_guest_off(vm, scenario):
    rec = vm[scenario]
    assert rec["waiting"], dump(rec)
    assert rec["shutdown"] == {"id": 2, "return": {}}, dump(rec)
    out = lines(rec)
    i = out.index("acpi: power button")
    assert out[i + 1] == "acpi: entering S5", dump(rec)
    assert "acpi: still running after S5" not in out, dump(rec)
    assert rec["rc"] == 0, dump(rec)


def test_ignoring_guest_keeps_running_until_stop(vm):
    rec = vm["ignore"]
    assert rec["waiting"] and rec["ignored1"] and rec["ignored2"], dump(rec)
    assert rec["alive"], dump(rec)
    assert rec["status"]["return"]["status"] == "shutting-down", dump(rec)
    assert "acpi: entering S5" not in lines(rec)
    assert rec["stop"]["return"] == {}, dump(rec)
    assert rec["rc"] == 0, dump(rec)


def test_reset_register_exits_2(vm):
    rec = vm["reset"]
    out = lines(rec)
    assert "acpi: resetting via the reset register" in out, dump(rec)
    assert "acpi: still running after reset" not in out, dump(rec)
    assert rec["rc"] == 2, dump(rec)
    assert "vireo-vmm: guest reset (ACPI reset register): exiting with 2" in rec["stderr"], dump(rec)
