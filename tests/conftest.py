"""Shared test fixtures: where the real CT cases live, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REALCT = (REPO_ROOT.parent / "shared" / "realct").resolve()


@pytest.fixture(scope="session")
def realct() -> Path:
    """Path of ../shared/realct; the test is skipped (cleanly) when it is not there."""
    if not REALCT.is_dir():
        pytest.skip(f"real CT cases not found at {REALCT}")
    return REALCT
