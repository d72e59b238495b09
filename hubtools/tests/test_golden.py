"""scripts/recap.py and scripts/drift-report.py on every recorded log, against golden outputs.

The golden files (golden/LOG.txt) hold, per log, what each command line prints and its exit
status. They were written by the scripts before hubtools existed (the three parsers of
issue 16), run on these logs, and the hubtools versions print the same, with two corrections
to recap.py's indented per-task lines (the host lines and exit statuses are unchanged):

- a handler's result is listed under the handler's name ("changed: Reload"); it was listed
  under the name of the task before it, or not at all when that task had changed too;
- a delegated result ("changed: [web-1 -> localhost]") is listed under its inventory host
  (web-1); it was filed under "web-1 -> localhost", a host with no recap line, and never shown.

Regenerate after a deliberate change of output: HUBTOOLS_GOLDEN=write pytest hubtools/tests.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from hubtools import drift, recap

HERE = Path(__file__).parent
DATA = HERE / "data"
GOLDEN = HERE / "golden"
ROOT = HERE.parent.parent
LOGS = sorted(p.name for p in DATA.iterdir() if p.suffix in (".log", ".stdout"))


def run(main: Callable[[Optional[List[str]]], int], args: List[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return f"{out.getvalue()}{err.getvalue()}exit {code}\n"


def outputs(log: Path) -> str:
    """Every command line's output on LOG, as one text."""
    sections = []
    for args in ([], ["--expect-unchanged"], ["--expect-changed"]):
        sections.append(f"$ recap.py LOG {' '.join(args)}".rstrip() + "\n" + run(recap.main, [str(log), *args]))
    for args in ([], ["--json"], ["--expect-all"]):
        sections.append(f"$ drift-report.py LOG {' '.join(args)}".rstrip() + "\n" + run(drift.main, [str(log), *args]))
    return "\n".join(sections).replace(str(log), "LOG")


def test_every_log_has_a_golden_output() -> None:
    assert len(LOGS) >= 8
    assert sorted(p.name[: -len(".txt")] for p in GOLDEN.glob("*.txt")) == LOGS


@pytest.mark.parametrize("name", LOGS)
def test_outputs_match_the_golden_ones(name: str) -> None:
    got = outputs(DATA / name)
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("HUBTOOLS_GOLDEN") == "write":
        golden.write_text(got, encoding="utf-8")
    assert got == golden.read_text(encoding="utf-8")


def test_molecule_margins_read_as_plain_output(tmp_path: Path) -> None:
    """Molecule prints each line of ansible's behind a box-drawing margin."""
    plain = DATA / "edge-yaml.stdout"
    boxed = tmp_path / "edge-yaml.stdout"
    boxed.write_text("".join(f"    \u2502 {line}" for line in plain.read_text().splitlines(True)))
    assert outputs(boxed) == outputs(plain)


@pytest.mark.parametrize("cwd", [ROOT, ROOT / "docs", Path("/")])
def test_the_scripts_find_hubtools_from_any_directory(cwd: Path) -> None:
    """As the shell scripts and make recipes call them: by path, not installed, any cwd."""
    log = DATA / "check-yaml-2hosts.log"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "recap.py"), str(log), "--expect-unchanged"],
                         cwd=cwd, capture_output=True, text=True, check=False)
    assert (res.returncode, res.stderr) == (1, "")
    assert res.stdout.splitlines()[0] == "alpha: changed=6 failed=0 unreachable=0"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "drift-report.py"), str(log)],
                         cwd=cwd, capture_output=True, text=True, check=False)
    assert (res.returncode, res.stderr) == (3, "")
    assert "  Loop files -> /tmp/beta/loop-b [item=b] (1 diff line)" in res.stdout


def test_one_host_of_a_two_host_recap(capsys: pytest.CaptureFixture[str]) -> None:
    """--host reads the named host's line, not the recap's first (alpha)."""
    log = str(DATA / "check-yaml-2hosts.log")
    assert recap.main([log, "--host", "beta", "--expect-changed"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "beta: changed=6 failed=0 unreachable=0" and "alpha" not in "".join(out)
    assert recap.main([log, "--host", "beta", "--expect-unchanged"]) == 1
    capsys.readouterr()
    assert recap.main([log, "--host", "gamma"]) == 1
    assert capsys.readouterr() == ("", f"recap: gamma is not in the PLAY RECAP of {log}\n")


def host_test(host: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """SCRIPT run after sourcing scripts/lib/host-test.sh as the throwaway-host tests do (KEEP=1:
    its exit trap removes nothing)."""
    source = f'set -euo pipefail; host={host} work={tmp_path} KEEP=1; . scripts/lib/host-test.sh; {script}'
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", source], cwd=ROOT, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("host", "name", "summary", "unchanged"), [
    ("alpha", "check-json-1host.log", "alpha: changed=6 failed=0 unreachable=0", False),
    ("beta", "check-yaml-2hosts.log", "beta: changed=6 failed=0 unreachable=0", False),
    ("web-1", "edge-yaml.log", "web-1: changed=5 failed=0 unreachable=0", False),
    ("gone-3.example", "edge-yaml.stdout", "gone-3.example: changed=0 failed=0 unreachable=1", False),
    ("alpha", "edge-yaml.stdout", "", False),
])
def test_host_test_recap_and_unchanged(host: str, name: str, summary: str, unchanged: bool, tmp_path: Path) -> None:
    """scripts/lib/host-test.sh's recap (one summary line) and unchanged (the re-run check)."""
    log = DATA / name
    res = host_test(host, f'echo "recap=$(recap {log} 2>/dev/null)"; unchanged {log} && echo unchanged || echo changed', tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == [f"recap={summary}", "unchanged" if unchanged else "changed"]


def test_host_test_unchanged_on_a_clean_run(tmp_path: Path) -> None:
    log = tmp_path / "rerun.log"
    log.write_text("PLAY RECAP ***\nhub-test : ok=90 changed=0 unreachable=0 failed=0 skipped=30 rescued=0 ignored=1\n"
                   "other : ok=1 changed=1 unreachable=0 failed=0\n")
    res = host_test("hub-test", f"unchanged {log} && recap {log}", tmp_path)
    assert (res.returncode, res.stdout.splitlines()[0]) == (0, "hub-test: changed=0 failed=0 unreachable=0")
    assert host_test("hub-test", f"unchanged {tmp_path / 'none.log'}", tmp_path).returncode != 0
