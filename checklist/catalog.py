"""The checklist catalog and the two things that point at it: test markers and role task names.

The catalog (``checklist/catalog.yml``) is the only list of checklist items. It does not name
the tests that verify an item: those are found here by parsing the verification suite
(``molecule/shared/tests/*.py``) with ``ast`` and reading every ``pytest.mark.checklist(...)``
marker, so a test is the one place that says what it verifies.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple, cast

import yaml

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "checklist" / "catalog.yml"
TESTS_DIR = ROOT / "molecule" / "shared" / "tests"
ROLES_DIR = ROOT / "roles"

# PRE-TLS-1, POST-AUTHZ-2, MNT-SEC-W-1: phase, one or more upper-case parts, a number.
ID_RE = re.compile(r"^(PRE|POST|MNT)(-[A-Z0-9]+)+-[0-9]+$")
# A task implementing an item starts its name with the ID: "PRE-NET-1 | Allow ssh ...".
TASK_ID_RE = re.compile(r"^\s*((?:PRE|POST|MNT)(?:-[A-Z0-9]+)+-[0-9]+)\s*\|")
MANUAL_FIELDS = ("by", "date", "reference")
# An item beyond the guide (``beyond_guide: true``) names the benchmark it comes from.
BEYOND_GUIDE_REFERENCES = ("CIS-", "NIST-")


class CatalogError(ValueError):
    """The catalog file itself is malformed."""


@dataclass(frozen=True)
class Marker:
    """One ``@pytest.mark.checklist(...)`` found in the suite."""

    ids: Tuple[str, ...]
    path: str
    test: str
    line: int


@dataclass
class MarkerScan:
    markers: List[Marker] = field(default_factory=list)
    # Markers whose arguments are not string literals cannot be checked: each is an error.
    errors: List[str] = field(default_factory=list)

    def by_id(self) -> Dict[str, List[Marker]]:
        out: Dict[str, List[Marker]] = {}
        for marker in self.markers:
            for item_id in marker.ids:
                out.setdefault(item_id, []).append(marker)
        return out


def load_catalog(path: Path = CATALOG) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise CatalogError(f"{path}: expected a mapping with an 'items' list")
    for index, item in enumerate(data["items"]):
        if not isinstance(item, dict) or "id" not in item:
            raise CatalogError(f"{path}: item #{index} has no id")
    items: List[Dict[str, Any]] = data["items"]
    return items


def catalog_problems(items: List[Dict[str, Any]]) -> List[str]:
    """Everything wrong with the catalog on its own (not counting tests)."""
    problems: List[str] = []
    seen: Dict[str, int] = {}
    for index, item in enumerate(items):
        item_id = str(item.get("id"))
        if not ID_RE.match(item_id):
            problems.append(f"{item_id}: malformed ID (expected e.g. PRE-NET-1)")
        if item_id in seen:
            problems.append(f"{item_id}: duplicate ID (items #{seen[item_id]} and #{index})")
        seen.setdefault(item_id, index)
        for key in ("section", "item"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                problems.append(f"{item_id}: missing '{key}' (the guide's wording)")
        controls = item.get("controls", [])
        if not isinstance(controls, list) or not all(isinstance(c, str) for c in controls):
            problems.append(f"{item_id}: 'controls' must be a list of strings")
        manual = item.get("manual", False)
        if not isinstance(manual, bool):
            problems.append(f"{item_id}: 'manual' must be true or false")
        if manual and not (isinstance(item.get("evidence"), str) and item["evidence"].strip()):
            problems.append(f"{item_id}: manual item without an 'evidence' description")
        if not manual and "evidence" in item:
            problems.append(f"{item_id}: 'evidence' on an automated item (tests are its evidence)")
        beyond = item.get("beyond_guide", False)
        if not isinstance(beyond, bool):
            problems.append(f"{item_id}: 'beyond_guide' must be true or false")
        elif beyond and not (
            isinstance(controls, list)
            and any(str(c).startswith(BEYOND_GUIDE_REFERENCES) for c in controls)
        ):
            problems.append(
                f"{item_id}: an item beyond the guide needs a CIS or NIST reference in 'controls'"
            )
    return problems


def guide_items(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The items taken from the guide (not those marked ``beyond_guide``)."""
    return [item for item in items if not item.get("beyond_guide", False)]


def _is_checklist_mark(node: ast.AST) -> bool:
    """``pytest.mark.checklist`` or ``mark.checklist`` (``from pytest import mark``)."""
    if not (isinstance(node, ast.Attribute) and node.attr == "checklist"):
        return False
    owner = node.value
    if isinstance(owner, ast.Attribute) and owner.attr == "mark":
        return isinstance(owner.value, ast.Name) and owner.value.id == "pytest"
    return isinstance(owner, ast.Name) and owner.id == "mark"


def _marks_in(node: ast.AST) -> Iterator[ast.Call]:
    """Every ``checklist(...)`` call in an expression (a decorator, a pytestmark list)."""
    nodes = list(ast.walk(node))
    called = {id(sub.func) for sub in nodes if isinstance(sub, ast.Call)}
    for sub in nodes:
        if isinstance(sub, ast.Call) and _is_checklist_mark(sub.func):
            yield sub
        elif isinstance(sub, ast.Attribute) and _is_checklist_mark(sub) and id(sub) not in called:
            # A bare `@pytest.mark.checklist` with no ID: reported as an error by _ids_of.
            yield ast.Call(func=sub, args=[], keywords=[], lineno=getattr(sub, "lineno", 0))


def _ids_of(call: ast.Call, where: str, errors: List[str]) -> Optional[Tuple[str, ...]]:
    ids = []
    for arg in call.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            ids.append(arg.value)
        else:
            errors.append(f"{where}: checklist marker argument is not a string literal")
            return None
    if call.keywords:
        errors.append(f"{where}: checklist marker takes IDs as positional strings only")
        return None
    if not ids:
        errors.append(f"{where}: checklist marker without an ID")
        return None
    return tuple(ids)


def scan_markers(tests_dir: Path = TESTS_DIR) -> MarkerScan:
    """Find every checklist marker in ``tests_dir/*.py`` (functions, classes, ``pytestmark``).

    A module- or class-level marker applies to every test in it, as pytest applies it.
    """
    scan = MarkerScan()
    for path in sorted(Path(tests_dir).glob("*.py")):
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _scan_body(tree.body, rel, scan, inherited=())
    return scan


def _collect(nodes: Iterable[ast.AST], where: str, scan: MarkerScan) -> Tuple[str, ...]:
    ids: List[str] = []
    for node in nodes:
        for call in _marks_in(node):
            found = _ids_of(call, f"{where}:{call.lineno}", scan.errors)
            if found:
                ids.extend(found)
    return tuple(ids)


def _pytestmark(body: List[ast.stmt]) -> List[ast.AST]:
    values: List[ast.AST] = []
    for stmt in body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets
        ):
            values.append(stmt.value)
    return values


def _scan_body(body: List[ast.stmt], rel: str, scan: MarkerScan, inherited: Tuple[str, ...]) -> None:
    inherited = inherited + _collect(_pytestmark(body), rel, scan)
    for node in body:
        if isinstance(node, ast.ClassDef):
            own = _collect(node.decorator_list, rel, scan)
            _scan_body(node.body, rel, scan, inherited + own)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own = _collect(node.decorator_list, rel, scan)
            ids = inherited + own
            if ids and node.name.startswith("test"):
                scan.markers.append(Marker(ids, rel, node.name, node.lineno))
            elif own:
                scan.errors.append(
                    f"{rel}:{node.lineno}: checklist marker on {node.name}, which is not a test"
                )


@dataclass(frozen=True)
class TaskRef:
    """A role task whose name starts with a checklist ID."""

    item_id: str
    name: str
    tags: Tuple[str, ...]
    path: str


class _AnyTagLoader(yaml.SafeLoader):
    """Reads task files that may hold ``!vault`` or other custom tags (their value is kept as text)."""


def _any_tag(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(cast(yaml.MappingNode, node))  # the only other kind of node


_AnyTagLoader.add_multi_constructor("!", _any_tag)


def _as_tags(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list):
        return tuple(str(t) for t in value)
    return (str(value),)


IMPORT_KEYS = ("import_tasks", "ansible.builtin.import_tasks")
INCLUDE_KEYS = ("include_tasks", "ansible.builtin.include_tasks")


def _tasks_file_of(task: Dict[str, Any]) -> Tuple[Optional[str], Tuple[str, ...]]:
    """(file, tags passed on to its tasks) of an import_tasks / include_tasks task.

    An import passes on the task's tags; an include passes on only its ``apply: {tags: ...}``:
    tags on the include itself do not reach the included tasks.
    """
    for keys, imported in ((IMPORT_KEYS, True), (INCLUDE_KEYS, False)):
        for key in keys:
            if key not in task:
                continue
            arg = task[key]
            if isinstance(arg, dict):
                target = arg.get("file")
                apply = arg.get("apply") or {}
            else:
                target, apply = arg, {}
            if not isinstance(target, str) or "{{" in target:
                return None, ()
            tags = _as_tags(task.get("tags")) if imported else ()
            if isinstance(apply, dict):
                tags += _as_tags(apply.get("tags"))
            return target, tags
    return None, ()


def _walk_tasks(
    tasks: Any, path: str, inherited: Tuple[str, ...], imports: List[Tuple[str, Tuple[str, ...]]]
) -> Iterator[TaskRef]:
    if not isinstance(tasks, list):
        return
    for task in tasks:
        if not isinstance(task, dict):
            continue
        tags = inherited + _as_tags(task.get("tags"))
        name = task.get("name")
        if isinstance(name, str):
            match = TASK_ID_RE.match(name)
            if match:
                yield TaskRef(match.group(1), name, tags, path)
        target, passed = _tasks_file_of(task)
        if target is not None:
            imports.append((target, inherited + passed))
        for key in ("block", "rescue", "always"):
            yield from _walk_tasks(task.get(key), path, tags, imports)


def scan_role_tasks(roles_dir: Path = ROLES_DIR) -> List[TaskRef]:
    """Every ``ID | ...`` task of every role, with the tags it really runs with: its own, its
    blocks', and those an import_tasks (or an include_tasks' ``apply``) hands down to its file."""
    refs: List[TaskRef] = []
    for tasks_dir in sorted(p for p in Path(roles_dir).glob("*/tasks") if p.is_dir()):
        files: Dict[str, Any] = {}
        for path in sorted(tasks_dir.glob("*.yml")):
            with open(path, encoding="utf-8") as handle:
                files[path.name] = yaml.load(handle, Loader=_AnyTagLoader)  # a SafeLoader subclass
        # Tags handed down to each file; a file imported from several places keeps what they share.
        handed: Dict[str, Optional[Set[str]]] = {name: None for name in files}
        for _ in range(len(files) + 1):
            incoming: Dict[str, List[Set[str]]] = {}
            for name, data in files.items():
                imports: List[Tuple[str, Tuple[str, ...]]] = []
                base = tuple(sorted(handed[name] or ()))
                list(_walk_tasks(data, name, base, imports))
                for target, tags in imports:
                    incoming.setdefault(Path(target).name, []).append(set(tags))
            new = {
                name: (set.intersection(*incoming[name]) if name in incoming else None)
                for name in files
            }
            if new == handed:
                break
            handed = new
        for name, data in files.items():
            path = tasks_dir / name
            rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
            refs.extend(_walk_tasks(data, rel, tuple(sorted(handed[name] or ())), []))
    return refs


def task_problems(refs: List[TaskRef], known: Iterable[str]) -> List[str]:
    known_ids = set(known)
    problems = []
    for ref in refs:
        if ref.item_id not in known_ids:
            problems.append(f"{ref.path}: task '{ref.name}' names {ref.item_id}, not in the catalog")
        if ref.item_id.lower() not in ref.tags:
            problems.append(
                f"{ref.path}: task '{ref.name}' lacks the tag '{ref.item_id.lower()}'"
            )
    return problems


def _load_tasks(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_AnyTagLoader)  # a SafeLoader subclass


def _include_of(task: Dict[str, Any]) -> Tuple[Optional[str], bool, Tuple[str, ...]]:
    """(file, dynamic, apply tags) of an import_tasks / include_tasks task; (None, ...) otherwise."""
    for keys, dynamic in ((IMPORT_KEYS, False), (INCLUDE_KEYS, True)):
        for key in keys:
            if key in task:
                arg = task[key]
                target = arg.get("file") if isinstance(arg, dict) else arg
                apply = (arg.get("apply") or {}) if isinstance(arg, dict) else {}
                if not isinstance(target, str) or "{{" in target:
                    return None, dynamic, ()
                return target, dynamic, _as_tags(apply.get("tags") if isinstance(apply, dict) else None)
    return None, False, ()


def _has_apply(task: Dict[str, Any]) -> bool:
    return any(isinstance(task.get(key), dict) and "apply" in task[key] for key in INCLUDE_KEYS)


def tag_reach_problems(known: Iterable[str], roles_dir: Path = ROLES_DIR) -> List[str]:
    """Every task that carries a checklist ID tag must run with ``--tags ID``.

    Walks each role from ``tasks/main.yml``. A task's tags are its own and those of its blocks
    and of the import_tasks above it (imports hand their tags down). An ``include_tasks`` is a
    gate: with ``--tags ID`` Ansible runs it only when the include itself carries ID (or
    ``always``), and its tags do not reach the included tasks (only ``apply: {tags}`` would).
    So each include on the way to an ID-tagged task must name that ID in its own tags.

    The one convention (docs/architecture.md, "Roles"): the included tasks carry their IDs
    themselves, and no include has an ``apply:`` (a problem, wherever it is).
    """
    walker = _TagReach({k.lower() for k in known})
    for main in sorted(Path(roles_dir).glob("*/tasks/main.yml")):
        walker.visit(main, set(), [], ())
    return walker.problems


Gate = Tuple[str, Set[str]]  # (which include, the tags it runs with)


@dataclass
class _TagReach:
    ids: Set[str]
    problems: List[str] = field(default_factory=list)

    @staticmethod
    def rel(path: Path) -> str:
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    def visit(self, path: Path, inherited: Set[str], gates: List[Gate], stack: Tuple[str, ...]) -> None:
        if path.name in stack or not path.is_file():
            return
        self.walk(_load_tasks(path), path, inherited, gates, stack + (path.name,))

    def walk(self, tasks: Any, path: Path, inherited: Set[str], gates: List[Gate],
             stack: Tuple[str, ...]) -> None:
        if not isinstance(tasks, list):
            return
        for task in tasks:
            if not isinstance(task, dict):
                continue
            effective = inherited | set(_as_tags(task.get("tags")))
            name = str(task.get("name", "(unnamed)"))
            target, dynamic, applied = _include_of(task)
            if dynamic and _has_apply(task):
                self.problems.append(
                    f"{self.rel(path)}: include '{name}' has an apply: the included tasks carry their "
                    "IDs themselves (docs/architecture.md, \"Roles\")"
                )
            if target is not None:
                included = path.parent / Path(target).name
                if dynamic:
                    gate: Gate = (f"{self.rel(path)}: include '{name}'", effective)
                    self.visit(included, inherited | set(applied), gates + [gate], stack)
                else:
                    self.visit(included, effective, gates, stack)
                continue
            bodies = [task[k] for k in ("block", "rescue", "always") if task.get(k)]
            for body in bodies:
                self.walk(body, path, effective, gates, stack)
            if bodies:
                continue
            for tag in sorted(effective & self.ids):
                for where, runs_with in gates:
                    if tag not in runs_with and "always" not in runs_with:
                        self.problems.append(
                            f"{self.rel(path)}: task '{name}' ({tag}) does not run with --tags {tag}: "
                            f"{where} does not carry {tag}"
                        )


# The roles' one structure (docs/architecture.md, "Roles"): tasks/main.yml is one block, switched
# by the area's boolean and tagged with the area, whose first task loads the distribution's
# variables whatever tags are selected. hub_common (the service layout) has no area.
LAYOUT_ROLE = "hub_common"


def structure_problems(roles_dir: Path = ROLES_DIR) -> List[str]:
    problems: List[str] = []
    for main in sorted(Path(roles_dir).glob("*/tasks/main.yml")):
        role = main.parent.parent.name
        if role == LAYOUT_ROLE:
            continue
        where = str(main.relative_to(ROOT)) if main.is_relative_to(ROOT) else str(main)
        tasks = _load_tasks(main)
        if not (isinstance(tasks, list) and len(tasks) == 1 and isinstance(tasks[0], dict)
                and isinstance(tasks[0].get("block"), list)):
            problems.append(f"{where}: not one block")
            continue
        block = tasks[0]
        when = block.get("when")
        when_text = " ".join(when) if isinstance(when, list) else str(when)
        if not re.match(rf"^{role}_enabled \| bool$", when_text.strip()):
            problems.append(f"{where}: the block's when is {when_text!r}, not '{role}_enabled | bool'")
        area = role.removeprefix("hub_")
        if _as_tags(block.get("tags")) != (area,):
            problems.append(f"{where}: the block's tags are {block.get('tags')!r}, not [{area}]")
        first = block["block"][0] if block["block"] else {}
        if not (isinstance(first, dict) and "ansible.builtin.include_vars" in first
                and "always" in _as_tags(first.get("tags"))):
            problems.append(f"{where}: the block does not start with include_vars tagged always")
    return problems


def coverage_problems(items: List[Dict[str, Any]], scan: MarkerScan) -> Tuple[List[str], List[str]]:
    """(automated items with no marked test, markers naming IDs not in the catalog)."""
    by_id = scan.by_id()
    known = {str(i["id"]) for i in items}
    untested = [
        str(i["id"]) for i in items if not i.get("manual", False) and str(i["id"]) not in by_id
    ]
    unknown = [
        f"{m.path}:{m.line} {m.test} marks {item_id}, not in the catalog"
        for item_id, marks in sorted(by_id.items())
        if item_id not in known
        for m in marks
    ]
    return untested, unknown


def manual_on_tested(items: List[Dict[str, Any]], scan: MarkerScan) -> List[str]:
    """Manual items that a test claims to verify: one of the two is wrong."""
    by_id = scan.by_id()
    return [
        f"{i['id']} is manual but {m.path}:{m.line} {m.test} marks it"
        for i in items
        if i.get("manual", False)
        for m in by_id.get(str(i["id"]), [])
    ]
