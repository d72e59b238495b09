"""hubtools.pytest_reruns: a test that failed and then passed on a retry fails the run."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

from hubtools.pytest_reruns import flaky_tests

REPO = Path(__file__).resolve().parents[2]

# A retry mechanism as the retry plugins have one: each test runs until it passes, at most
# ATTEMPTS times; a failed attempt is reported as "rerun" (pytest-rerunfailures' outcome) or, with
# QUIET_RETRY, not reported at all except for its failure (a conftest's own loop).
RETRYING_CONFTEST = """
import os
from _pytest.runner import runtestprotocol

ATTEMPTS = 3

def pytest_runtest_protocol(item, nextitem):
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(ATTEMPTS):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        failed = any(r.failed for r in reports)
        for report in reports:
            if failed and attempt < ATTEMPTS - 1 and os.environ.get("QUIET_RETRY") is None:
                report.outcome = "rerun"
            if failed and attempt < ATTEMPTS - 1 and os.environ.get("QUIET_RETRY") is not None and report.when != "call":
                continue
            item.ihook.pytest_runtest_logreport(report=report)
        if not failed:
            break
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True

def pytest_report_teststatus(report, config):
    if report.outcome == "rerun":
        return "rerun", "R", "RERUN"
"""


def _run(tmp_path: Path, tests: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "conftest.py").write_text(RETRYING_CONFTEST)
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(tests))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if quiet:
        env["QUIET_RETRY"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hubtools.pytest_reruns", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False,
    )


def _flaky_test(name: str, failures: int) -> str:
    """A test that fails its first `failures` attempts (counted in a file), then passes."""
    return f"""
    from pathlib import Path
    def test_{name}(tmp_path_factory):
        counter = Path(__file__).with_name("{name}.count")
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        assert n >= {failures}, "attempt " + str(n)
    """


def test_a_test_that_passes_on_a_retry_fails_the_run(tmp_path: Path) -> None:
    failures = random.randint(1, 2)
    result = _run(tmp_path, _flaky_test("racy", failures))
    assert result.returncode == 1, result.stdout
    assert "FLAKY test_sample.py::test_racy" in result.stdout, result.stdout


def test_a_quiet_retry_is_caught_too(tmp_path: Path) -> None:
    """A retry loop that reports only the failed call and then the pass."""
    result = _run(tmp_path, _flaky_test("quiet", 1), quiet=True)
    assert result.returncode == 1, result.stdout
    assert "FLAKY test_sample.py::test_quiet" in result.stdout, result.stdout


def test_steady_tests_are_untouched(tmp_path: Path) -> None:
    passing = _run(tmp_path / "steady", "def test_ok():\n    assert True\n")
    assert passing.returncode == 0, passing.stdout
    assert "FLAKY" not in passing.stdout
    failing = _run(tmp_path / "failing", "def test_bad():\n    assert False\n")
    assert failing.returncode == 1, failing.stdout
    assert "FLAKY" not in failing.stdout, "a test that never passed is a plain failure"


def test_flaky_tests_reads_any_mix_of_attempts() -> None:
    rng = random.Random()
    for _ in range(200):
        outcomes: List[str] = [rng.choice(["passed", "failed", "skipped"]) for _ in range(rng.randint(1, 5))]
        expected = any(o == "failed" and "passed" in outcomes[i + 1:] for i, o in enumerate(outcomes))
        assert flaky_tests({"t": outcomes}) == (["t"] if expected else []), outcomes
    assert flaky_tests({"a": ["rerun", "passed"], "b": ["passed"], "c": ["failed"], "d": ["rerun", "failed"]}) == ["a"]
