"""Read ansible-playbook's output: the PLAY RECAP counts and what each task did on each host.

What it reads, line by line, is the default callback's output (`stdout_callback =
ansible.builtin.default`, results as YAML or JSON: `callback_result_format`) as the scripts get it:

- ansible-playbook's stdout, with or without colours (ANSI escapes are dropped);
- an ANSIBLE_LOG_PATH file, whose lines start with "2026-01-01 00:00:00,000 p=1 u=root n=ansible
  INFO| " (dropped);
- Molecule's output, each line behind a box-drawing margin "│ " (dropped).

`scan` turns lines into events (a play, a task or handler banner, a result line, the recap
header, a recap line, any other text); `parse` collects them into a `PlayLog`. The recap block is
the lines after "PLAY RECAP" up to the first non-blank line that is not a host's counts; a log
that holds several runs keeps, per host, the counts of the last recap that names it. A log
without a recap is a run that did not finish (`PlayLog.finished`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# ANSIBLE_LOG_PATH lines start with "2026-01-01 00:00:00,000 p=1 u=root n=ansible INFO| ".
LOG_PREFIX_RE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ p=\d+ u=\S+ n=\S+(?: \w+)?\| ")
MOLECULE_MARGIN_RE = re.compile(r"^\s*\u2502 ?")

BANNER_RE = re.compile(r"^(?P<kind>TASK|RUNNING HANDLER) \[(?P<name>.*)\]\s*\**\s*$")
PLAY_RE = re.compile(r"^PLAY \[(?P<name>.*)\]\s*\**\s*$")
# With check_mode_markers the banner reads "TASK [name] [CHECK MODE] ***".
CHECK_MODE_MARKER = "] [CHECK MODE"
RESULT_RE = re.compile(
    r"^(?P<status>changed|ok|failed|fatal|skipping|unreachable): \[(?P<host>[^\]]+)\](?P<rest>.*)$"
)
ITEM_RE = re.compile(r"^(?::? => | )\(item=(?P<item>.*?)\)(?P<tail>(?: => .*)?)$")

# The counts of a recap line, in Ansible's order; the last three came with later versions.
RECAP_KEYS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
# What the gates read (and what scripts/drift-report.py --json prints per host).
CORE_KEYS = ("ok", "changed", "unreachable", "failed")
# The host is padded to a column and followed by " : " (a host name holds no blank, but may hold
# colons: an IPv6 address).
RECAP_RE = re.compile(
    r"^\s*(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
    r"(?:\s+skipped=(?P<skipped>\d+))?(?:\s+rescued=(?P<rescued>\d+))?(?:\s+ignored=(?P<ignored>\d+))?"
)


def normalise(raw: str) -> str:
    """One line of ansible output, whether from stdout, an ANSIBLE_LOG_PATH file or Molecule."""
    line = ANSI_RE.sub("", raw.rstrip("\n"))
    line = LOG_PREFIX_RE.sub("", line)
    return MOLECULE_MARGIN_RE.sub("", line)


@dataclass(frozen=True)
class HostRecap:
    """One host's line of the PLAY RECAP."""

    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def in_error(self) -> bool:
        """A failed or unreachable host: the run failed there (rescued and ignored are not)."""
        return bool(self.failed or self.unreachable)

    def counts(self, keys: Sequence[str] = RECAP_KEYS) -> Dict[str, int]:
        return {key: int(getattr(self, key)) for key in keys}


@dataclass(frozen=True)
class Play:
    name: str


@dataclass(frozen=True)
class Task:
    """A task's banner, or a handler's (RUNNING HANDLER)."""

    name: str
    handler: bool


@dataclass(frozen=True)
class RecapStart:
    """The "PLAY RECAP" header."""


@dataclass(frozen=True)
class RecapLine:
    recap: HostRecap


@dataclass(frozen=True)
class Result:
    """A result line: "changed: [web-1 -> localhost] => (item=b)" and the like."""

    status: str  # as printed: changed, ok, failed, fatal, skipping, unreachable
    host: str  # the inventory host
    delegate: Optional[str]  # the host after " -> " (delegate_to)
    item: Optional[str]  # the loop item, when the line names one
    tail: str  # the rest of the line after the host (and the item): "" or " => ..."

    @property
    def failed(self) -> bool:
        """fatal (also an unreachable host) or failed, whether or not ignored or rescued later."""
        return self.status in ("failed", "fatal", "unreachable")


@dataclass(frozen=True)
class Text:
    """Any other line (normalised): diffs, messages, blank lines."""

    line: str


Event = Union[Play, Task, RecapStart, RecapLine, Result, Text]


def _recap(match: re.Match[str]) -> HostRecap:
    groups = match.groupdict()
    return HostRecap(groups["host"], **{key: int(groups[key] or 0) for key in RECAP_KEYS})


def _result(match: re.Match[str]) -> Result:
    host, _, delegate = match.group("host").partition(" -> ")
    rest = match.group("rest")
    item_match = ITEM_RE.match(rest)
    return Result(
        status=match.group("status"),
        host=host.strip(),
        delegate=delegate.strip() or None,
        item=item_match.group("item") if item_match else None,
        tail=item_match.group("tail") if item_match else rest,
    )


def scan(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a log, one per line."""
    in_recap = False
    for raw in lines:
        line = normalise(raw)
        if line.startswith("PLAY RECAP"):
            in_recap = True
            yield RecapStart()
            continue
        if in_recap:
            match = RECAP_RE.match(line)
            if match:
                yield RecapLine(_recap(match))
                continue
            if line.strip():
                in_recap = False
            else:
                yield Text(line)
                continue
        banner = BANNER_RE.match(line)
        if banner:
            name = banner.group("name")
            if name.endswith(CHECK_MODE_MARKER):
                name = name[: -len(CHECK_MODE_MARKER)]
            yield Task(name, banner.group("kind") == "RUNNING HANDLER")
            continue
        play = PLAY_RE.match(line)
        if play:
            yield Play(play.group("name"))
            continue
        result = RESULT_RE.match(line)
        if result:
            yield _result(result)
            continue
        yield Text(line)


@dataclass(frozen=True)
class TaskResult:
    """A result line and the task (or handler) it belongs to ("?" before any banner)."""

    task: str
    handler: bool
    result: Result


@dataclass
class PlayLog:
    recap: Dict[str, HostRecap] = field(default_factory=dict)
    results: List[TaskResult] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """The run printed its PLAY RECAP (a run that stopped early, or crashed, did not)."""
        return bool(self.recap)

    def results_for(self, host: str) -> List[TaskResult]:
        return [r for r in self.results if r.result.host == host]


def parse(lines: Iterable[str]) -> PlayLog:
    log = PlayLog()
    task: Optional[Task] = None
    for event in scan(lines):
        if isinstance(event, RecapLine):
            log.recap[event.recap.host] = event.recap
        elif isinstance(event, Task):
            task = event
        elif isinstance(event, Play):
            task = None
        elif isinstance(event, Result):
            log.results.append(
                TaskResult(task.name if task else "?", task.handler if task else False, event)
            )
    return log


def parse_file(path: Union[str, Path]) -> PlayLog:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse(handle)


def parse_recap(text: str) -> Dict[str, Dict[str, int]]:
    """Per host, every count of the recap (0 for those the Ansible version does not print)."""
    return {host: recap.counts() for host, recap in parse(text.splitlines()).recap.items()}
