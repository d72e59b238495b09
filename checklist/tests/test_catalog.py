"""The catalog against the guide, the verification suite's markers and the roles' task names."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from checklist import catalog as cat

GUIDE_CANDIDATES = [
    Path(os.environ["HUB_GUIDE"]) if os.environ.get("HUB_GUIDE") else None,
    cat.ROOT.parent / "shared" / "deployment-guide.md",
]
# In Post-Deployment Validation the items are the comments of the guide's command blocks.
POST_ITEM_RE = re.compile(r"^# ((?:Test|Check|Verify|Monitor) .+)$")


@pytest.fixture(scope="module")
def items() -> List[Dict[str, Any]]:
    return cat.load_catalog()


@pytest.fixture(scope="module")
def scan() -> cat.MarkerScan:
    return cat.scan_markers()


def guide_items(text: str) -> List[Tuple[str, str]]:
    """(section path, wording) of every checklist item of the guide, in order."""
    found: List[Tuple[str, str]] = []
    heads = {2: "", 3: "", 4: ""}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            match = re.match(r"^(#{2,4}) (?:\[ \] )?(.+?)\s*$", line)
            if match:
                level = len(match.group(1))
                heads[level] = match.group(2)
                for deeper in range(level + 1, 5):
                    heads[deeper] = ""
                continue
        top = heads[2]
        section = " / ".join(h for h in (heads[2], heads[3], heads[4]) if h)
        if top in ("Pre-Deployment Checklist", "Ongoing Maintenance") and not in_code:
            match = re.match(r"^- \[ \] (.+?)\s*$", line)
            if match:
                found.append((section, match.group(1)))
        elif top == "Post-Deployment Validation" and in_code:
            match = POST_ITEM_RE.match(line.strip())
            if match:
                found.append((section, match.group(1)))
    return found


def test_catalog_is_well_formed(items: List[Dict[str, Any]]) -> None:
    assert cat.catalog_problems(items) == []


def test_catalog_has_every_guide_item_with_its_wording() -> None:
    guide = next((p for p in GUIDE_CANDIDATES if p is not None and p.is_file()), None)
    if guide is None:
        pytest.skip("the deployment guide is not beside the repository (../shared/)")
    expected = guide_items(guide.read_text(encoding="utf-8"))
    assert len(expected) == 80, f"the guide parser found {len(expected)} items, the guide has 80"
    listed = [(i["section"], i["item"]) for i in cat.guide_items(cat.load_catalog())]
    missing = [e for e in expected if e not in listed]
    extra = [e for e in listed if e not in expected]
    assert not missing, f"guide items missing from the catalog: {missing}"
    assert not extra, f"catalog items whose section/wording is not in the guide: {extra}"
    assert listed == expected, "catalog order differs from the guide's"


def test_items_beyond_the_guide_are_marked_and_referenced(items: List[Dict[str, Any]]) -> None:
    beyond = [i for i in items if i.get("beyond_guide")]
    assert beyond, "the catalog lists no item beyond the guide"
    for item in beyond:
        assert item["section"].startswith("Beyond the guide /"), item["id"]
        assert any(c.startswith(("CIS-", "NIST-")) for c in item["controls"]), item["id"]
    assert len(cat.guide_items(items)) == len(items) - len(beyond)


def test_catalog_problems_checks_beyond_guide_items() -> None:
    base = {"id": "PRE-HARD-1", "section": "Beyond the guide / x", "item": "y"}
    assert cat.catalog_problems([dict(base, beyond_guide=True, controls=["NIST-800-53:SC-8"])]) == []
    assert cat.catalog_problems([dict(base, beyond_guide=True, controls=["ISO27001:A.8.9"])]) == [
        "PRE-HARD-1: an item beyond the guide needs a CIS or NIST reference in 'controls'"
    ]
    assert cat.catalog_problems([dict(base, beyond_guide="yes")]) == [
        "PRE-HARD-1: 'beyond_guide' must be true or false"
    ]


def test_marker_arguments_are_literal_ids(scan: cat.MarkerScan) -> None:
    assert scan.errors == []


def test_every_marker_names_a_catalog_item(items: List[Dict[str, Any]], scan: cat.MarkerScan) -> None:
    _, unknown = cat.coverage_problems(items, scan)
    assert unknown == []


def test_every_automated_item_has_a_test(items: List[Dict[str, Any]], scan: cat.MarkerScan) -> None:
    untested, _ = cat.coverage_problems(items, scan)
    assert untested == [], (
        f"{len(untested)} automated item(s) without a test marked @pytest.mark.checklist(ID) "
        f"in molecule/shared/tests: {', '.join(untested)}"
    )


def test_manual_items_are_not_claimed_by_tests(items: List[Dict[str, Any]], scan: cat.MarkerScan) -> None:
    assert cat.manual_on_tested(items, scan) == []


def test_every_manual_item_says_what_evidence_is_attested(items: List[Dict[str, Any]]) -> None:
    manual = [i for i in items if i.get("manual")]
    assert manual, "the guide has process items (DPIA, risk assessment): some must be manual"
    assert all(str(i.get("evidence", "")).strip() for i in manual)


def test_role_tasks_name_catalog_ids_and_carry_their_tag(items: List[Dict[str, Any]]) -> None:
    refs = cat.scan_role_tasks()
    assert cat.task_problems(refs, [i["id"] for i in items]) == []


# The checks above rely on these helpers; each is shown to catch what it is for.


def test_catalog_problems_catches_bad_items() -> None:
    bad: List[Dict[str, Any]] = [
        {"id": "PRE-NET-1", "section": "s", "item": "i", "controls": []},
        {"id": "PRE-NET-1", "section": "s", "item": "i", "controls": []},
        {"id": "pre-net-2", "section": "s", "item": "i"},
        {"id": "PRE-NET-3", "section": "s", "item": "i", "manual": True},
        {"id": "PRE-NET-4", "section": "", "item": "i", "evidence": "x"},
    ]
    problems = "\n".join(cat.catalog_problems(bad))
    assert "PRE-NET-1: duplicate ID" in problems
    assert "pre-net-2: malformed ID" in problems
    assert "PRE-NET-3: manual item without an 'evidence'" in problems
    assert "PRE-NET-4: missing 'section'" in problems
    assert "PRE-NET-4: 'evidence' on an automated item" in problems


def test_marker_scan_reads_functions_classes_and_pytestmark(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(textwrap.dedent('''
        import pytest
        from pytest import mark

        pytestmark = [pytest.mark.slow, pytest.mark.checklist("PRE-SRV-4")]

        @pytest.mark.checklist("PRE-NET-1", "PRE-NET-4")
        def test_one(host):
            pass

        @mark.checklist("PRE-ACC-2")
        class TestSsh:
            def test_two(self, host):
                pass

            @pytest.mark.checklist("PRE-ACC-4")
            def test_three(self, host):
                pass

        def helper():
            pass
    '''))
    scan = cat.scan_markers(tmp_path)
    assert scan.errors == []
    got = {m.test: m.ids for m in scan.markers}
    assert got == {
        "test_one": ("PRE-SRV-4", "PRE-NET-1", "PRE-NET-4"),
        "test_two": ("PRE-SRV-4", "PRE-ACC-2"),
        "test_three": ("PRE-SRV-4", "PRE-ACC-2", "PRE-ACC-4"),
    }


def test_marker_scan_rejects_what_it_cannot_check(tmp_path: Path) -> None:
    (tmp_path / "test_b.py").write_text(textwrap.dedent('''
        import pytest
        ID = "PRE-NET-1"

        @pytest.mark.checklist(ID)
        def test_variable():
            pass

        @pytest.mark.checklist
        def test_bare():
            pass

        @pytest.mark.checklist()
        def test_empty():
            pass

        @pytest.mark.checklist("PRE-NET-2")
        def not_a_test():
            pass
    '''))
    errors = "\n".join(cat.scan_markers(tmp_path).errors)
    assert "not a string literal" in errors
    assert errors.count("without an ID") == 2
    assert "not_a_test, which is not a test" in errors


def test_coverage_finds_untested_items_and_unknown_ids(tmp_path: Path) -> None:
    (tmp_path / "test_c.py").write_text(
        'import pytest\n@pytest.mark.checklist("PRE-NET-1", "PRE-NOPE-9")\ndef test_x():\n    pass\n'
    )
    scan = cat.scan_markers(tmp_path)
    items: List[Dict[str, Any]] = [
        {"id": "PRE-NET-1"},
        {"id": "PRE-NET-2"},
        {"id": "PRE-GDPR-1", "manual": True},
    ]
    untested, unknown = cat.coverage_problems(items, scan)
    assert untested == ["PRE-NET-2"]
    assert len(unknown) == 1 and "PRE-NOPE-9" in unknown[0]


def test_task_scan_checks_ids_and_tags(tmp_path: Path) -> None:
    tasks = tmp_path / "hub_x" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(textwrap.dedent('''
        ---
        - name: PRE-NET-1 | Allow ssh first
          ansible.builtin.debug: {msg: x}
          tags: [firewall, pre-net-1]
        - name: PRE-NET-4 | Rate limit
          ansible.builtin.debug: {msg: x}
          tags: firewall
        - name: Block of the DDoS settings
          tags: [pre-net-2]
          block:
            - name: PRE-NET-2 | Segment
              ansible.builtin.debug: {msg: x}
            - name: PRE-BOGUS-1 | Not in the catalog
              ansible.builtin.debug: {msg: x}
              tags: [pre-bogus-1]
        - name: Plain task without an ID
          ansible.builtin.debug: {msg: x}
          vars:
            secret: !vault |
              $ANSIBLE_VAULT;1.1;AES256
              6331
    '''))
    refs = cat.scan_role_tasks(tmp_path)
    assert [r.item_id for r in refs] == ["PRE-NET-1", "PRE-NET-4", "PRE-NET-2", "PRE-BOGUS-1"]
    problems = cat.task_problems(refs, ["PRE-NET-1", "PRE-NET-2", "PRE-NET-4"])
    assert len(problems) == 2
    assert "lacks the tag 'pre-net-4'" in problems[0]
    assert "PRE-BOGUS-1, not in the catalog" in problems[1]


def test_task_scan_follows_imports_not_plain_includes(tmp_path: Path) -> None:
    tasks = tmp_path / "hub_y" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(textwrap.dedent('''
        ---
        - name: SSH | Harden
          ansible.builtin.import_tasks: sshd.yml
          tags: [ssh, pre-acc-2]
        - name: Guard
          ansible.builtin.include_tasks: guard.yml
          tags: [pre-acc-4]
        - name: Guard with apply
          ansible.builtin.include_tasks:
            file: applied.yml
            apply: {tags: [pre-acc-4]}
    '''))
    (tasks / "sshd.yml").write_text("- name: PRE-ACC-2 | Key-only login\n  ansible.builtin.debug: {msg: x}\n")
    (tasks / "guard.yml").write_text("- name: PRE-ACC-4 | Guard\n  ansible.builtin.debug: {msg: x}\n")
    (tasks / "applied.yml").write_text("- name: PRE-ACC-4 | Applied\n  ansible.builtin.debug: {msg: x}\n")
    refs = {r.name: r for r in cat.scan_role_tasks(tmp_path)}
    assert "pre-acc-2" in refs["PRE-ACC-2 | Key-only login"].tags
    assert "pre-acc-4" in refs["PRE-ACC-4 | Applied"].tags
    # Tags on an include_tasks do not reach the included tasks: this one runs untagged.
    problems = cat.task_problems(list(refs.values()), ["PRE-ACC-2", "PRE-ACC-4"])
    assert problems == ["roles/hub_y/tasks/guard.yml: task 'PRE-ACC-4 | Guard' lacks the tag 'pre-acc-4'"
                        .replace("roles/hub_y/tasks", str(tasks))]


def test_every_id_tagged_task_runs_with_its_tag(items: List[Dict[str, Any]]) -> None:
    """`--tags ID` reaches every task tagged ID: each include_tasks on the way names the ID."""
    assert cat.tag_reach_problems([i["id"] for i in items]) == []


def test_roles_share_one_structure() -> None:
    """docs/architecture.md, "Roles": one block per role, boolean + area tag, variables first."""
    assert cat.structure_problems() == []


# Sections every role's README has (besides its variables), as Galaxy's role skeleton names them.
README_SECTIONS = ("## Dependencies", "## Example Playbook")


@pytest.mark.parametrize("role", sorted(p.name for p in cat.ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file()))
def test_every_role_readme_has_its_sections(role: str) -> None:
    readme = cat.ROLES_DIR / role / "README.md"
    assert readme.is_file(), f"{role} has no README.md"
    headings = {line.rstrip() for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith("## ")}
    missing = [section for section in README_SECTIONS if section not in headings]
    assert missing == [], f"{readme.relative_to(cat.ROOT)} lacks {missing}"


def test_tag_reach_catches_an_include_without_the_id(tmp_path: Path) -> None:
    tasks = tmp_path / "hub_z" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(textwrap.dedent('''
        ---
        - name: Z area
          when: hub_z_enabled | bool
          tags: [z]
          block:
            - name: Load the distribution's variables
              ansible.builtin.include_vars: x.yml
              tags: [always]
            - name: Imported (imports hand tags down, no gate)
              ansible.builtin.import_tasks: imported.yml
            - name: Included with the ID
              ansible.builtin.include_tasks: good.yml
              tags: [pre-net-1]
            - name: Included without the ID (broken)
              ansible.builtin.include_tasks: bad.yml
              tags: [pre-net-2]
    '''))
    (tasks / "imported.yml").write_text(textwrap.dedent('''
        - name: PRE-NET-4 | Through an import
          ansible.builtin.debug: {msg: x}
          tags: [pre-net-4]
        - name: Nested include, from an imported file, without its ID (broken)
          ansible.builtin.include_tasks: nested.yml
    '''))
    (tasks / "good.yml").write_text("- name: PRE-NET-1 | ok\n  ansible.builtin.debug: {msg: x}\n  tags: [pre-net-1]\n")
    (tasks / "bad.yml").write_text(textwrap.dedent('''
        - name: PRE-NET-2 | reached
          ansible.builtin.debug: {msg: x}
          tags: [pre-net-2]
        - name: PRE-NET-3 | not reached
          ansible.builtin.debug: {msg: x}
          tags: [pre-net-3]
    '''))
    (tasks / "nested.yml").write_text("- name: PRE-NET-1 | nested\n  ansible.builtin.debug: {msg: x}\n  tags: [pre-net-1]\n")
    problems = cat.tag_reach_problems(["PRE-NET-1", "PRE-NET-2", "PRE-NET-3", "PRE-NET-4"], tmp_path)
    assert len(problems) == 2, problems
    (nested,) = [p for p in problems if "PRE-NET-1 | nested" in p]
    (bad,) = [p for p in problems if "PRE-NET-3" in p]
    assert "task 'PRE-NET-3 | not reached' (pre-net-3) does not run with --tags pre-net-3" in bad
    assert "include 'Included without the ID (broken)'" in bad
    assert "imported.yml: include 'Nested include" in nested
    # The same roles with the IDs on the includes: nothing to report.
    (tasks / "main.yml").write_text((tasks / "main.yml").read_text().replace("tags: [pre-net-2]", "tags: [pre-net-2, pre-net-3]"))
    (tasks / "imported.yml").write_text((tasks / "imported.yml").read_text().replace(
        "ansible.builtin.include_tasks: nested.yml", "ansible.builtin.include_tasks: nested.yml\n  tags: [pre-net-1]"))
    assert cat.tag_reach_problems(["PRE-NET-1", "PRE-NET-2", "PRE-NET-3", "PRE-NET-4"], tmp_path) == []
    assert cat.structure_problems(tmp_path) == []


def test_tag_reach_refuses_apply_on_an_include(tmp_path: Path) -> None:
    """The one way IDs reach included tasks: their own tags, never an include's `apply:`."""
    tasks = tmp_path / "hub_v" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(textwrap.dedent('''
        ---
        - name: V area
          when: hub_v_enabled | bool
          tags: [v]
          block:
            - name: Load the distribution's variables
              ansible.builtin.include_vars: x.yml
              tags: [always]
            - name: Guard
              ansible.builtin.import_tasks: part.yml
    '''))
    (tasks / "part.yml").write_text(textwrap.dedent('''
        - name: PRE-ACC-2 | Guard against locking out the connecting user
          ansible.builtin.include_tasks:
            file: guard.yml
            apply: {tags: [v, pre-acc-2]}
          tags: [pre-acc-2]
    '''))
    (tasks / "guard.yml").write_text("- name: PRE-ACC-2 | Find the user\n  ansible.builtin.debug: {msg: x}\n")
    problems = cat.tag_reach_problems(["PRE-ACC-2"], tmp_path)
    assert problems == [f"{tasks / 'part.yml'}: include 'PRE-ACC-2 | Guard against locking out the connecting user' "
                        'has an apply: the included tasks carry their IDs themselves (docs/architecture.md, "Roles")']
    # The convention: the ID on the include and on each included task.
    (tasks / "part.yml").write_text(textwrap.dedent('''
        - name: PRE-ACC-2 | Guard against locking out the connecting user
          ansible.builtin.include_tasks: guard.yml
          tags: [pre-acc-2]
    '''))
    (tasks / "guard.yml").write_text("- name: PRE-ACC-2 | Find the user\n  ansible.builtin.debug: {msg: x}\n  tags: [pre-acc-2]\n")
    assert cat.tag_reach_problems(["PRE-ACC-2"], tmp_path) == []
    assert cat.task_problems(cat.scan_role_tasks(tmp_path), ["PRE-ACC-2"]) == []
    assert cat.structure_problems(tmp_path) == []


def test_structure_catches_a_role_without_the_block(tmp_path: Path) -> None:
    tasks = tmp_path / "hub_w" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text(textwrap.dedent('''
        ---
        - name: W | Load variables
          ansible.builtin.include_vars: x.yml
          when: hub_w_enabled
          tags: [w]
        - name: W | Part
          ansible.builtin.import_tasks: part.yml
          when: hub_w_enabled
          tags: [w]
    '''))
    assert cat.structure_problems(tmp_path) == [f"{tasks / 'main.yml'}: not one block"]


def test_list_tasks_with_an_id_lists_its_tasks() -> None:
    """Ansible agrees: `--list-tasks --tags ID` lists the ID's tasks of imported files."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(cat.ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    binary = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run(
        [str(binary) if binary.exists() else "ansible-playbook", "-i", str(cat.ROOT / "inventories" / "local"),
         str(cat.ROOT / "playbooks" / "site.yml"), "--list-tasks", "--tags", "pre-acc-1,pre-db-3"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    listed = [line.strip() for line in result.stdout.splitlines() if " : " in line]
    assert any("hub_base : PRE-ACC-1 | Create the service account" in line for line in listed), listed
    assert any("hub_backup : PRE-DB-3 | Schedule the daily backup" in line for line in listed), listed
    # Nothing of another ID, beyond what runs always (the distribution's variables, the layout).
    assert all("always" in line or "pre-acc-1" in line or "pre-db-3" in line for line in listed), listed
