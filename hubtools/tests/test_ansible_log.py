"""hubtools.ansible_log: the PLAY RECAP and per-task results of real ansible-playbook output.

data/edge-* were recorded here with ansible-core 2.19 and the project's ansible.cfg (default
callback, YAML results, profile_tasks) from data/edge-playbook.txt and data/edge-inventory.txt:
three hosts, "web-1", "::1" (an IPv6 name: colons) and "gone-3.example" (unreachable: ssh to a
closed port); a changed task with a handler, a loop with one changed item, a delegated task, an
ignored failure, a rescued failure on web-1, a failure on ::1. The same run as an
ANSIBLE_LOG_PATH file (.log), as stdout (.stdout), with JSON results and with colours forced.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hubtools import ansible_log as al
from hubtools.recap import report, task_lines

DATA = Path(__file__).parent / "data"
EDGE = ["edge-yaml.log", "edge-yaml.stdout", "edge-json.stdout", "edge-color.stdout"]


def parse(name: str) -> al.PlayLog:
    return al.parse_file(DATA / name)


@pytest.mark.parametrize("name", EDGE)
def test_recap_of_failed_unreachable_rescued_and_ignored_hosts(name: str) -> None:
    log = parse(name)
    assert log.finished
    assert log.recap == {
        "::1": al.HostRecap("::1", ok=5, changed=3, unreachable=0, failed=1, skipped=1, rescued=0, ignored=1),
        "gone-3.example": al.HostRecap("gone-3.example", 0, 0, 1, 0, 0, 0, 0),
        "web-1": al.HostRecap("web-1", ok=8, changed=5, unreachable=0, failed=0, skipped=1, rescued=1, ignored=1),
    }
    assert [h for h, r in sorted(log.recap.items()) if r.in_error] == ["::1", "gone-3.example"]
    assert not log.recap["web-1"].in_error, "a rescued and an ignored failure do not fail the host"


@pytest.mark.parametrize("name", EDGE)
def test_results_per_task_handler_loop_item_and_delegation(name: str) -> None:
    log = parse(name)
    web = [(r.task, r.handler, r.result.status, r.result.item, r.result.delegate) for r in log.results_for("web-1")]
    assert web == [
        ("Ping", False, "ok", None, None),
        ("Changed everywhere", False, "changed", None, None),
        ("Loop items", False, "ok", "a", None),
        ("Loop items", False, "changed", "b", None),
        ("Delegated", False, "changed", None, "localhost"),
        ("Ignored failure", False, "fatal", None, None),
        ("Fails then rescued", False, "fatal", None, None),
        ("Rescue step", False, "ok", None, None),
        ("Fails on the IPv6 host", False, "skipping", None, None),
        ("After", False, "changed", None, None),
        ("Reload", True, "changed", None, None),
    ]
    gone = log.results_for("gone-3.example")
    assert [(r.task, r.result.status, r.result.failed) for r in gone] == [("Ping", "fatal", True)]
    assert task_lines(log)["::1"] == [
        "changed: Changed everywhere", "changed: Loop items", "changed: Delegated",
        "fatal: Ignored failure", "fatal: Fails on the IPv6 host",
    ]


def test_the_four_forms_of_one_run_read_the_same() -> None:
    logs = [parse(name) for name in EDGE]
    assert all(log.recap == logs[0].recap for log in logs)
    # Hosts finish in any order, and the JSON results print on the result line itself.
    key = [
        {host: [(r.task, r.handler, r.result.status, r.result.item, r.result.delegate) for r in log.results_for(host)]
         for host in log.recap}
        for log in logs
    ]
    assert all(k == key[0] for k in key)


def test_no_play_recap_is_a_run_that_did_not_finish(tmp_path: Path) -> None:
    text = (DATA / "edge-yaml.log").read_text()
    cut = tmp_path / "cut.log"
    cut.write_text(text[: text.index("PLAY RECAP")].rsplit("\n", 1)[0])
    log = al.parse_file(cut)
    assert not log.finished and log.recap == {}
    assert log.results, "the results before the stop are still read"
    assert not al.parse([]).finished
    assert al.parse_recap("") == {}


def test_recap_lines_and_their_optional_counts() -> None:
    text = textwrap.dedent("""\
        PLAY RECAP *********************************************************************
        old-ansible                : ok=3    changed=1    unreachable=0    failed=0
        10.0.0.5                   : ok=1    changed=0    unreachable=0    failed=0    skipped=4
        host-with-dashes.example   : ok=2    changed=2    unreachable=0    failed=1    skipped=0    rescued=1    ignored=2

        TASKS RECAP ********************************************************************
        Ping ------------------------------------------------------------------- 0.62s
    """)
    recap = al.parse_recap(text)
    assert recap["old-ansible"] == {"ok": 3, "changed": 1, "unreachable": 0, "failed": 0,
                                    "skipped": 0, "rescued": 0, "ignored": 0}
    assert recap["10.0.0.5"]["skipped"] == 4
    assert recap["host-with-dashes.example"] == {"ok": 2, "changed": 2, "unreachable": 0, "failed": 1,
                                                 "skipped": 0, "rescued": 1, "ignored": 2}
    assert al.parse(text.splitlines()).recap["old-ansible"].counts(al.CORE_KEYS) == {
        "ok": 3, "changed": 1, "unreachable": 0, "failed": 0}


def test_lines_like_a_recap_outside_the_recap_block_are_not_counts() -> None:
    text = textwrap.dedent("""\
        TASK [Show] ****
        ok: [h1] =>
            msg: 'h2 : ok=1 changed=0 unreachable=0 failed=0'
        h3                         : ok=1    changed=0    unreachable=0    failed=0
        PLAY RECAP ****
        h1                         : ok=1    changed=0    unreachable=0    failed=0
        Thursday 26 November 2026  15:31:56 +0000 (0:00:00.417)       0:00:03.943 *****
        h4                         : ok=1    changed=0    unreachable=0    failed=0
    """)
    assert sorted(al.parse_recap(text)) == ["h1"]


def test_several_runs_in_one_log_keep_the_last_counts_per_host() -> None:
    first = "PLAY RECAP ***\nh1 : ok=1 changed=1 unreachable=0 failed=1\nh2 : ok=1 changed=0 unreachable=0 failed=0\n"
    second = "PLAY RECAP ***\nh1 : ok=1 changed=0 unreachable=0 failed=0\n"
    recap = al.parse_recap(first + "PLAY [again] ***\n" + second)
    assert recap["h1"]["failed"] == 0 and recap["h1"]["changed"] == 0
    assert recap["h2"]["ok"] == 1


def test_normalise_log_prefix_colours_and_molecule_margin() -> None:
    assert al.normalise("2026-11-26 00:45:53,466 p=2369 u=root n=ansible INFO| changed: [alpha]\n") == "changed: [alpha]"
    assert al.normalise("\x1b[0;33mchanged: [web-1 -> localhost]\x1b[0m\n") == "changed: [web-1 -> localhost]"
    assert al.normalise("    \u2502 PLAY RECAP ***") == "PLAY RECAP ***"
    assert al.normalise("  indented diff line") == "  indented diff line"


def test_banners_results_and_check_mode_markers() -> None:
    events = list(al.scan([
        "PLAY [hub] ****\n",
        "TASK [hub_ssh : PRE-ACC-2 | Reload [now]] [CHECK MODE] ****\n",
        "changed: [db:2 -> bastion] => (item={'name': 'x'})\n",
        "failed: [db:2] (item=y) => \n",
        "RUNNING HANDLER [Reload] ****\n",
        "--- before: /etc/x\n",
    ]))
    assert events[0] == al.Play("hub")
    assert events[1] == al.Task("hub_ssh : PRE-ACC-2 | Reload [now]", handler=False)
    assert events[2] == al.Result("changed", "db:2", "bastion", "{'name': 'x'}", "")
    assert events[3] == al.Result("failed", "db:2", None, "y", " => ")
    assert events[3].failed and not events[2].failed
    assert events[4] == al.Task("Reload", handler=True)
    assert events[5] == al.Text("--- before: /etc/x")


def test_report_expectations() -> None:
    clean = al.parse(["PLAY RECAP ***\n", "h1 : ok=1 changed=0 unreachable=0 failed=0 rescued=1 ignored=1\n"])
    assert report(clean, expect_unchanged=True) == (["h1: changed=0 failed=0 unreachable=0"], True)
    assert report(clean, expect_changed=True)[1] is False
    drifted = al.parse(["TASK [t] ***\n", "changed: [h1]\n", "PLAY RECAP ***\n", "h1 : ok=1 changed=1 unreachable=0 failed=0\n"])
    assert report(drifted, expect_changed=True) == (["h1: changed=1 failed=0 unreachable=0", "    changed: t"], True)
    assert report(drifted, expect_unchanged=True)[1] is False
    assert report(drifted)[1] is True


@pytest.mark.parametrize("name", EDGE)
def test_report_on_one_host_judges_that_host_alone(name: str) -> None:
    """--host: the recap's first host (::1, failed) does not stand for the others."""
    log = parse(name)
    lines, ok = report(log, expect_changed=True, host="web-1")
    assert ok and lines[0] == "web-1: changed=5 failed=0 unreachable=0"
    assert all(line.startswith("    ") for line in lines[1:]) and "    changed: Loop items" in lines
    assert report(log, host="::1") == (report(log)[0][: len(task_lines(log)["::1"]) + 1], False)
    assert report(log, host="gone-3.example") == (
        ["gone-3.example: changed=0 failed=0 unreachable=1", "    fatal: Ping"], False)
    assert report(log, expect_unchanged=True, host="web-1")[1] is False
    assert report(log, host="web-2") == ([], False), "a host the recap does not name"
