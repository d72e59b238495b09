"""What the docs claim that can be checked mechanically, checked.

The operator's documents (README.md, docs/, bench/README.md, app/README.md, every role's
README.md): every `make` target they name exists in the Makefile, every repository path they name
(a script, a playbook, a file under docs/ or molecule/ ...) exists, every fenced YAML block parses,
every `ansible-playbook` command line names its inventory (`-i`), and every emergency playbook's
command line names its host (`--limit`). Each role's README lists every variable of its
defaults/main.yml, and no other. CHANGELOG.md is history and is not checked.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "app" / "README.md"]
    + list((ROOT / "docs").glob("*.md")) + list((ROOT / "roles").glob("*/README.md")))
# The playbooks' own usage lines (their leading comments) are documentation too.
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
EMERGENCY = ("restore.yml", "incident-response.yml", "reset-admin-password.yml")
# Top-level directories whose paths the docs name. A path that starts with one must exist (glob
# characters and <placeholders> are matched as patterns).
TOP = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
             and p.name not in {"build", "reports"})
PATH = re.compile(r"(?<![\w./~-])((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./*<>{}-]*[\w*>}/])")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def fences(text: str) -> Iterator[tuple[int, str, str]]:
    """(first line number, language, body) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            start, lang, body = i + 1, m.group(2), []
            i += 1
            while i < len(lines) and not FENCE.match(lines[i]):
                body.append(lines[i][len(m.group(1)):] if lines[i].startswith(m.group(1)) else lines[i])
                i += 1
            yield start + 1, lang, "\n".join(body)
        i += 1


def prose(text: str) -> str:
    """The text with its fenced blocks blanked (line numbers kept)."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def code(text: str) -> Iterator[tuple[int, str]]:
    """(line number, code) of every inline code span and every fenced line of a shell-like block
    (continuation lines joined), where commands are shown."""
    for n, line in enumerate(prose(text).splitlines(), 1):
        for m in CODE_SPAN.finditer(line):
            yield n, m.group(1)
    for start, lang, body in fences(text):
        if lang in ("yaml", "yml", "python", "json", "toml", "ini"):
            continue
        joined, first = "", start
        for k, line in enumerate(body.splitlines()):
            if not joined:
                first = start + k
            joined += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
            if not line.rstrip().endswith("\\"):
                yield first, joined
                joined = ""
        if joined:
            yield first, joined


def playbook_usage(path: Path) -> Iterator[tuple[int, str]]:
    """The leading comment lines of a playbook, as code."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("#"):
            if line.strip() != "---":
                break
            continue
        yield n, line.lstrip("#").strip()


def all_code() -> Iterator[tuple[str, int, str]]:
    for doc in DOCS:
        for n, snippet in code(doc.read_text(encoding="utf-8")):
            yield rel(doc), n, snippet
    for pb in PLAYBOOKS:
        for n, line in playbook_usage(pb):
            yield rel(pb), n, line


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))


MAKE = re.compile(r"(?:^|[;&|(]\s*|\s)make\s+((?:[A-Z_]+=\S+\s+)*)([a-z][a-z0-9-]*)")


def test_every_make_target_named_in_the_docs_exists() -> None:
    targets = make_targets()
    missing = sorted({f"{where}:{n}: make {m.group(2)}" for where, n, snippet in all_code()
                      for m in MAKE.finditer(snippet) if m.group(2) not in targets})
    assert missing == [], "\n".join(missing)


def test_the_make_target_check_catches_an_unknown_target() -> None:
    found = [m.group(2) for m in MAKE.finditer("make deploy INVENTORY=x && make VAULT=y verfy")]
    assert found == ["deploy", "verfy"] and "verfy" not in make_targets()


def path_exists(path: str, doc: Path | None = None) -> bool:
    """From the repository's root, from the document's directory (a role README names its own
    meta/main.yml), or in any role (docs that speak of every role's meta/argument_specs.yml)."""
    pattern = re.sub(r"<[^>]*>|\{[^}]*\}", "*", path.rstrip("/"))
    bases = [ROOT] + ([doc.parent] if doc else []) + ([ROOT / "roles" / "*"] if doc else [])
    return any(any(Path("/").glob(str(base / pattern).lstrip("/"))) for base in bases)


def test_every_repository_path_named_in_the_docs_exists() -> None:
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        # A YAML example's comments name the file the reader writes (e.g. the inventory's
        # group_vars/hub/connection.yml), which the repository does not have.
        written = {start + k for start, lang, body in fences(text) if lang in ("yaml", "yml")
                   for k, line in enumerate(body.splitlines()) if line.lstrip().startswith("#")}
        for n, line in enumerate(text.splitlines(), 1):
            if n in written:
                continue
            for m in PATH.finditer(line):
                if not path_exists(m.group(1), doc):
                    missing.append(f"{rel(doc)}:{n}: {m.group(1)}")
    assert missing == [], "\n".join(missing)


def test_the_path_check_sees_scripts_and_patterns() -> None:
    line = "run `scripts/verify.sh` or scripts/nope.sh, read docs/*.md and roles/<role>/README.md"
    found = [m.group(1) for m in PATH.finditer(line)]
    assert found == ["scripts/verify.sh", "scripts/nope.sh", "docs/*.md", "roles/<role>/README.md"]
    assert [path_exists(p) for p in found] == [True, False, True, True]


def test_every_fenced_yaml_block_parses() -> None:
    bad = []
    for doc in DOCS:
        for start, lang, body in fences(doc.read_text(encoding="utf-8")):
            if lang in ("yaml", "yml"):
                try:
                    list(yaml.safe_load_all(body))
                except yaml.YAMLError as exc:
                    bad.append(f"{rel(doc)}:{start}: {str(exc).splitlines()[0]}")
    assert bad == [], "\n".join(bad)


def playbook_commands() -> Iterator[tuple[str, int, list[str]]]:
    """Every ansible-playbook command line in the docs, as words."""
    for where, n, snippet in all_code():
        for part in re.split(r"&&|\|\||;|\|", snippet):
            if "ansible-playbook" not in part:
                continue
            words = part[part.index("ansible-playbook"):].split("#")[0]
            try:
                argv = shlex.split(words)
            except ValueError:
                argv = words.split()
            # "ansible-playbook" named in prose is not a command line: a command names a playbook.
            if any(w.endswith((".yml", ".yaml")) for w in argv):
                yield where, n, argv


def has_option(argv: list[str], short: str, long: str) -> bool:
    return any(w in (short, long) or w.startswith(long + "=") or (w.startswith(short) and not w.startswith("--"))
               for w in argv[1:])


def test_every_playbook_command_in_the_docs_names_its_inventory() -> None:
    missing = [f"{where}:{n}: {' '.join(argv)}" for where, n, argv in playbook_commands()
               if not has_option(argv, "-i", "--inventory")]
    assert missing == [], "\n".join(missing)


def test_every_emergency_playbook_command_in_the_docs_names_its_host() -> None:
    missing = [f"{where}:{n}: {' '.join(argv)}" for where, n, argv in playbook_commands()
               if any(w.endswith(EMERGENCY) for w in argv) and not has_option(argv, "-l", "--limit")]
    assert missing == [], "\n".join(missing)


def test_the_command_checks_see_a_missing_option() -> None:
    doc = "```sh\nansible-playbook playbooks/restore.yml \\\n  -e x=1\nansible-playbook -i inv playbooks/site.yml\n```\n"
    cmds = [argv for _, argv in ((n, shlex.split(c)) for n, c in code(doc)) if "ansible-playbook" in argv]
    assert [has_option(a, "-i", "--inventory") for a in cmds] == [False, True]
    assert [has_option(a, "-l", "--limit") for a in cmds] == [False, False]
    assert has_option(["ansible-playbook", "-lhost"], "-l", "--limit")
    assert has_option(["ansible-playbook", "--limit=h"], "-l", "--limit")


ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/defaults/main.yml"))
ROW = re.compile(r"^\|\s*`[a-z][a-z0-9_]*`")


def readme_variables(text: str, role: str) -> set[str]:
    """The variables a role README's tables list: rows whose first cell is a `role_` name."""
    prefix = role + "_" if role != "hub_common" else "hub_"
    names = set()
    for line in text.splitlines():
        if ROW.match(line):
            first = line.split("|")[1]
            names |= {n for n in re.findall(r"`([a-z][a-z0-9_]*)`", first) if n.startswith(prefix)}
    return names


@pytest.mark.parametrize("role", ROLES)
def test_every_role_readme_lists_exactly_its_defaults(role: str) -> None:
    defaults = set(yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {})
    listed = readme_variables((ROOT / "roles" / role / "README.md").read_text(encoding="utf-8"), role)
    assert (sorted(defaults - listed), sorted(listed - defaults)) == ([], []), \
        f"roles/{role}: (in defaults, not in the README; in the README, not in defaults)"


def test_the_readme_check_reads_table_rows_only() -> None:
    text = "| `hub_x_a` | 1 | a |\n| `hub_x_b` / `hub_x_d` | 2 | `hub_x_e` |\nprose `hub_x_c`\n| `other` | 3 | c |\n"
    assert readme_variables(text, "hub_x") == {"hub_x_a", "hub_x_b", "hub_x_d"}
