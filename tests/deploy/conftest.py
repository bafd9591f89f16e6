"""Fixtures of the offline deployment checks (checks.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import checks


@pytest.fixture(scope="session")
def skaffold() -> Any:
    return checks.load_yaml(checks.REPO_ROOT / "skaffold.yaml")


@pytest.fixture(scope="session")
def skaffold_schema() -> dict[str, Any]:
    return json.loads(checks.shared_schema().read_text())


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay as `kubectl kustomize` renders it."""
    return {overlay: checks.render(checks.REPO_ROOT, overlay) for overlay in checks.OVERLAYS}


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of the deployment's files, for a test to break one."""
    return checks.copy_deployment(tmp_path / "repo")


def edit(path: Path, old: str, new: str) -> None:
    """Replaces one occurrence of `old` that must be there."""
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))
