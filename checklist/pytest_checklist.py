"""pytest plugin: record the outcome of every checklist-marked test, per host, as JSON.

Load it with ``-p checklist.pytest_checklist`` (scripts/verify.sh) or
``PYTEST_PLUGINS=checklist.pytest_checklist`` (Molecule's verifier env), with the repository
root on ``PYTHONPATH``. It writes ``--checklist-results PATH`` (or ``$HUB_CHECKLIST_RESULTS``)
when the session ends; ``python3 -m checklist.report`` turns that into the compliance report.

Each record: the test's node id, the checklist IDs it verifies, the host (testinfra's host
name), the outcome (passed, failed, error, skipped) and, for anything but a pass, the message:
the assertion message of a failure, the reason of a skip.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

RESULTS_ENV = "HUB_CHECKLIST_RESULTS"
MESSAGE_LIMIT = 2000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--checklist-results",
        default=os.environ.get(RESULTS_ENV),
        help="write each checklist-marked test's outcome per host to this JSON file",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("checklist_results")
    if path:
        config.pluginmanager.register(ChecklistRecorder(Path(path)), "checklist-recorder")


def _host_of(item: pytest.Item) -> Optional[str]:
    callspec = getattr(item, "callspec", None)
    host = callspec.params.get("_testinfra_host") if callspec is not None else None
    if host is None:
        return None
    return str(host.backend.get_hostname())


def _ids_of(item: pytest.Item) -> List[str]:
    ids: List[str] = []
    for mark in item.iter_markers(name="checklist"):
        ids.extend(str(a) for a in mark.args)
    return sorted(set(ids))


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text[len("Skipped: "):] if text.startswith("Skipped: ") else text
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else report.longreprtext
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + " [...]"


class ChecklistRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: Dict[str, Dict[str, Any]] = {}
        self.started = time.time()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        ids = _ids_of(item)
        if not ids:
            return
        record = self.items.setdefault(
            item.nodeid,
            {
                "nodeid": item.nodeid,
                "test": item.originalname if hasattr(item, "originalname") else item.name,
                "ids": ids,
                "host": _host_of(item),
                "outcome": None,
                "message": "",
                "duration": 0.0,
            },
        )
        record["duration"] = round(record["duration"] + report.duration, 3)
        # The worst phase wins: a setup error or a teardown error spoils a passing call.
        if report.failed:
            record["outcome"] = "failed" if report.when == "call" else "error"
            record["message"] = (
                _message(report) if report.when == "call" else f"{report.when}: {_message(report)}"
            )
        elif report.skipped and record["outcome"] not in ("failed", "error"):
            record["outcome"] = "skipped"
            record["message"] = _message(report)
        elif report.when == "call" and report.passed and record["outcome"] is None:
            record["outcome"] = "passed"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "started": self.started,
            "finished": time.time(),
            "exitstatus": int(exitstatus),
            "results": [r for r in self.items.values() if r["outcome"] is not None],
        }
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.path)
