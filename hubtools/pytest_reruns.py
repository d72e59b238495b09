"""pytest plugin: a test that failed and then passed on a retry fails the run.

Retry plugins (pytest-rerunfailures, flaky, pytest-retry, a conftest's own loop) report the
failed attempts as "rerun" or not at all, and the run as passed: a race then lands unseen. With
this plugin every attempt counts. A ``rerun`` outcome, or a test that reports a failure and later
a pass, makes the session fail (exit 1), and the summary names each such test.

Load it with ``-p hubtools.pytest_reruns`` (the Makefile's unit target, scripts/verify.sh) or in
``PYTEST_PLUGINS`` (Molecule's verifier env), with the repository root on ``sys.path``.
"""
from __future__ import annotations

from typing import Dict, List

import pytest


def flaky_tests(attempts: Dict[str, List[str]]) -> List[str]:
    """The tests that passed after a failed or retried ("rerun") attempt. A test that never
    passed is a plain failure, which fails the run by itself."""
    return sorted(
        nodeid
        for nodeid, outcomes in attempts.items()
        if any(outcome in ("failed", "rerun") and "passed" in outcomes[index + 1:] for index, outcome in enumerate(outcomes))
    )


class RetryRecorder:
    """Every attempt's outcome per test id: the call phase, and any phase that did not pass."""

    def __init__(self) -> None:
        self.attempts: Dict[str, List[str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.attempts.setdefault(report.nodeid, []).append(report.outcome)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if flaky_tests(self.attempts) and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        flaky = flaky_tests(self.attempts)
        if flaky:
            terminalreporter.section("failed, then passed on a retry: counted as failures", red=True)
            for nodeid in flaky:
                terminalreporter.line(f"FLAKY {nodeid}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RetryRecorder(), "hub-retry-recorder")
