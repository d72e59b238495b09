"""The collection tarball holds what git tracks minus galaxy.yml's build_ignore, whatever the
checkout's tools have left around: scripts/build-collection.sh run in a checkout full of caches
gives the same files, byte for byte, as a plain `ansible-galaxy collection build` of a fresh
clone; and .gitignore hides every such leftover from `git status`."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# What the project's tools leave in a checkout: mypy (make lint), pytest, hypothesis and
# schemathesis (make unit, or run by hand at the root), `pip install ./app` (app/build,
# egg-info), byte code, ruff, ansible-lint, the wheelhouse cache, reports, built tarballs,
# ansible-test's output, antsibull-changelog's cache, `ansible-builder create`'s context.
LEFTOVERS = [
    "app/.mypy_cache/3.11/multiagent_hive/api.data.json",
    ".mypy_cache/3.11/hubtools/ansible_log.meta.json",
    "app/build/lib/multiagent_hive/api.py",
    "app/build/bdist.linux-x86_64/wheel/x",
    "app/src/multiagent_hive.egg-info/PKG-INFO",
    "app/multiagent_hive.egg-info/SOURCES.txt",
    ".hypothesis/examples/0a1b/2c3d",
    "app/.hypothesis/constants/ffee",
    ".schemathesis/examples.db",
    "app/.schemathesis/cache",
    "app/src/multiagent_hive/__pycache__/api.cpython-311.pyc",
    "plugins/filter/__pycache__/hub.cpython-311.pyc",
    "roles/hub_app/files/__pycache__/build_wheelhouse.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    "app/.pytest_cache/README.md",
    ".ruff_cache/0.17.6/123",
    ".ansible/modules/x",
    "build/wheelhouse/py3.11-x86_64/stamp",
    "dist/hub-provision-0.9.0.tar.gz",
    "hub-provision-1.0.0.tar.gz",
    "reports/compliance-local.md",
    "incident-20261208T010000Z/audit.log",
    "tests/output/bot/ansible-test-sanity.json",
    "changelogs/.plugin-cache.yaml",
    "context/Containerfile",
    ".cache/dev/x/hosts.yml",
    ".venv/bin/python3",
]


def _run(args: List[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def _contents(tarball: Path) -> Dict[str, str]:
    """{file: sha256} of a collection tarball, from its FILES.json (checked against the members)."""
    with tarfile.open(tarball) as tar:
        files = json.load(tar.extractfile("FILES.json"))["files"]  # type: ignore[arg-type]
        members = {m.name for m in tar.getmembers() if m.isfile()}
    listed = {f["name"]: f["chksum_sha256"] for f in files if f["ftype"] == "file"}
    assert members == set(listed) | {"MANIFEST.json", "FILES.json"}
    return listed


def _clone(dest: Path) -> Path:
    """A fresh clone of this repository's HEAD, with this checkout's build script and .gitignore
    (the ones under test, which may not be committed yet)."""
    _run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], dest.parent)
    for rel in ("scripts/build-collection.sh", ".gitignore"):
        shutil.copy2(ROOT / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    work = tmp_path_factory.mktemp("clones")
    return {name: _clone(work / name) for name in ("fresh", "dirty")}


def test_dirty_checkout_builds_what_a_fresh_clone_builds(clones: Dict[str, Path], tmp_path: Path) -> None:
    fresh, dirty = clones["fresh"], clones["dirty"]
    rng = random.Random(30)
    for rel in LEFTOVERS:
        path = dirty / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1, 4096)))
    # Untracked files no pattern anticipates: never shipped either.
    for rel in ("notes.txt", "roles/hub_app/tasks/scratch.yml", "app/src/multiagent_hive/local_patch.py",
                "plugins/filter/experiment.py", "docs/draft.md"):
        (dirty / rel).write_text("untracked\n")

    plain = _run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "fresh"), "."], fresh)
    assert "Created collection" in plain
    (reference,) = (tmp_path / "fresh").glob("hub-provision-*.tar.gz")
    built = Path(_run(["bash", "scripts/build-collection.sh", str(tmp_path / "dirty")], dirty).strip())
    assert built.name == reference.name

    want, got = _contents(reference), _contents(built)
    assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == []
    assert got == want
    assert not [name for name in got if "cache" in name or name.endswith((".pyc", ".tar.gz")) or "egg-info" in name]
    # The project's own test suites stay out; ansible-test's ignore file ships.
    assert {name for name in got if name.startswith("tests/")} == {"tests/sanity/ignore-2.19.txt"}


def test_build_takes_uncommitted_edits_of_tracked_files(clones: Dict[str, Path], tmp_path: Path) -> None:
    dirty = clones["dirty"]
    readme = dirty / "roles/hub_app/README.md"
    readme.write_text(readme.read_text() + "\nan edit not committed yet\n")
    (dirty / "docs/architecture.md").unlink()
    built = Path(_run(["bash", "scripts/build-collection.sh", str(tmp_path)], dirty).strip())
    with tarfile.open(built) as tar:
        text = tar.extractfile("roles/hub_app/README.md").read().decode()  # type: ignore[union-attr]
        names = tar.getnames()
    assert text.endswith("an edit not committed yet\n")
    assert "docs/architecture.md" not in names and "docs/deviations.md" in names
    # The checkout is left as it was: no stash entry, the edit still in the working tree.
    assert _run(["git", "stash", "list"], dirty) == ""
    assert "an edit not committed yet" in readme.read_text()


def test_gitignore_hides_every_leftover(tmp_path: Path) -> None:
    dirty = _clone(tmp_path / "checkout")
    for rel in LEFTOVERS:
        path = dirty / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    (dirty / "notes.txt").write_text("untracked\n")  # the check can fail: this one shows
    status = _run(["git", "status", "--porcelain", "--untracked-files=all"], dirty)
    copied = {"scripts/build-collection.sh", ".gitignore"}
    shown = [line[3:] for line in status.splitlines() if line.startswith("??") and line[3:] not in copied]
    assert shown == ["notes.txt"], status
