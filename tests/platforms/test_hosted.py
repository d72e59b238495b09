"""The hosted workflow and the registry scenario, read as files (nothing here reaches GitHub or a
registry): the runner image of every job, and how each registry image boots.

A runner image GitHub has retired fails every job on it (brownouts fail them before the date);
a container started with an init its image does not have fails Molecule's create before any role
runs. Both only show on the hosted runner, so they are checked here against the tables below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
REGISTRY = REPO / "molecule/registry/molecule.yml"

# GitHub-hosted runner images: the ones deprecated or retired (actions/runner-images, "Available
# images") and the one the jobs use.
RETIRED_RUNNERS = {"ubuntu-18.04", "ubuntu-20.04", "ubuntu-22.04"}
RUNNER = "ubuntu-24.04"

# Each registry image's init: the CMD of its Dockerfile, the program its image documents as PID 1
# (Ubuntu's images install systemd without systemd-sysv, so they have no /sbin/init).
REGISTRY_IMAGES: Dict[str, Dict[str, str]] = {
    "docker.io/geerlingguy/docker-ubuntu2204-ansible:latest": {
        "init": "/lib/systemd/systemd", "platform": "ubuntu-22.04",
        "dockerfile": "https://github.com/geerlingguy/docker-ubuntu2204-ansible/blob/master/Dockerfile"},
    "docker.io/geerlingguy/docker-ubuntu2404-ansible:latest": {
        "init": "/lib/systemd/systemd", "platform": "ubuntu-24.04",
        "dockerfile": "https://github.com/geerlingguy/docker-ubuntu2404-ansible/blob/master/Dockerfile"},
    "docker.io/geerlingguy/docker-rockylinux9-ansible:latest": {
        "init": "/usr/lib/systemd/systemd", "platform": "rocky-9-container",
        "dockerfile": "https://github.com/geerlingguy/docker-rockylinux9-ansible/blob/master/Dockerfile"},
}


def _jobs(path: Path) -> Dict[str, Any]:
    jobs: Dict[str, Any] = yaml.safe_load(path.read_text())["jobs"]
    return jobs


def _registry() -> Dict[str, Any]:
    scenario: Dict[str, Any] = yaml.safe_load(REGISTRY.read_text())
    return scenario


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_hosted_job_runs_on_a_supported_runner_image(workflow: Path) -> None:
    jobs = _jobs(workflow)
    assert jobs
    runners = {name: job["runs-on"] for name, job in jobs.items()}
    assert not {name: r for name, r in runners.items() if r in RETIRED_RUNNERS}, runners
    assert set(runners.values()) == {RUNNER}, runners


def test_every_registry_platform_boots_its_images_own_init() -> None:
    platforms = _registry()["platforms"]
    assert platforms
    for platform in platforms:
        image = platform["image"]
        assert image in REGISTRY_IMAGES, f"{platform['name']}: {image} is not in the table of registry images"
        assert platform["command"] == REGISTRY_IMAGES[image]["init"], (platform["name"], REGISTRY_IMAGES[image])
        assert platform["systemd"] == "always" and platform["privileged"] is True, platform["name"]


def test_the_registry_scenario_covers_every_image_and_verifies_every_platform() -> None:
    scenario = _registry()
    names = [p["name"] for p in scenario["platforms"]]
    assert sorted(p["image"] for p in scenario["platforms"]) == sorted(REGISTRY_IMAGES)
    assert scenario["verifier"]["options"]["hosts"].split(",") == names
    # Each image's platform has a fact fixture, so tests/platforms renders the roles for it.
    fixtures = {p.stem for p in (REPO / "tests/platforms/fixtures").glob("*.json")}
    assert {entry["platform"] for entry in REGISTRY_IMAGES.values()} <= fixtures


def test_the_registry_images_are_documented() -> None:
    """The table above is the scenario's documentation too (molecule/registry/README.md)."""
    readme = (REPO / "molecule/registry/README.md").read_text()
    for image, entry in REGISTRY_IMAGES.items():
        row = next((line for line in readme.splitlines() if f"`{image}`" in line), "")
        assert f"`{entry['init']}`" in row and entry["dockerfile"] in row, (image, row)
