from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from multiagent_hive.config import ConfigError, load_settings, validate

from conftest import cli, make_env


def test_precedence_toml_env_file_process(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('server_port = 1111\nmetrics_port = 2222\nlog_level = "debug"\n')
    env_file = tmp_path / "environment"
    env_file.write_text("# comment\nSERVER_PORT=3333\nRUST_LOG=warn,hyper=info\nRUST_BACKTRACE=1\n")
    s = load_settings(str(toml), str(env_file), environ={"METRICS_PORT": "4444"})
    assert s.server_port == 3333  # env file beats TOML
    assert s.metrics_port == 4444  # process environment beats both
    assert s.log_level == "warn"  # RUST_LOG is the LOG_LEVEL alias
    assert s.server_host == "127.0.0.1"
    s2 = load_settings(str(toml), str(env_file), environ={"LOG_LEVEL": "error"})
    assert s2.log_level == "error"


def test_unknown_key_and_bad_types_are_named(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('serverport = 1\nenable_metrics = "maybe"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(str(toml), os.devnull, environ={"SERVER_PORT": "http"})
    text = str(err.value)
    assert "unknown setting 'serverport'" in text
    assert "ENABLE_METRICS" in text and "SERVER_PORT" in text


def test_explicit_missing_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(str(tmp_path / "none.toml"), str(tmp_path / "none.env"), environ={})
    assert len(err.value.problems) == 2


def test_validate_ok(tmp_path: Path) -> None:
    s = load_settings(os.devnull, os.devnull, environ=make_env(tmp_path))
    assert validate(s) == []


def test_check_config_names_every_problem(tmp_path: Path) -> None:
    env = make_env(
        tmp_path,
        JWT_SECRET="",
        DATABASE_ENCRYPTION_KEY="too-short",
        SERVER_PORT="70000",
        METRICS_PORT="0",
        AUDIT_LOG_PATH="/nonexistent-dir/audit.log",
        DATABASE_PATH="relative.db",
    )
    result = cli(env, "--check-config")
    assert result.returncode == 2
    assert result.stdout == ""
    for expected in (
        "JWT_SECRET is not set",
        "DATABASE_ENCRYPTION_KEY is shorter than 32 bytes",
        "SERVER_PORT 70000 is not a valid port",
        "METRICS_PORT 0 is not a valid port",
        "AUDIT_LOG_PATH /nonexistent-dir/audit.log",
        "DATABASE_PATH 'relative.db' must be an absolute path",
    ):
        assert expected in result.stderr


def test_check_config_ok_prints_json(tmp_path: Path) -> None:
    result = cli(make_env(tmp_path), "--check-config")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["changed"] is False and out["server"] == "127.0.0.1:18080"


def test_check_config_port_clash(tmp_path: Path) -> None:
    result = cli(make_env(tmp_path, ENABLE_METRICS="true", METRICS_PORT="18080"), "--check-config")
    assert result.returncode == 2
    assert "SERVER_PORT and METRICS_PORT are both 18080" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_config_unwritable(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    result = cli(make_env(tmp_path, APP_LOG_PATH=str(ro / "app.log")), "--check-config")
    assert result.returncode == 2 and "APP_LOG_PATH" in result.stderr


def test_version() -> None:
    result = cli({}, "--version")
    assert result.returncode == 0 and result.stdout.startswith("multiagent-hive ")
