#!/usr/bin/env python3
"""Read an ansible-playbook log and summarise what changed, per host.

    recap.py LOG --expect-unchanged   exit 1 unless every host has changed=0 failed=0 unreachable=0
    recap.py LOG --expect-changed     exit 1 unless some task changed on every host (a drift run)

Used after the idempotence run, after the `--check --diff` run and by `make drift`, so that
an operator reads a few lines per host instead of thousands of lines of diff.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from typing import Dict, List, Tuple

TASK_RE = re.compile(r"^TASK \[(?P<name>.*)\] \**")
RESULT_RE = re.compile(r"^(?P<status>changed|failed|fatal): \[(?P<host>[^\]]+)\]")
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# ANSIBLE_LOG_PATH lines start with "2026-01-01 00:00:00,000 p=1 u=root n=ansible INFO| ".
LOG_PREFIX_RE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ p=\d+ u=\S+ n=\S+(?: \w+)?\| ")


def normalise(raw: str) -> str:
    """One line of ansible output, whether from stdout, an ANSIBLE_LOG_PATH file or Molecule."""
    line = ANSI_RE.sub("", raw.rstrip("\n"))
    line = LOG_PREFIX_RE.sub("", line)
    return re.sub(r"^\s*\u2502 ?", "", line)  # Molecule's box-drawing margin


def parse(lines: List[str]) -> Tuple[Dict[str, Dict[str, int]], Dict[str, List[str]]]:
    recap: Dict[str, Dict[str, int]] = {}
    changed_tasks: Dict[str, List[str]] = defaultdict(list)
    task = "?"
    in_recap = False
    for raw in lines:
        line = normalise(raw)
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        match = TASK_RE.match(line)
        if match:
            task = match.group("name")
            in_recap = False
            continue
        match = RESULT_RE.match(line)
        if match and not in_recap:
            entry = f"{match.group('status')}: {task}"
            if entry not in changed_tasks[match.group("host")]:
                changed_tasks[match.group("host")].append(entry)
            continue
        match = RECAP_RE.match(line) if in_recap else None
        if match:
            recap[match.group("host")] = {
                k: int(v) for k, v in match.groupdict().items() if k != "host"
            }
    return recap, changed_tasks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--expect-unchanged", action="store_true")
    mode.add_argument("--expect-changed", action="store_true")
    args = parser.parse_args()
    with open(args.log, encoding="utf-8", errors="replace") as handle:
        recap, changed_tasks = parse(handle.readlines())
    if not recap:
        print(f"recap: no PLAY RECAP in {args.log}: the run did not finish", file=sys.stderr)
        return 1
    ok = True
    for host in sorted(recap):
        counts = recap[host]
        print(
            f"{host}: changed={counts['changed']} failed={counts['failed']} "
            f"unreachable={counts['unreachable']}"
        )
        for entry in changed_tasks.get(host, []):
            print(f"    {entry}")
        if counts["failed"] or counts["unreachable"]:
            ok = False
        if args.expect_unchanged and counts["changed"]:
            ok = False
        if args.expect_changed and not counts["changed"]:
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
