"""Shared fixtures for the verification suite.

The same suite runs under Molecule (testinfra verifier) and against any inventory
(`make verify INVENTORY=...`). Every test that verifies a guide checklist item is marked
``@pytest.mark.checklist("ID")`` with an ID from checklist/catalog.yml.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

# The one owner of the service layout (account, directories, ports): its defaults, under which
# each host's own inventory values are laid (layout()).
LAYOUT_DEFAULTS = Path(__file__).resolve().parents[3] / "roles" / "hub_common" / "defaults" / "main.yml"


@dataclass(frozen=True)
class Layout:
    """The service layout of one host: hub_common's variables as that host resolves them."""

    user: str
    group: str
    service: str
    install_dir: str
    config_dir: str
    data_dir: str
    log_dir: str
    backup_dir: str
    http_port: int
    http_socket: str
    metrics_port: int
    node_exporter_port: int
    admin_password_file: str

    @property
    def app(self) -> str:
        """The guide's entry point (a link into the current release)."""
        return f"{self.install_dir}/multiagent-hive"

    @property
    def cli(self) -> str:
        """The entry point reading this layout's configuration files, as every command the roles
        run does (hub_common's hub_config_args: the app's own defaults are /etc/ai-orchestrator's)."""
        return f"{self.app} --config {self.config_file} --env-file {self.env_file}"

    @property
    def current(self) -> str:
        """The link to the running release."""
        return f"{self.install_dir}/current"

    @property
    def venv(self) -> str:
        return f"{self.install_dir}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def apparmor_profile(self) -> str:
        """hub_mac's profile file, named after the program it confines."""
        return "/etc/apparmor.d/" + self.install_dir.strip("/").replace("/", ".") + ".multiagent-hive"

    @property
    def env_file(self) -> str:
        return f"{self.config_dir}/environment"

    @property
    def config_file(self) -> str:
        return f"{self.config_dir}/config.toml"

    @property
    def database(self) -> str:
        return f"{self.data_dir}/hive_persistence.db"

    @property
    def audit_log(self) -> str:
        return f"{self.log_dir}/audit.log"


@lru_cache(maxsize=1)
def _layout_defaults() -> Dict[str, Any]:
    with open(LAYOUT_DEFAULTS, encoding="utf-8") as handle:
        return dict(yaml.safe_load(handle))


@cache
def _inventory_values(inventory: str, name: str) -> Dict[str, Any]:
    from testinfra.utils.ansible_runner import AnsibleRunner

    return dict(AnsibleRunner(inventory).get_variables(name))


def _host_values(host: Any) -> Dict[str, Any]:
    """The host's own inventory values: through Ansible with testinfra's ansible backend, from
    Molecule's inventory under Molecule (its podman backend: MOLECULE_INVENTORY_FILE, host_vars
    included), else from the summary scripts/verify.sh made of the inventory (HUB_VERIFY_HOSTS,
    checklist/inventory.py: only the layout's variables leave the inventory)."""
    if host.backend.NAME == "ansible":
        return dict(host.ansible.get_variables())
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if inventory:
        return _inventory_values(inventory, host.backend.get_hostname())
    summary = os.environ.get("HUB_VERIFY_HOSTS")
    if summary:
        with open(summary, encoding="utf-8") as handle:
            for entry in json.load(handle)["hosts"]:
                if host.backend.get_hostname() in (entry["name"], entry.get("address")):
                    return dict(entry.get("layout", {}))
    return {}


def host_value(host: Any, name: str, default: Any) -> Any:
    """One of the host's own inventory values (a role switch), else the role's default."""
    return _host_values(host).get(name, default)


_LAYOUTS: Dict[str, Layout] = {}


def layout(host: Any) -> Layout:
    """The service layout of this host: hub_common's defaults, overridden by the host's values."""
    key = host.backend.get_pytest_id()
    if key not in _LAYOUTS:
        defaults = _layout_defaults()
        own = _host_values(host)
        v = {name: own.get(name, value) for name, value in defaults.items()}
        _LAYOUTS[key] = Layout(
            user=v["hub_service_user"], group=v["hub_service_group"], service=v["hub_service_name"],
            install_dir=v["hub_install_dir"], config_dir=v["hub_config_dir"], data_dir=v["hub_data_dir"],
            log_dir=v["hub_log_dir"], backup_dir=v["hub_backup_dir"], http_port=int(v["hub_http_port"]),
            http_socket=v["hub_http_socket"],
            metrics_port=int(v["hub_metrics_port"]), node_exporter_port=int(v["hub_node_exporter_port"]),
            admin_password_file=v["hub_admin_password_file"])
    return _LAYOUTS[key]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "checklist(*ids): the guide checklist item(s) this test verifies"
    )


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """test_no_credentials_in_logs reads the logs every other test wrote: it runs last.

    test_ssh runs first: it connects to sshd from the controller itself (ssh-audit, a fresh key
    login: 4 new connections within seconds). Next to the suite's own single connection, at the
    start of the run, they are minutes apart from the next command's; at the end of the suite
    they were not, and ufw's LIMIT (a source's 6th new connection within 30 s) refused a `make drift` started
    right after (docs/operators.md)."""
    first = [item for item in items if "test_ssh.py" in item.nodeid]
    last = [item for item in items if "test_no_credentials_in_logs.py" in item.nodeid]
    if first or last:
        items[:] = first + [item for item in items if item not in first and item not in last] + last


@dataclass
class Response:
    status: int
    headers: Dict[str, str] = field(default_factory=dict)
    body: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """HTTP(S) requests made *on the target* with curl, so they test what a client there sees."""

    def __init__(self, host: Any, base: str) -> None:
        self.host = host
        self.base = base.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Optional[Dict[str, str]] = None,
        json_body: Any = None,
        data: Optional[str] = None,
        extra: str = "",
    ) -> Response:
        marker = "\n--HUB-STATUS--"
        args = ["curl", "-sk", "-X", method, "-D", "-", "-w", marker + "%{http_code}"]
        for key, value in (headers or {}).items():
            args += ["-H", f"{key}: {value}"]
        if json_body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(json_body)]
        elif data is not None:
            args += ["--data-binary", data]
        cmd = " ".join(shlex.quote(a) for a in args) + f" {extra} " + shlex.quote(self.base + path)
        out = self.host.run(cmd)
        assert marker in out.stdout, f"curl failed ({out.rc}): {out.stderr}"
        raw, status = out.stdout.rsplit(marker, 1)
        head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
        # With a redirect or 100-continue there may be several header blocks: keep the last.
        while body.startswith("HTTP/"):
            head, _, body = body.partition("\n\n")
        parsed: Dict[str, str] = {}
        for line in head.splitlines()[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                parsed[key.strip().lower()] = value.strip()
        return Response(int(status), parsed, body)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Response:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


@pytest.fixture()
def app_client(host: Any) -> Client:
    """The app directly on its loopback port (behind nginx in production)."""
    return Client(host, f"http://127.0.0.1:{layout(host).http_port}")


@pytest.fixture()
def edge_client(host: Any) -> Client:
    """The deployed stack through nginx and TLS."""
    return Client(host, "https://127.0.0.1")


@pytest.fixture()
def admin_password(host: Any) -> str:
    with host.sudo():
        return host.file(layout(host).admin_password_file).content_string.strip()


# Logins are rate limited (nginx and the app, per client address): log in once per host, path
# and test session, not once per test. Tokens live an hour, far longer than the suite.
_ADMIN_TOKENS: Dict[str, str] = {}


def forget_admin_tokens() -> None:
    """After a restore every JWT issued before it is refused: log in again."""
    _ADMIN_TOKENS.clear()


def _admin_login(host: Any, client: Client, password: str) -> str:
    key = f"{host.backend.get_pytest_id()} {client.base}"
    if key not in _ADMIN_TOKENS:
        resp = client.post("/api/auth/login", json_body={"username": "admin", "password": password})
        assert resp.status == 200, f"admin login at {client.base}: {resp.status} {resp.body}"
        _ADMIN_TOKENS[key] = resp.json()["access_token"]
    return _ADMIN_TOKENS[key]


@pytest.fixture()
def admin_token(host: Any, edge_client: Client, admin_password: str) -> str:
    """An admin JWT obtained through nginx."""
    return _admin_login(host, edge_client, admin_password)


@pytest.fixture()
def app_admin_token(host: Any, app_client: Client, admin_password: str) -> str:
    """An admin JWT straight from the app, for tests that must not depend on nginx."""
    return _admin_login(host, app_client, admin_password)
