"""hubtools.drift (scripts/drift-report.py) on real check-mode logs of a small playbook (data/).

The logs come from `ansible-playbook --check --diff` against two inventory hosts after a
drift: a template edited, a file chmod-ed, a copied file and a loop item deleted, a lineinfile
option flipped, a handler notified. Both ANSIBLE_LOG_PATH files and plain stdout, with the
yaml and the json result formats.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Tuple

import pytest
import yaml

from hubtools import drift as dr

ROOT = dr.ROOT
DATA = Path(__file__).parent / "data"
INJECT = ROOT / "molecule" / "shared" / "inject-drift.yml"
DRIFTS = ROOT / "molecule" / "shared" / "drifts.yml"


def parse(name: str) -> dr.Run:
    return dr.parse((DATA / name).read_text(encoding="utf-8").splitlines(True))


@pytest.mark.parametrize("name", ["check-yaml-2hosts.log", "check-yaml-2hosts.stdout"])
def test_each_host_gets_its_own_changes_and_paths(name: str) -> None:
    run = parse(name)
    assert sorted(run.recap) == ["alpha", "beta"]
    for host in ("alpha", "beta"):
        changes = {c.task: c for c in run.changes[host]}
        assert list(changes) == [
            "PRE-TLS-4 | Site", "Env mode", "Cron", "Loop files", "Line", "Reload"
        ]
        assert changes["PRE-TLS-4 | Site"].paths == [f"/tmp/{host}/site"]
        assert changes["PRE-TLS-4 | Site"].diff_lines == 1
        assert changes["Env mode"].paths == [f"/tmp/{host}/environment"]
        assert changes["Cron"].paths == [f"/tmp/{host}/cron"]
        assert changes["Loop files"].items == ["b"]
        assert changes["Loop files"].paths == [f"/tmp/{host}/loop-b"]
        assert changes["Line"].paths == [f"/tmp/{host}/sshd.conf"]
        assert "+PasswordAuthentication no" in changes["Line"].text
        assert changes["Reload"].handler and changes["Reload"].paths == []


def test_json_result_format_and_a_deleted_template() -> None:
    run = parse("check-json-1host.log")
    changes = {c.task: c for c in run.changes["alpha"]}
    assert changes["Env mode"].paths == ["/tmp/alpha/environment"]
    # A template whose target was deleted names only the controller's temporary source:
    # no artifact path, so such a drift is matched on the task name.
    assert changes["PRE-TLS-4 | Site"].paths == []
    assert changes["PRE-TLS-4 | Site"].diff_lines == 4


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> Tuple[int, str]:
    code = dr.main([str(a) for a in args])
    return code, capsys.readouterr().out


def test_summary_and_exit_3_on_drift(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(capsys, DATA / "check-yaml-2hosts.log")
    assert code == 3
    assert "alpha: drift (changed=6 failed=0 unreachable=0)" in out
    assert "  PRE-TLS-4 | Site -> /tmp/alpha/site (1 diff line)" in out
    assert "  Loop files -> /tmp/beta/loop-b [item=b] (1 diff line)" in out
    assert len(out.splitlines()) == 14, "one line per host and one per changed task"


def test_exit_0_without_drift_and_1_on_failure_or_unfinished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text(textwrap.dedent("""\
        PLAY [x] ****
        TASK [a] ****
        ok: [h1]
        PLAY RECAP ****
        h1                         : ok=1    changed=0    unreachable=0    failed=0    skipped=0
    """))
    assert run_main(capsys, clean)[0] == 0
    failed = tmp_path / "failed.log"
    failed.write_text(textwrap.dedent("""\
        PLAY [x] ****
        TASK [a] ****
        fatal: [h1]: FAILED! => changed=false
          msg: boom
        PLAY RECAP ****
        h1                         : ok=0    changed=0    unreachable=0    failed=1    skipped=0
    """))
    code, out = run_main(capsys, failed)
    assert code == 1 and "h1: FAILED" in out and "FAILED a -> -" in out
    unfinished = tmp_path / "unfinished.log"
    unfinished.write_text("PLAY [x] ****\nTASK [a] ****\n")
    assert run_main(capsys, unfinished)[0] == 1
    assert dr.main([str(tmp_path / "absent.log")]) == 2


def test_expect_all_needs_every_drift_on_every_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drifts = tmp_path / "drifts.yml"
    drifts.write_text(textwrap.dedent("""\
        drifts:
          - id: site
            description: site edited
            match: [{path: /tmp/alpha/site}, {path: /tmp/beta/site}]
          - id: env-mode
            description: environment chmod 0644
            match: [{task: '^Env mode$', text: "mode: '0600'"}]
          - id: loop-b
            description: loop file b deleted
            match: [{task: '^Loop files$', item: '^b$'}]
          - id: sshd
            description: password login on
            match: [{text: '^\\+PasswordAuthentication no$'}]
    """))
    code, out = run_main(capsys, DATA / "check-yaml-2hosts.log", "--expect-all", "--drifts", drifts)
    assert code == 0, out
    assert out.count("expected drifts reported: 4/4") == 2

    drifts.write_text(
        drifts.read_text()
        + "  - id: never\n    description: not injected\n    match: [{path: /etc/never}]\n"
        + "  - id: alpha-only\n    description: alpha's file\n    match: [{path: /tmp/alpha/cron}]\n"
    )
    code, out = run_main(capsys, DATA / "check-yaml-2hosts.log", "--expect-all", "--drifts", drifts)
    assert code == 1
    assert "alpha" in out and "expected drifts reported: 5/6; NOT reported: never" in out
    assert "expected drifts reported: 4/6; NOT reported: never, alpha-only" in out


def test_drifts_file_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "drifts.yml"
    bad.write_text("drifts:\n  - id: x\n    match: [{file: /etc/x}]\n")
    assert dr.main([str(DATA / "check-yaml-2hosts.log"), "--expect-all", "--drifts", str(bad)]) == 2


def test_injected_drifts_and_their_list_agree() -> None:
    """Each drift that inject-drift.yml makes is listed in drifts.yml, and nothing else."""
    listed = dr.load_drifts(DRIFTS)
    ids = [d["id"] for d in listed]
    assert len(ids) == len(set(ids)) >= 8
    plays = yaml.safe_load(INJECT.read_text(encoding="utf-8"))
    names = [t["name"] for play in plays for t in play.get("tasks", [])]
    injected = []
    for name in names:
        match = re.match(r"^Drift ([a-z0-9-]+) \| ", name)
        assert match, f"inject-drift.yml task {name!r} does not start with 'Drift <id> | '"
        injected.append(match.group(1))
    assert sorted(set(injected)) == sorted(ids)
    for drift in listed:
        assert drift.get("description"), f"drift {drift['id']} has no description"


def test_a_real_drift_run_reports_every_injected_drift(capsys: pytest.CaptureFixture[str]) -> None:
    """drift-debian12.log: `make drift` (site.yml --check --diff) on the local Debian 12 target,
    reached over SSH, right after inject-drift.yml made every drift of drifts.yml at once
    (scripts/operator-path.sh): every one is named, and no task failed on the drift it reports."""
    drifts = dr.load_drifts(DRIFTS)
    assert len(drifts) >= 12
    code, out = run_main(capsys, DATA / "drift-debian12.log", "--expect-all", "--drifts", DRIFTS)
    assert code == 0, out
    assert f"expected drifts reported: {len(drifts)}/{len(drifts)}" in out
    assert "FAILED" not in out and "failed=0 unreachable=0" in out
    assert run_main(capsys, DATA / "drift-debian12.log")[0] == 3


def test_operator_steps_are_listed_once_and_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_main(capsys, "--operator-steps")
    assert code == 0 and out.splitlines() == ["playbooks/reset-admin-password.yml"]
    bad = tmp_path / "drifts.yml"
    bad.write_text("drifts:\n  - id: x\n    operator_step: playbooks/nope.yml\n    match: [{path: /etc/x}]\n")
    assert dr.main(["--operator-steps", "--drifts", str(bad)]) == 2
    assert "operator_step 'playbooks/nope.yml' is not a playbook here" in capsys.readouterr().err
