"""checklist.scap: the content (checked package, platform datastream) and the scan report."""
from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any, Dict, List

import pytest

from checklist import scap

XCCDF = "http://checklists.nist.gov/xccdf/1.2"


def results_xml(profile: str, rules: Dict[str, str]) -> bytes:
    body = "".join(
        f'<rule-result idref="{scap.RULE_PREFIX}{r}"><result>{v}</result></rule-result>' for r, v in rules.items()
    )
    return (f'<Benchmark xmlns="{XCCDF}"><TestResult id="t"><profile idref="{scap.PROFILE_PREFIX}{profile}"/>'
            f"{body}</TestResult></Benchmark>").encode()


def deb(files: Dict[str, bytes]) -> bytes:
    """A minimal .deb: ar archive with debian-binary and data.tar.xz."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = b"!<arch>\n"
    for name, data in (("debian-binary", b"2.0\n"), ("data.tar.xz", tar_bytes.getvalue())):
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    return out


def content_for(pkg: bytes, platforms: Dict[str, Any]) -> Dict[str, Any]:
    return {"archive": "http://archive.invalid/debian",
            "packages": {"ssg-x": {"path": "pool/ssg-x_1_all.deb", "sha256": hashlib.sha256(pkg).hexdigest()}},
            "platforms": platforms}


def test_datastream_from_checked_package_with_widened_platform(tmp_path: Path) -> None:
    xml = b"<ds><pattern>^12.[0-9]+$</pattern></ds>"
    pkg = deb({"./usr/share/xml/scap/ssg/content/ssg-x12-ds.xml": xml, "./usr/share/doc/x": b"odd"})
    (tmp_path / "ssg-x_1_all.deb").write_bytes(pkg)
    content = content_for(pkg, {
        "Debian-12": {"package": "ssg-x", "datastream": "ssg-x12-ds.xml"},
        "Debian-13": {"package": "ssg-x", "datastream": "ssg-x12-ds.xml",
                      "platform_from": {"pattern": "^12.[0-9]+$", "replace": "^1[23].[0-9]+$"}}})
    assert scap.datastream("Debian-12", content, tmp_path).read_bytes() == xml
    assert scap.datastream("Debian-13", content, tmp_path).read_bytes() == xml.replace(b"^12.", b"^1[23].")
    with pytest.raises(scap.InputError, match="no SCAP content for Fedora-40"):
        scap.datastream("Fedora-40", content, tmp_path)


def test_a_package_with_another_checksum_is_refused_and_dropped(tmp_path: Path) -> None:
    pkg = deb({"./ds.xml": b"<ds/>"})
    content = content_for(pkg, {"Debian-12": {"package": "ssg-x", "datastream": "ds.xml"}})
    tampered = bytearray(pkg)
    tampered[-1] ^= 1
    cached = tmp_path / "ssg-x_1_all.deb"
    cached.write_bytes(bytes(tampered))
    with pytest.raises(scap.InputError, match="SHA-256"):
        scap.datastream("Debian-12", content, tmp_path)
    assert not cached.exists()
    assert not list(tmp_path.glob("Debian-12-*"))


def test_platform_check_must_be_found_once(tmp_path: Path) -> None:
    pkg = deb({"./ds.xml": b"<ds>no platform pattern</ds>"})
    (tmp_path / "ssg-x_1_all.deb").write_bytes(pkg)
    content = content_for(pkg, {"Debian-13": {"package": "ssg-x", "datastream": "ds.xml",
                                              "platform_from": {"pattern": "^12.", "replace": "^13."}}})
    with pytest.raises(scap.InputError, match="exactly once"):
        scap.datastream("Debian-13", content, tmp_path)


def run_report(tmp_path: Path, hosts: Dict[str, Dict[str, Dict[str, str]]], deviations: Dict[str, Any],
               gating: Dict[str, List[str]]) -> int:
    res = tmp_path / "res"
    for host, profiles in hosts.items():
        (res / host).mkdir(parents=True)
        for profile, rules in profiles.items():
            (res / host / f"{profile}.xml").write_bytes(results_xml(profile, rules))
        (res / host / "gating.json").write_text(json.dumps(gating.get(host, [])))
    dev_file = tmp_path / "dev.yml"
    dev_file.write_text(json.dumps(deviations))
    return scap.main(["report", "--results", str(res), "--out", str(tmp_path / "out"),
                      "--deviations", str(dev_file)])


@pytest.mark.parametrize("seed", range(5))
def test_report_fails_exactly_on_unlisted_failures_of_gating_profiles(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    rules = {f"rule_{i}": rnd.choice(["pass", "fail", "notapplicable", "notchecked"]) for i in range(40)}
    failed = [r for r, v in rules.items() if v == "fail"]
    listed = rnd.sample(failed, k=rnd.randint(0, len(failed)))
    deviations = {"checklist": {"rule_1": "PRE-HARD-12"},
                  "deviations": {r: {"profiles": ["gate_p"], "reason": f"why {r}", "switch": "hub_os_x"}
                                 for r in listed}}
    rc = run_report(tmp_path, {"h1": {"gate_p": rules, "measured_p": rules}}, deviations, {"h1": ["gate_p"]})
    report = json.loads((tmp_path / "out.json").read_text())
    assert rc == (1 if set(failed) - set(listed) else 0)
    assert report["failed"] == len(set(failed) - set(listed))
    gate = next(h for h in report["hosts"] if h["profile"] == "gate_p")
    measured = next(h for h in report["hosts"] if h["profile"] == "measured_p")
    assert {f["rule"] for f in gate["findings"] if f["status"] == "deviation"} == set(listed)
    # A deviation is listed per profile: the measured profile shows every failure, none gating.
    assert {f["rule"] for f in measured["findings"]} == set(failed)
    assert not any(f["gating"] for f in measured["findings"])
    junit = (tmp_path / "out.xml").read_text()
    assert junit.count("<failure ") == len(set(failed) - set(listed))
    md = (tmp_path / "out.md").read_text()
    for rule in listed:
        assert f"why {rule}" in md


def test_rules_map_to_the_longest_prefix() -> None:
    mapping = {"sudo_": "A", "sudo_add_": "B", "accounts_password_pam_": "C"}
    assert scap.checklist_id("sudo_add_noexec", mapping) == "B"
    assert scap.checklist_id("sudo_dedicated_group", mapping) == "A"
    assert scap.checklist_id("sshd_disable_root_login", mapping) is None


def test_unusable_results_exit_2(tmp_path: Path) -> None:
    (tmp_path / "res" / "h").mkdir(parents=True)
    (tmp_path / "res" / "h" / "p.xml").write_text("<not xml")
    assert scap.main(["report", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "o")]) == 2
    assert scap.main(["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2


def test_the_project_data_files_are_consistent() -> None:
    content = scap.load_yaml(scap.CONTENT)
    deviations = scap.load_yaml(scap.DEVIATIONS)
    for name, spec in content["platforms"].items():
        assert spec["package"] in content["packages"], name
        assert set(spec.get("gate", [])) <= set(spec["profiles"]), name
    for rule, dev in deviations["deviations"].items():
        assert dev["reason"].strip() and dev["switch"].startswith("hub_"), rule
    # Each deviation is explained in docs/deviations.md under its rule's name.
    text = (scap.ROOT / "docs" / "deviations.md").read_text()
    for rule in deviations["deviations"]:
        assert f"`{rule}`" in text, rule
