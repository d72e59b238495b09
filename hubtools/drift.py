"""Summarise a `--check --diff` run of the playbook: per host, which managed artifacts drifted.

    drift-report.py LOG                 per host, one line per changed task: the artifact it
                                        touches (file path, loop item) and its count of diff lines
    drift-report.py LOG --expect-all [--drifts FILE]
                                        also check that every drift listed in FILE (default
                                        molecule/shared/drifts.yml, what inject-drift.yml did)
                                        was reported on every host
    drift-report.py --operator-steps [--drifts FILE]
                                        print the playbooks an operator runs with the repair
                                        run (a drift's `operator_step`: what no run repairs by
                                        itself, such as a lost admin password), one per line

LOG is ansible-playbook's output or its ANSIBLE_LOG_PATH file (Molecule's boxed output works too).

Exit status:
  0  no drift (every host changed=0), or with --expect-all: every listed drift was reported
  3  drift: some host would change (without --expect-all)
  1  the run failed (a failed or unreachable host, or no PLAY RECAP: it did not finish), or
     with --expect-all: a listed drift was not reported on some host
  2  usage error (unreadable log or drifts file)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from hubtools.ansible_log import CORE_KEYS, Event, Play, RecapLine, RecapStart, Result, Task, scan

ROOT = Path(__file__).resolve().parent.parent
DRIFTS = ROOT / "molecule" / "shared" / "drifts.yml"

BEFORE_RE = re.compile(r"^--- before(?:: (?P<path>.*))?$")
AFTER_RE = re.compile(r"^\+\+\+ after(?:: (?P<path>.*))?$")
# The path inside a serialised diff of the file module and friends, as JSON ("path": "/etc/x")
# or, with callback_result_format=yaml, as YAML (path: /etc/x).
BODY_PATH_RE = re.compile(
    r'^[ +-]\s*"?(?:path|dest)"?:\s+["\']?(?P<path>/[^"\'\s,]+)'
)
# Headers name the target file, or a controller-side temporary copy of the source: not an artifact.
CONTROLLER_TMP_RE = re.compile(r"/\.ansible/tmp/|/ansible-local-|/ansible-tmp-")
NOISE_RE = re.compile(
    r"^\[(WARNING|DEPRECATION WARNING|ERROR)\]|^\.\.\.ignoring$"
    # profile_tasks' line under each banner: "Thursday 26 November 2026  00:42:03 +0000 (0:00:01.2)"
    r"|^\w+ \d{1,2} \w+ \d{4}\s+\d\d:\d\d:\d\d [+-]\d{4} \("
)


@dataclass
class Chunk:
    """One diff as printed by the callback (a unified diff, or a module's prepared text)."""

    lines: List[str] = field(default_factory=list)
    hint: Optional[str] = None  # the host whose loop items preceded it

    @property
    def paths(self) -> List[str]:
        found: List[str] = []
        for line in self.lines:
            match = BEFORE_RE.match(line) or AFTER_RE.match(line)
            if match and match.group("path"):
                # lineinfile and others add " (content)" or " (file attributes)".
                path = re.sub(r" \([a-z ]+\)$", "", match.group("path").strip())
                if path.startswith("/") and not CONTROLLER_TMP_RE.search(path):
                    found.append(path)
                continue
            body = BODY_PATH_RE.match(line)
            if body:
                found.append(body.group("path"))
        return list(dict.fromkeys(found))

    @property
    def changed_lines(self) -> int:
        return sum(
            1
            for line in self.lines
            if line[:1] in "+-" and not BEFORE_RE.match(line) and not AFTER_RE.match(line)
        )


@dataclass
class Change:
    """What one task did (or would do) on one host."""

    task: str
    handler: bool
    status: str  # changed or failed
    items: List[str] = field(default_factory=list)
    chunks: List[Chunk] = field(default_factory=list)

    @property
    def paths(self) -> List[str]:
        out: List[str] = []
        for chunk in self.chunks:
            out.extend(p for p in chunk.paths if p not in out)
        return out

    @property
    def diff_lines(self) -> int:
        return sum(c.changed_lines for c in self.chunks)

    @property
    def text(self) -> str:
        return "\n".join(line for c in self.chunks for line in c.lines)


@dataclass
class Run:
    recap: Dict[str, Dict[str, int]] = field(default_factory=dict)
    changes: Dict[str, List[Change]] = field(default_factory=dict)


class _Parser:
    def __init__(self) -> None:
        self.run = Run()
        self.task: Optional[str] = None
        self.handler = False
        self.pending: List[Chunk] = []
        self.current: Optional[Chunk] = None
        self.continuation = False
        self.last_item_host: Optional[str] = None
        self.task_changes: Dict[str, Change] = {}

    def change(self, host: str, status: str) -> Change:
        key = host
        entry = self.task_changes.get(key)
        if entry is None:
            entry = Change(self.task or "?", self.handler, status)
            self.task_changes[key] = entry
            self.run.changes.setdefault(host, []).append(entry)
        if status == "failed":
            entry.status = "failed"
        return entry

    def close_task(self) -> None:
        """Give the diffs still pending (loop diffs come after the items) to their host."""
        for chunk in self.pending:
            owners = [chunk.hint] if chunk.hint else list(self.task_changes)
            for host in owners:
                if host in self.task_changes:
                    self.task_changes[host].chunks.append(chunk)
        self.pending = []
        self.current = None
        self.task_changes = {}
        self.last_item_host = None
        self.continuation = False

    def feed(self, event: Event) -> None:
        if isinstance(event, RecapStart):
            self.close_task()
            return
        if isinstance(event, RecapLine):
            self.run.recap[event.recap.host] = event.recap.counts(CORE_KEYS)
            return
        if isinstance(event, (Task, Play)):
            self.close_task()
            self.task = event.name if isinstance(event, Task) else None
            self.handler = isinstance(event, Task) and event.handler
            return
        if self.task is None:
            return
        if isinstance(event, Result):
            self.result(event)
            return
        line = event.line
        if BEFORE_RE.match(line):
            self.current = Chunk([line], hint=self.last_item_host)
            self.pending.append(self.current)
            self.continuation = False
            return
        if not line.strip() or NOISE_RE.match(line):
            self.current = None if not line.strip() else self.current
            return
        if self.continuation:
            return
        if self.current is None:
            # A module's "prepared" diff text (no unified header), before its result line.
            self.current = Chunk([], hint=self.last_item_host)
            self.pending.append(self.current)
        self.current.lines.append(line)

    def result(self, result: Result) -> None:
        # Verbose or failure output follows "=>" on the next lines: not diff text.
        self.continuation = "=>" in result.tail
        self.current = None
        status = "failed" if result.failed else result.status
        if status not in ("changed", "failed"):
            return
        entry = self.change(result.host, status)
        if result.item is not None and result.item not in entry.items:
            entry.items.append(result.item)
        if result.item is not None:
            self.last_item_host = result.host
        # The callback prints a result's diff right before its result line (each loop item's
        # too): the pending diffs are this host's.
        entry.chunks.extend(self.pending)
        self.pending = []


def parse(lines: Iterable[str]) -> Run:
    parser = _Parser()
    for event in scan(lines):
        parser.feed(event)
    parser.close_task()
    return parser.run


def summary_line(change: Change) -> str:
    kind = "handler " if change.handler else ""
    what = ", ".join(change.paths) or ", ".join(f"item={i}" for i in change.items) or "-"
    if change.paths and change.items:
        what += " [" + ", ".join(f"item={i}" for i in change.items) + "]"
    lines = change.diff_lines
    size = f" ({lines} diff line{'s' if lines != 1 else ''})" if lines else ""
    flag = "FAILED " if change.status == "failed" else ""
    return f"  {flag}{kind}{change.task} -> {what}{size}"


def load_drifts(path: Path) -> List[Dict[str, Any]]:
    import yaml  # the controller venv has it; only --expect-all needs it

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    drifts = data.get("drifts") if isinstance(data, dict) else None
    if not isinstance(drifts, list) or not drifts:
        raise ValueError(f"{path}: expected a non-empty 'drifts' list")
    for drift in drifts:
        if not isinstance(drift, dict) or not drift.get("id") or not drift.get("match"):
            raise ValueError(f"{path}: each drift needs an id and a match list: {drift!r}")
        step = drift.get("operator_step")
        if step is not None and (not isinstance(step, str) or not (ROOT / step).is_file()):
            raise ValueError(f"{path}: drift {drift['id']}: operator_step {step!r} is not a playbook here")
        for alt in drift["match"]:
            if not isinstance(alt, dict) or not set(alt) <= {"path", "task", "item", "text"} or not alt:
                raise ValueError(
                    f"{path}: drift {drift['id']}: each match is a mapping of path/task/item/text"
                )
    return drifts


def matches(alt: Dict[str, str], change: Change) -> bool:
    """Every key of one alternative must hold: path (exact), task/item/text (regex search)."""
    if "path" in alt and alt["path"] not in change.paths:
        return False
    if "task" in alt and not re.search(alt["task"], change.task):
        return False
    if "item" in alt and not any(re.search(alt["item"], i) for i in change.items):
        return False
    if "text" in alt and not re.search(alt["text"], change.text, re.MULTILINE):
        return False
    return True


def reported(drift: Dict[str, Any], changes: List[Change]) -> Optional[Change]:
    for change in changes:
        if change.status != "changed":
            continue
        if any(matches(alt, change) for alt in drift["match"]):
            return change
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", nargs="?")
    parser.add_argument("--operator-steps", action="store_true",
                        help="print the operator_step playbooks of --drifts and exit")
    parser.add_argument("--expect-all", action="store_true",
                        help="exit 1 unless every drift in --drifts was reported on every host")
    parser.add_argument("--drifts", default=str(DRIFTS))
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.operator_steps:
        try:
            drifts = load_drifts(Path(args.drifts))
        except (OSError, ValueError) as exc:
            print(f"drift-report: {exc}", file=sys.stderr)
            return 2
        for step in dict.fromkeys(d["operator_step"] for d in drifts if d.get("operator_step")):
            print(step)
        return 0
    if not args.log:
        parser.error("LOG is required")
    try:
        with open(args.log, encoding="utf-8", errors="replace") as handle:
            run = parse(handle.readlines())
        drifts = load_drifts(Path(args.drifts)) if args.expect_all else []
    except (OSError, ValueError) as exc:
        print(f"drift-report: {exc}", file=sys.stderr)
        return 2
    if not run.recap:
        print(f"drift-report: no PLAY RECAP in {args.log}: the run did not finish", file=sys.stderr)
        return 1

    failed = drifted = missing = False
    out: Dict[str, Any] = {}
    for host in sorted(run.recap):
        counts = run.recap[host]
        changes = run.changes.get(host, [])
        failed |= bool(counts["failed"] or counts["unreachable"])
        drifted |= bool(counts["changed"])
        host_out: Dict[str, Any] = {
            "recap": counts,
            "changes": [
                {"task": c.task, "handler": c.handler, "status": c.status, "paths": c.paths,
                 "items": c.items, "diff_lines": c.diff_lines}
                for c in changes
            ],
        }
        if not args.json:
            state = "drift" if counts["changed"] else "no drift"
            if counts["failed"] or counts["unreachable"]:
                state = "FAILED"
            print(
                f"{host}: {state} (changed={counts['changed']} failed={counts['failed']} "
                f"unreachable={counts['unreachable']})"
            )
            for change in changes:
                print(summary_line(change))
        if drifts:
            missing_here = [d["id"] for d in drifts if reported(d, changes) is None]
            host_out["drifts_missing"] = missing_here
            missing |= bool(missing_here)
            if not args.json:
                found = len(drifts) - len(missing_here)
                print(f"  expected drifts reported: {found}/{len(drifts)}"
                      + (f"; NOT reported: {', '.join(missing_here)}" if missing_here else ""))
        out[host] = host_out
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    if failed:
        return 1
    if args.expect_all:
        return 1 if missing else 0
    return 3 if drifted else 0
