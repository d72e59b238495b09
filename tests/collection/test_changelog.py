"""The changelog in antsibull-changelog's format: the fragments and changelogs/changelog.yaml
pass its lint, and CHANGELOG.md is what it generates from changelog.yaml."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _changelog(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "antsibull-changelog"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))


def _copy(dest: Path) -> Path:
    for rel in ("galaxy.yml", "CHANGELOG.md"):
        shutil.copy2(ROOT / rel, dest / rel)
    shutil.copytree(ROOT / "changelogs", dest / "changelogs")
    return dest


def test_fragments_and_changelog_yaml_lint_clean(tmp_path: Path) -> None:
    work = _copy(tmp_path)
    lint = _changelog(["lint"], work)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout + lint.stderr
    changes = _changelog(["lint-changelog-yaml", "changelogs/changelog.yaml"], work)
    assert changes.returncode == 0 and changes.stdout == "", changes.stdout + changes.stderr
    # The lint can fail: a fragment with an unknown section.
    (work / "changelogs/fragments/bad.yml").write_text("new_things:\n  - something\n")
    assert _changelog(["lint"], work).stdout


def test_changelog_md_is_generated_from_changelog_yaml(tmp_path: Path) -> None:
    work = _copy(tmp_path)
    (work / "CHANGELOG.md").unlink()
    generated = _changelog(["generate"], work)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (work / "CHANGELOG.md").read_text() == (ROOT / "CHANGELOG.md").read_text()


def test_released_version_is_galaxy_version() -> None:
    """galaxy.yml names the newest release of changelog.yaml, or a later one still unreleased."""
    releases = yaml.safe_load((ROOT / "changelogs/changelog.yaml").read_text())["releases"]
    version = str(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])
    newest = max(releases, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert tuple(int(p) for p in version.split(".")) >= tuple(int(p) for p in newest.split("."))
