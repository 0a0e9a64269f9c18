"""Shared fixtures: an isolated workspace for every test, and clean app caches."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_workspace(tmp_path, monkeypatch):
    """Nothing a test computes lands in the developer's ./workspace."""
    monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(tmp_path / "workspace"))
    return tmp_path / "workspace"
