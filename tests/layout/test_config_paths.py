"""Every multiagent-hive invocation reads the layout's configuration files.

The app's built-in defaults are /etc/ai-orchestrator/config.toml and /etc/ai-orchestrator/environment
whatever hub_config_dir says: a command that does not name the files reads the wrong ones (or
none) once the layout moves them. Two checks: the roles' templates rendered for a moved layout
(tests/platforms/render.yml, Debian 12's and RHEL 9's facts) name no default path and pass the
moved files wherever they run the app; and every task of the roles and playbooks that runs the
app builds its command line with hub_config_args (hub_common), the one place the files are named.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
PLATFORMS = ROOT / "tests" / "platforms"
DEFAULTS = yaml.safe_load((ROLES / "hub_common" / "defaults" / "main.yml").read_text())
MOVED = {
    "hub_service_user": "hive", "hub_service_group": "hive", "hub_service_name": "hive",
    "hub_install_dir": "/srv/hive", "hub_config_dir": "/etc/hive", "hub_data_dir": "/srv/hive-data",
    "hub_log_dir": "/var/log/hive", "hub_backup_dir": "/srv/hive-backups",
}
ARGS = "--config /etc/hive/config.toml --env-file /etc/hive/environment"
# The default layout's directories (as whole path components), none of which a moved layout's
# files may name.
DEFAULT_DIRS = re.compile("|".join(re.escape(DEFAULTS[k]) + r"(?![\w.-])" for k in MOVED if k.endswith("_dir")))
APP = re.compile(r"multiagent-hive(?![.\w-])")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    out = tmp_path_factory.mktemp("moved")
    env = dict(os.environ, ANSIBLE_CONFIG=str(PLATFORMS / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    playbook = Path(sys.executable).parent / "ansible-playbook"
    roles = sorted(p.parent.parent.name for p in ROLES.glob("*/tasks/main.yml"))
    os_roles = sorted({p.parent.parent.name for p in ROLES.glob("*/vars/*.yml") if p.name != "main.yml"})
    extra = dict(MOVED, out_dir=str(out), platform_roles=roles, platform_os_roles=os_roles)
    run = subprocess.run(
        [str(playbook) if playbook.exists() else "ansible-playbook", "-i", str(PLATFORMS / "inventory.yml"),
         "--limit", "debian-12,rhel-9", str(PLATFORMS / "render.yml"), "-e", json.dumps(extra)],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return {p.stem: json.loads(p.read_text())["rendered"] for p in out.glob("*.json")}


@pytest.mark.parametrize("platform", ["debian-12", "rhel-9"])
def test_moved_layout_renders_no_default_path(rendered: dict[str, dict[str, str]], platform: str) -> None:
    found = [f"{name}: {line.strip()}" for name, text in rendered[platform].items()
             for line in text.splitlines() if DEFAULT_DIRS.search(line)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("platform", ["debian-12", "rhel-9"])
def test_every_rendered_app_command_names_the_moved_files(rendered: dict[str, dict[str, str]], platform: str) -> None:
    texts = rendered[platform]
    unit = texts["hub_app/templates/ai-orchestrator.service.j2"]
    assert f"ExecStartPre=/srv/hive/current/venv/bin/multiagent-hive {ARGS} --check-config" in unit
    assert f"ExecStart=/srv/hive/current/venv/bin/multiagent-hive {ARGS}\n" in unit
    assert "EnvironmentFile=/etc/hive/environment" in unit
    exporter = texts["hub_monitoring/templates/ai-orchestrator-exporter.service.j2"]
    assert f"ExecStart=/srv/hive/multiagent-hive {ARGS} --metrics" in exporter
    backup = texts["hub_backup/templates/backup-ai-orchestrator.j2"]
    assert f"HIVE_CONFIG=({ARGS})" in backup
    assert backup.count('"$HIVE" "${HIVE_CONFIG[@]}" --') == backup.count('"$HIVE"') == 2
    # No other line of any template runs the app (comments aside; SELinux file contexts name it).
    runs = [f"{name}: {line.strip()}" for name, text in texts.items() if not name.endswith(".fc.j2")
            for line in text.splitlines()
            if APP.search(line) and not line.lstrip().startswith("#") and ARGS not in line
            and "multiagent-hive r," not in line and not line.startswith("HIVE=")]
    assert runs == [], "\n".join(runs)
    if platform == "debian-12":
        profile = texts["hub_mac/templates/apparmor-profile.j2"]
        assert "profile hive {" in profile
        assert "/etc/hive/config.toml r," in profile and "/etc/hive/environment r," in profile


# --- the tasks ---------------------------------------------------------------------------------

# What names the app's program in a task's command: the entry point or a release's console script,
# or a variable holding one.
APP_REF = re.compile(r"multiagent-hive|_app_bin\b|_app_backup_bin\b|\bincident_app\b|\brestore_app\b|reset_admin_bins")


def walk(tasks: Any) -> Iterator[dict[str, Any]]:
    for task in tasks or []:
        if isinstance(task, dict):
            yield task
            for key in ("block", "rescue", "always"):
                yield from walk(task.get(key))


def task_files() -> Iterator[tuple[Path, list[dict[str, Any]], dict[str, Any]]]:
    """(file, tasks, the play vars the tasks see) for every role task file and playbook."""
    for path in sorted(ROLES.glob("*/tasks/*.yml")) + sorted(ROLES.glob("*/handlers/*.yml")):
        yield path, list(walk(yaml.safe_load(path.read_text()))), {}
    for path in sorted((ROOT / "playbooks").glob("*.yml")) + sorted((ROOT / "molecule" / "shared").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            if isinstance(play, dict) and "hosts" in play:
                tasks = [t for key in ("pre_tasks", "tasks", "post_tasks", "handlers") for t in walk(play.get(key))]
                yield path, tasks, play.get("vars") or {}


def app_commands() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, tasks, play_vars in task_files():
        for task in tasks:
            for module in ("ansible.builtin.command", "ansible.builtin.shell"):
                args = task.get(module)
                if args is None:
                    continue
                text = json.dumps(args.get("argv", args.get("cmd", "")) if isinstance(args, dict) else args)
                if APP_REF.search(text):
                    yield f"{path.relative_to(ROOT)}: {task.get('name')}", text, {**play_vars, **(task.get("vars") or {})}


def names_the_files(text: str, scope: dict[str, Any]) -> bool:
    """The command is built with hub_config_args, directly or through a variable of its scope."""
    if "hub_config_args" in text:
        return True
    return any(re.search(rf"\b{re.escape(name)}\b", text) and "hub_config_args" in json.dumps(value)
               for name, value in scope.items())


def test_the_task_scan_finds_the_app_commands() -> None:
    found = [where for where, _, _ in app_commands()]
    # The roles' database commands and the three operator playbooks at least.
    assert sum("hub_app/tasks/database.yml" in w for w in found) >= 5
    for playbook in ("restore.yml", "incident-response.yml", "reset-admin-password.yml"):
        assert any(playbook in w for w in found), playbook


def test_every_task_that_runs_the_app_passes_the_configuration_files() -> None:
    missing = [where for where, text, scope in app_commands() if not names_the_files(text, scope)]
    assert missing == []


def test_validate_commands_name_both_files() -> None:
    """A template's validate: runs the app on the candidate file: the other file must be named too."""
    found = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        for task in walk(yaml.safe_load(path.read_text())):
            args = task.get("ansible.builtin.template") or task.get("ansible.builtin.copy") or {}
            check = str(args.get("validate", "")) if isinstance(args, dict) else ""
            if APP_REF.search(check) and not ("--config" in check and "--env-file" in check):
                found.append(f"{path.relative_to(ROOT)}: {task.get('name')}: {check}")
    assert found == []


def test_the_files_are_named_in_one_place() -> None:
    """Outside hub_common's vars, no role or playbook spells <hub_config_dir>/config.toml or
    <hub_config_dir>/environment (hub_config_file, hub_env_file, hub_config_args)."""
    spelled = re.compile(r"hub_config_dir \}\}/(config\.toml|environment)")
    found = []
    for path in sorted(ROLES.rglob("*")) + sorted((ROOT / "playbooks").glob("*.yml")):
        if path.is_file() and path.suffix in (".yml", ".j2") and path != ROLES / "hub_common" / "vars" / "main.yml":
            found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in spelled.finditer(path.read_text())]
    assert found == []
