"""The rendered configurations come from tests/platforms (render.yml, one report per platform);
the binaries from tools.py (Debian's archive, cached in .cache/platform-tools)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "platforms")]

import tools  # noqa: E402
from test_platforms import PLATFORMS, reports  # noqa: E402  (the session fixture that renders)

__all__ = ["PLATFORMS", "reports"]


@pytest.fixture(scope="session")
def roots() -> dict[str, Path]:
    """Each release's unpacked root; a tool that cannot be had fails here, saying why."""
    out = {}
    for release in tools.RELEASES:
        try:
            out[release] = tools.root(release)
        except tools.ToolError as error:
            pytest.fail(f"the {release} binaries could not be had: {error}", pytrace=False)
    return out
