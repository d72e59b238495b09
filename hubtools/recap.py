"""Read an ansible-playbook log and summarise what changed, per host.

    recap.py LOG --expect-unchanged   exit 1 unless every host has changed=0 failed=0 unreachable=0
    recap.py LOG --expect-changed     exit 1 unless some task changed on every host (a drift run)
    recap.py LOG --host HOST [...]    HOST's summary only, the expectation on HOST only; exit 1 if
                                      the recap does not name HOST

Used after the idempotence run, after the `--check --diff` run and by `make drift`, so that
an operator reads a few lines per host instead of thousands of lines of diff; --host by the
throwaway-host tests (scripts/lib/host-test.sh), whose inventory holds their one host.

Exit status: 0 as expected; 1 a failed or unreachable host, not as expected, or no PLAY RECAP
(the run did not finish); 2 usage error (argparse).
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Tuple

from hubtools.ansible_log import PlayLog, parse_file

# The result lines worth a line under their host: what changed, what failed (also when the failure
# was ignored or rescued, which the recap counts apart).
LISTED = ("changed", "failed", "fatal")


def task_lines(log: PlayLog) -> Dict[str, List[str]]:
    """Per host, "changed: TASK" / "failed: TASK" / "fatal: TASK", once each, in run order.

    A delegated result ("changed: [web-1 -> localhost]") is listed under its inventory host.
    """
    out: Dict[str, List[str]] = {}
    for entry in log.results:
        if entry.result.status not in LISTED:
            continue
        lines = out.setdefault(entry.result.host, [])
        line = f"{entry.result.status}: {entry.task}"
        if line not in lines:
            lines.append(line)
    return out


def report(log: PlayLog, expect_unchanged: bool = False, expect_changed: bool = False,
           host: Optional[str] = None) -> Tuple[List[str], bool]:
    """The summary's lines and whether the run is as expected (on HOST alone, when given).

    A HOST the recap does not name is not as expected (a run that never reached it): no lines.
    """
    lines: List[str] = []
    tasks = task_lines(log)
    if host is None:
        hosts = sorted(log.recap)
    elif host in log.recap:
        hosts = [host]
    else:
        return lines, False
    ok = True
    for name in hosts:
        counts = log.recap[name]
        lines.append(f"{name}: changed={counts.changed} failed={counts.failed} unreachable={counts.unreachable}")
        lines.extend(f"    {entry}" for entry in tasks.get(name, []))
        if counts.in_error:
            ok = False
        if expect_unchanged and counts.changed:
            ok = False
        if expect_changed and not counts.changed:
            ok = False
    return lines, ok


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("log")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--expect-unchanged", action="store_true")
    mode.add_argument("--expect-changed", action="store_true")
    parser.add_argument("--host", help="summarise and judge this inventory host only")
    args = parser.parse_args(argv)
    log = parse_file(args.log)
    if not log.finished:
        print(f"recap: no PLAY RECAP in {args.log}: the run did not finish", file=sys.stderr)
        return 1
    if args.host is not None and args.host not in log.recap:
        print(f"recap: {args.host} is not in the PLAY RECAP of {args.log}", file=sys.stderr)
        return 1
    lines, ok = report(log, args.expect_unchanged, args.expect_changed, args.host)
    for line in lines:
        print(line)
    return 0 if ok else 1
