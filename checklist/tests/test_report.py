"""The compliance report, the attestation checks, the inventory summary and the pytest plugin."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from checklist import inventory, report
from checklist.catalog import ROOT

ITEMS: List[Dict[str, Any]] = [
    {"id": "PRE-NET-1", "section": "Pre / Network", "item": "Configure firewall rules",
     "controls": ["ISO27001:A.8.20"]},
    {"id": "PRE-ACC-2", "section": "Pre / Access", "item": "Configure SSH key-based authentication",
     "controls": ["ISO27001:A.8.5"]},
    {"id": "PRE-TLS-2", "section": "Pre / TLS", "item": "Configure certificate auto-renewal",
     "controls": []},
    {"id": "PRE-SRV-4", "section": "Pre / Server", "item": "Logging configured", "controls": []},
    {"id": "PRE-GDPR-1", "section": "Pre / GDPR", "item": "DPIA completed", "controls": ["GDPR:Art.35"],
     "manual": True, "evidence": "who, when, reference"},
    {"id": "PRE-ISO-2", "section": "Pre / ISO", "item": "Risk assessment completed", "controls": [],
     "manual": True, "evidence": "who, when, reference"},
]


def rec(ids: List[str], host: Optional[str], outcome: str, message: str = "", test: str = "test_x") -> Dict[str, Any]:
    return {"nodeid": f"t.py::{test}[{host}]", "test": test, "ids": ids, "host": host,
            "outcome": outcome, "message": message}


RESULTS: Dict[str, Any] = {"results": [
    rec(["PRE-NET-1"], "ct-a", "passed", test="test_ufw"),
    rec(["PRE-NET-1"], "ct-b", "passed", test="test_ufw"),
    rec(["PRE-ACC-2"], "ct-a", "passed", test="test_sshd"),
    rec(["PRE-ACC-2"], "ct-b", "failed",
        "AssertionError: passwordauthentication: expected 'no', found 'yes'", test="test_sshd"),
    rec(["PRE-TLS-2"], "ct-a", "skipped", "self-signed certificate: nothing to renew", test="test_acme"),
    rec(["PRE-TLS-2"], "ct-b", "skipped", "self-signed certificate: nothing to renew", test="test_acme"),
]}
ATTESTED = {"PRE-GDPR-1": {"by": "DPO", "date": "2026-01-15", "reference": "DPIA-7"}}


def build(results: Dict[str, Any] = RESULTS, attestations: Any = ATTESTED) -> Dict[str, Any]:
    return report.build(ITEMS, results, attestations, ["host-a", "host-b"], "prod",
                        {"ct-a": "host-a", "ct-b": "host-b"}, "reports/x.xml")


def test_statuses_per_item_and_host() -> None:
    out = build()
    by_id = {e["id"]: e for e in out["items"]}
    assert by_id["PRE-NET-1"]["status"] == "PASS"
    assert by_id["PRE-ACC-2"]["status"] == "FAIL"
    assert by_id["PRE-ACC-2"]["hosts"]["host-a"]["status"] == "PASS"
    failing = by_id["PRE-ACC-2"]["hosts"]["host-b"]
    assert failing["status"] == "FAIL"
    assert "expected 'no', found 'yes'" in failing["tests"][0]["message"]
    assert by_id["PRE-TLS-2"]["status"] == "SKIP"
    # No test ran for it: not verified is a failure, not a pass.
    assert by_id["PRE-SRV-4"]["status"] == "FAIL"
    assert "no test marked checklist('PRE-SRV-4') ran" in by_id["PRE-SRV-4"]["hosts"]["host-a"]["message"]
    assert by_id["PRE-GDPR-1"]["status"] == "MANUAL" and by_id["PRE-GDPR-1"]["attested"]
    assert by_id["PRE-GDPR-1"]["attestation"] == {"by": "DPO", "date": "2026-01-15", "reference": "DPIA-7"}
    assert by_id["PRE-ISO-2"]["status"] == "MANUAL" and not by_id["PRE-ISO-2"]["attested"]
    assert out["result"] == "FAIL"
    assert out["totals"] == {"PASS": 1, "FAIL": 2, "SKIP": 1, "MANUAL": 2, "attested": 1, "not_attested": 1}


def test_a_controller_side_test_counts_for_every_host() -> None:
    results = {"results": [rec(["PRE-SRV-4"], None, "passed")] + RESULTS["results"]}
    by_id = {e["id"]: e for e in build(results)["items"]}
    assert by_id["PRE-SRV-4"]["status"] == "PASS"


def test_error_in_setup_is_a_failure() -> None:
    results = {"results": [rec(["PRE-NET-1"], "ct-a", "error", "setup: ConnectionError"),
                           rec(["PRE-NET-1"], "ct-b", "passed")]}
    by_id = {e["id"]: e for e in build(results)["items"]}
    assert by_id["PRE-NET-1"]["status"] == "FAIL"


def test_markdown_lists_failures_and_unattested_items_first() -> None:
    md = report.markdown(build())
    assert md.startswith("# Compliance report: prod\n")
    assert "**FAIL: PASS 1, FAIL 2, SKIP 1, MANUAL 2 (attested 1, not attested 1)**" in md
    failures = md.index("## Failures")
    manual = md.index("## Manual items not attested")
    table = md.index("## All items")
    assert failures < manual < table
    assert "- `host-b` `test_sshd` failed: AssertionError: passwordauthentication: expected 'no', found 'yes'" in md
    assert "| PRE-ISO-2 | Risk assessment completed | Pre / ISO | who, when, reference |" in md
    assert "| PRE-GDPR-1 | MANUAL (attested) | DPIA completed | GDPR:Art.35 | attested by DPO on 2026-01-15 (DPIA-7) |" in md


@pytest.mark.parametrize(
    "attestations, message",
    [
        ({"PRE-GDPR-1": {"by": "DPO", "date": "2026-13-01", "reference": "R"}},
         "hub_attestations.PRE-GDPR-1: date '2026-13-01' is not a calendar date YYYY-MM-DD"),
        ({"PRE-GDPR-1": {"by": "DPO", "date": "15/01/2026", "reference": "R"}},
         "hub_attestations.PRE-GDPR-1: date '15/01/2026' is not a calendar date"),
        ({"PRE-GDPR-1": {"by": "DPO", "date": "2026-01-15"}},
         "hub_attestations.PRE-GDPR-1: missing 'reference'"),
        ({"PRE-ISO-2": {"by": " ", "date": "2026-01-15", "reference": "R"}},
         "hub_attestations.PRE-ISO-2: missing 'by'"),
        ({"PRE-ISO-2": {"by": "x", "date": "2099-01-01", "reference": "R"}},
         "hub_attestations.PRE-ISO-2: date 2099-01-01 is in the future"),
        ({"PRE-NET-1": {"by": "x", "date": "2026-01-15", "reference": "R"}},
         "hub_attestations.PRE-NET-1: PRE-NET-1 is verified by tests, it cannot be attested"),
        ({"PRE-XYZ-1": {"by": "x", "date": "2026-01-15", "reference": "R"}},
         "hub_attestations.PRE-XYZ-1: PRE-XYZ-1 is not a checklist ID"),
        ({"PRE-ISO-2": "yes"}, "hub_attestations.PRE-ISO-2: expected a mapping"),
        (["PRE-ISO-2"], "hub_attestations must be a mapping"),
    ],
)
def test_bad_attestations_are_named(attestations: Any, message: str) -> None:
    errors = report.validate_attestations(attestations, ITEMS, today=dt.date(2026, 6, 1))
    assert any(message in e for e in errors), errors


def test_good_attestations_pass() -> None:
    assert report.validate_attestations(ATTESTED, ITEMS, today=dt.date(2026, 6, 1)) == []
    assert report.validate_attestations({}, ITEMS) == []
    # YAML may hand over a date object rather than a string.
    dated = {"PRE-ISO-2": {"by": "x", "date": dt.date(2026, 1, 2), "reference": "R"}}
    assert report.validate_attestations(dated, ITEMS, today=dt.date(2026, 6, 1)) == []


def write_inputs(tmp_path: Path, attestations: Any) -> Tuple[Path, Path, Path]:
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(json.dumps({"items": ITEMS}))  # JSON is YAML
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    summary = tmp_path / "inventory.json"
    summary.write_text(json.dumps({
        "hosts": [{"name": "host-a", "testinfra": "podman://ct-a"},
                  {"name": "host-b", "testinfra": "podman://ct-b"}],
        "attestations": attestations,
    }))
    return catalog, results, summary


def test_cli_writes_markdown_and_json_and_exits_1_on_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, results, summary = write_inputs(tmp_path, ATTESTED)
    out = tmp_path / "reports" / "compliance-prod"
    code = report.main(["--catalog", str(catalog), "--results", str(results), "--inventory",
                        str(summary), "--out", str(out), "--junit", "reports/compliance-prod.xml"])
    printed = capsys.readouterr().out
    assert code == 1
    assert printed.splitlines()[0] == "FAIL: PASS 1, FAIL 2, SKIP 1, MANUAL 2 (attested 1, not attested 1)"
    assert "  FAIL PRE-ACC-2 Configure SSH key-based authentication: host-a: 1 test(s) passed; host-b:" in printed
    assert "MANUAL, not attested (1): PRE-ISO-2" in printed
    assert "  FAIL, no test ran (1): PRE-SRV-4" in printed
    data = json.loads((tmp_path / "reports" / "compliance-prod.json").read_text())
    assert data["hosts"] == ["host-a", "host-b"] and data["result"] == "FAIL"
    assert (tmp_path / "reports" / "compliance-prod.md").read_text().startswith("# Compliance report")


def test_cli_exit_0_when_nothing_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, results, summary = write_inputs(tmp_path, ATTESTED)
    passing = [i for i in ITEMS if i["id"] in ("PRE-NET-1", "PRE-GDPR-1", "PRE-ISO-2")]
    catalog.write_text(json.dumps({"items": passing}))
    code = report.main(["--catalog", str(catalog), "--results", str(results), "--inventory",
                        str(summary), "--out", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr()


def test_cli_exit_2_on_bad_attestation_naming_the_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, results, summary = write_inputs(
        tmp_path, {"PRE-ISO-2": {"by": "x", "date": "2026-1-5", "reference": "R"}})
    code = report.main(["--catalog", str(catalog), "--inventory", str(summary), "--check-attestations"])
    assert code == 2
    assert "hub_attestations.PRE-ISO-2: date '2026-1-5'" in capsys.readouterr().err


def test_cli_exit_2_without_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, results, summary = write_inputs(tmp_path, {})
    results.write_text(json.dumps({"results": []}))
    code = report.main(["--catalog", str(catalog), "--results", str(results),
                        "--inventory", str(summary), "--out", str(tmp_path / "r")])
    assert code == 2 and "the suite did not run" in capsys.readouterr().err


def test_cli_names_unreachable_hosts_and_fails_their_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, results, summary = write_inputs(tmp_path, ATTESTED)
    # host-b unreachable: only host-a's results exist.
    results.write_text(json.dumps({"results": [r for r in RESULTS["results"] if r["host"] == "ct-a"]}))
    out = tmp_path / "r"
    code = report.main(["--catalog", str(catalog), "--results", str(results), "--inventory",
                        str(summary), "--out", str(out),
                        "--unreachable", "host-b=ssh: connect to host 192.0.2.11 port 22: Connection refused"])
    assert code == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["unreachable"] == {"host-b": "ssh: connect to host 192.0.2.11 port 22: Connection refused"}
    net = next(e for e in data["items"] if e["id"] == "PRE-NET-1")
    assert net["status"] == "FAIL" and net["hosts"]["host-a"]["status"] == "PASS"
    assert net["hosts"]["host-b"]["message"].startswith("not verified: host unreachable: ssh: connect")
    assert "## Unreachable hosts (not verified)" in (tmp_path / "r.md").read_text()
    capsys.readouterr()
    # Every host unreachable: no results file at all (the suite never ran), still a report.
    results.unlink()
    code = report.main(["--catalog", str(catalog), "--results", str(results), "--inventory",
                        str(summary), "--out", str(out),
                        "--unreachable", "host-a=timeout", "--unreachable", "host-b=timeout"])
    assert code == 1
    assert "FAIL, not verified (4 items): unreachable: host-a, host-b" in capsys.readouterr().out


def test_inventory_summary_maps_connections_to_testinfra_hosts() -> None:
    listed: Dict[str, Any] = {
        "_meta": {"hostvars": {
            "ct": {"ansible_connection": "containers.podman.podman", "ansible_host": "hub-ct",
                   "hub_attestations": ATTESTED, "secret": "never copied"},
            "vm": {"ansible_host": "192.0.2.10", "hub_attestations": ATTESTED},
            "other": {},
        }},
        "all": {"children": ["ungrouped", "hub", "db"]},
        "hub": {"children": ["hub_eu"], "hosts": ["ct"]},
        "hub_eu": {"hosts": ["vm", "ct"]},
        "db": {"hosts": ["other"]},
    }
    out = inventory.summarise(listed)
    assert [h["testinfra"] for h in out["hosts"]] == ["podman://hub-ct", "safe-ssh://vm"]
    assert out["attestations"] == ATTESTED and out["warnings"] == []
    assert "never copied" not in json.dumps(out)
    listed["_meta"]["hostvars"]["vm"]["hub_attestations"] = {}
    assert "differ" in inventory.summarise(listed)["warnings"][0]


def test_plugin_records_outcomes_per_host(tmp_path: Path) -> None:
    tests = tmp_path / "test_sample.py"
    tests.write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.checklist("PRE-NET-1")
        def test_pass(host):
            assert host.backend.get_hostname() == "local"

        @pytest.mark.checklist("PRE-ACC-2", "PRE-ACC-4")
        def test_fail(host):
            found = "yes"
            assert found == "no", f"PasswordAuthentication: expected no, found {found}"

        @pytest.mark.checklist("PRE-TLS-2")
        def test_skip():
            pytest.skip("self-signed: nothing to renew")

        @pytest.fixture
        def broken():
            raise RuntimeError("cannot reach the host")

        @pytest.mark.checklist("PRE-SRV-4")
        def test_error(broken):
            pass

        def test_unmarked():
            pass
    '''))
    (tmp_path / "conftest.py").write_text(
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'checklist(*ids): checklist items')\n"
    )
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "checklist.pytest_checklist",
         f"--checklist-results={out}", "--hosts=local://", str(tests)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    got = {r["test"]: r for r in data["results"]}
    assert set(got) == {"test_pass", "test_fail", "test_skip", "test_error"}
    assert got["test_pass"]["outcome"] == "passed" and got["test_pass"]["host"] == "local"
    assert got["test_fail"]["outcome"] == "failed"
    assert got["test_fail"]["ids"] == ["PRE-ACC-2", "PRE-ACC-4"]
    assert "PasswordAuthentication: expected no, found yes" in got["test_fail"]["message"]
    assert got["test_skip"]["outcome"] == "skipped"
    assert got["test_skip"]["message"] == "self-signed: nothing to renew"
    assert got["test_skip"]["host"] is None
    assert got["test_error"]["outcome"] == "error"
    assert "setup: RuntimeError: cannot reach the host" in got["test_error"]["message"]


def test_partial_skips_are_named_with_their_reason() -> None:
    """An item that passed on a host where one of its checks could not run names the skip."""
    items = [{"id": "PRE-HARD-5", "section": "Beyond the guide / x", "item": "modules", "controls": []}]
    results = {
        "results": [
            {"ids": ["PRE-HARD-5"], "host": "ct", "test": "test_file", "nodeid": "a", "outcome": "passed", "message": ""},
            {"ids": ["PRE-HARD-5"], "host": "ct", "test": "test_load", "nodeid": "b", "outcome": "skipped",
             "message": "a container shares its host's kernel"},
        ]
    }
    built = report.build(items, results, {}, ["ct"], "x")
    text = report.markdown(built)
    assert "ct: 1 test(s) passed; test_load skipped: a container shares its host's kernel" in text
