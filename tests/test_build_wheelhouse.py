"""roles/hub_app/files/build_wheelhouse.py: the app's wheelhouse, built on the controller.

pip is faked at the script's one boundary, subprocess.run: `pip wheel` writes a wheel named from
the source's pyproject.toml, `pip download` writes the pinned wheels; nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "roles" / "hub_app" / "files" / "build_wheelhouse.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_wheelhouse", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bw = load()


class FakePip:
    """subprocess.run for `python -m pip wheel|download`; records each call."""

    def __init__(self) -> None:
        self.calls: List[List[str]] = []
        self.fail: Dict[str, int] = {}
        self.extra_app_wheel = False
        self.seen_sources: List[List[str]] = []

    def __call__(self, cmd: List[str], **kwargs: Any) -> Any:
        self.calls.append(cmd)
        verb = cmd[3]
        rc = self.fail.get(verb, 0)
        if rc == 0 and verb == "wheel":
            out = Path(cmd[cmd.index("--wheel-dir") + 1])
            src = Path(cmd[-1])
            self.seen_sources.append(sorted(str(p.relative_to(src)) for p in src.rglob("*")))
            out.mkdir(parents=True, exist_ok=True)
            text = (src / "pyproject.toml").read_text()
            version = text.split('version = "')[1].split('"')[0]
            (out / f"multiagent_hive-{version}-py3-none-any.whl").write_bytes(b"app " + version.encode())
            if self.extra_app_wheel:
                (out / "other-1.0-py3-none-any.whl").write_bytes(b"other")
        elif rc == 0 and verb == "download":
            out = Path(cmd[cmd.index("--dest") + 1])
            for pin in Path(cmd[cmd.index("-r") + 1]).read_text().split():
                name, version = pin.split("==")
                (out / f"{name}-{version}-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(pin.encode())
        return type("Proc", (), {"returncode": rc, "stdout": f"pip {verb} output\n"})()

    def verbs(self) -> List[str]:
        return [c[3] for c in self.calls]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    src = tmp_path / "app"
    (src / "src" / "multiagent_hive").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[project]\nname = "multiagent-hive"\nversion = "1.2.3"\n')
    (src / "src" / "multiagent_hive" / "__init__.py").write_text("VERSION = 1\n")
    (src / "constraints.txt").write_text("fastapi==0.115.0\nuvicorn==0.30.0\n")
    # What never goes into the wheel, nor into the cache key.
    (src / "tests").mkdir()
    (src / "tests" / "test_x.py").write_text("x = 1\n")
    (src / "src" / "multiagent_hive" / "__pycache__").mkdir()
    (src / "src" / "multiagent_hive" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (src / "build").mkdir()
    (src / "build" / "stale.py").write_text("")
    (src / "src" / "multiagent_hive.egg-info").mkdir()
    (src / "src" / "multiagent_hive.egg-info" / "PKG-INFO").write_text("")
    return src


@pytest.fixture
def pip(monkeypatch: pytest.MonkeyPatch) -> FakePip:
    fake = FakePip()
    monkeypatch.setattr(bw.subprocess, "run", fake)
    return fake


def main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], app: Path, cache: Path,
         *extra: str, python: str = "3.11", arch: str = "x86_64") -> Dict[str, Any]:
    argv = ["build_wheelhouse.py", "--source", str(app), "--constraints", str(app / "constraints.txt"),
            "--cache-dir", str(cache), "--python-version", python, "--arch", arch, *extra]
    monkeypatch.setattr(sys, "argv", argv)
    bw.main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, "exactly one JSON line"
    result: Dict[str, Any] = json.loads(lines[0])
    return result


def test_first_run_builds_then_reuses(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      app: Path, pip: FakePip, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = main(monkeypatch, capsys, app, cache)
    dest = cache / "py3.11-x86_64"
    assert first["changed"] is True
    assert first["dest"] == str(dest) and first["tar"] == f"{dest}.tar"
    assert (first["app_name"], first["app_version"]) == ("multiagent-hive", "1.2.3")
    assert first["app_wheel"] == "multiagent_hive-1.2.3-py3-none-any.whl"
    assert first["files"] == sorted(["multiagent_hive-1.2.3-py3-none-any.whl",
                                     "fastapi-0.115.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                                     "uvicorn-0.30.0-cp311-cp311-manylinux_2_17_x86_64.whl"])
    assert pip.verbs() == ["wheel", "download"]
    # The target's interpreter and platforms, the pins as requirements and as constraints.
    download = pip.calls[1]
    assert download[download.index("--python-version") + 1] == "3.11"
    assert download[download.index("--implementation") + 1] == "cp"
    assert "--only-binary=:all:" in download
    platforms = [download[i + 1] for i, a in enumerate(download) if a == "--platform"]
    assert platforms == [f"{p}_x86_64" for p in bw.MANYLINUX]
    assert download[download.index("-c") + 1] == download[download.index("-r") + 1] == str(app / "constraints.txt")
    # The stamp, the marker named by the key, the constraints beside the wheels.
    stamp = json.loads((dest / ".stamp.json").read_text())
    assert stamp["key"] == first["key"] and (dest / f".build-{first['key']}").is_file()
    assert (dest / "constraints.txt").read_text() == (app / "constraints.txt").read_text()
    assert not list(cache.glob(".wheelhouse-*")), "the work directory is removed"

    pip.calls.clear()
    again = main(monkeypatch, capsys, app, cache)
    assert again["changed"] is False and pip.calls == []
    assert {k: v for k, v in again.items() if k != "changed"} == {k: v for k, v in first.items() if k != "changed"}


def test_the_tar_is_reproducible(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                 app: Path, pip: FakePip, tmp_path: Path) -> None:
    first = main(monkeypatch, capsys, app, tmp_path / "one")
    second = main(monkeypatch, capsys, app, tmp_path / "two")
    one, two = Path(first["tar"]).read_bytes(), Path(second["tar"]).read_bytes()
    assert one == two
    with tarfile.open(first["tar"]) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(p.name for p in Path(first["dest"]).iterdir())
        assert {(m.uid, m.gid, m.uname, m.gname, m.mode, m.mtime) for m in members} == {
            (0, 0, "root", "root", 0o644, int(bw.SOURCE_DATE_EPOCH))}
    assert pip.calls[0][0] == sys.executable


def test_the_build_sees_a_clean_copy_of_the_sources(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    app: Path, pip: FakePip, tmp_path: Path) -> None:
    main(monkeypatch, capsys, app, tmp_path / "cache")
    assert pip.seen_sources == [["constraints.txt", "pyproject.toml", "src", "src/multiagent_hive",
                                 "src/multiagent_hive/__init__.py"]]
    assert not (app / "dist").exists() and (app / "build" / "stale.py").exists(), "app/ is left as it was"


@pytest.mark.parametrize("edit", ["source", "constraints", "tar", "stamp", "wheel"])
def test_what_makes_a_rebuild(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                              app: Path, pip: FakePip, tmp_path: Path, edit: str) -> None:
    cache = tmp_path / "cache"
    first = main(monkeypatch, capsys, app, cache)
    dest = Path(first["dest"])
    (dest / "stale-extra.whl").write_bytes(b"")
    if edit == "source":
        (app / "src" / "multiagent_hive" / "__init__.py").write_text("VERSION = 2\n")
    elif edit == "constraints":
        (app / "constraints.txt").write_text("fastapi==0.115.1\nuvicorn==0.30.0\n")
    elif edit == "tar":
        Path(first["tar"]).unlink()
    elif edit == "stamp":
        (dest / ".stamp.json").write_text(json.dumps({"key": "other", "app_wheel": first["app_wheel"]}))
    else:
        (dest / first["app_wheel"]).unlink()
    pip.calls.clear()
    again = main(monkeypatch, capsys, app, cache)
    assert again["changed"] is True and pip.verbs() == ["wheel", "download"]
    assert (again["key"] != first["key"]) == (edit in ("source", "constraints"))
    assert not (dest / "stale-extra.whl").exists(), "the old wheelhouse is replaced, not added to"


def test_caches_and_tests_do_not_change_the_key(app: Path) -> None:
    key = bw.cache_key(app, app / "constraints.txt", "py3.11-x86_64")
    (app / "tests" / "test_y.py").write_text("")
    (app / "src" / "multiagent_hive" / "__pycache__" / "n.pyc").write_bytes(b"\1")
    (app / "src" / "multiagent_hive" / "old.pyc").write_bytes(b"\1")
    (app / ".pytest_cache").mkdir()
    (app / ".pytest_cache" / "v").write_text("")
    assert bw.cache_key(app, app / "constraints.txt", "py3.11-x86_64") == key
    assert bw.cache_key(app, app / "constraints.txt", "py3.12-x86_64") != key
    (app / "src" / "multiagent_hive" / "new.py").write_text("")
    assert bw.cache_key(app, app / "constraints.txt", "py3.11-x86_64") != key


def test_each_target_gets_its_own_wheelhouse(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             app: Path, pip: FakePip, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    x86 = main(monkeypatch, capsys, app, cache)
    arm = main(monkeypatch, capsys, app, cache, python="3.9", arch="aarch64")
    assert arm["changed"] is True and arm["dest"] == str(cache / "py3.9-aarch64") and arm["key"] != x86["key"]
    assert main(monkeypatch, capsys, app, cache)["changed"] is False


@pytest.mark.parametrize("args, message", [
    (["--python-version", "3"], "--python-version must look like 3.11"),
    (["--python-version", "python3.11"], "--python-version must look like 3.11"),
    (["--arch", "armv7l"], "invalid choice"),
])
def test_bad_arguments(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                       app: Path, pip: FakePip, tmp_path: Path, args: List[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(monkeypatch, capsys, app, tmp_path / "cache", *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert pip.calls == []


def test_a_source_without_pyproject_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                               app: Path, pip: FakePip, tmp_path: Path) -> None:
    (app / "pyproject.toml").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(monkeypatch, capsys, app, tmp_path / "cache")
    assert exit_info.value.code == 2 and "has no pyproject.toml" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["wheel", "download"])
def test_a_failed_pip_keeps_the_previous_wheelhouse(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    app: Path, pip: FakePip, tmp_path: Path, verb: str) -> None:
    cache = tmp_path / "cache"
    first = main(monkeypatch, capsys, app, cache)
    (app / "src" / "multiagent_hive" / "__init__.py").write_text("VERSION = 2\n")
    pip.fail[verb] = 1
    with pytest.raises(SystemExit) as exit_info:
        main(monkeypatch, capsys, app, cache)
    captured = capsys.readouterr()
    assert exit_info.value.code == 1 and captured.out == ""
    assert f"command failed (1): {sys.executable} -m pip {verb}" in captured.err
    assert f"pip {verb} output" in captured.err
    assert json.loads((Path(first["dest"]) / ".stamp.json").read_text())["key"] == first["key"]
    assert Path(first["tar"]).is_file() and not list(cache.glob(".wheelhouse-*"))


def test_more_than_one_app_wheel_is_an_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             app: Path, pip: FakePip, tmp_path: Path) -> None:
    pip.extra_app_wheel = True
    with pytest.raises(SystemExit) as exit_info:
        main(monkeypatch, capsys, app, tmp_path / "cache")
    assert exit_info.value.code == 1 and "expected one app wheel" in capsys.readouterr().err
    assert pip.verbs() == ["wheel"]


def test_run_reports_a_real_failing_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bw.run([sys.executable, "-c", "print('out'); raise SystemExit(3)"], {})
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"command failed (3): {sys.executable} -c") and "out" in err
    bw.run([sys.executable, "-c", "pass"], {})
