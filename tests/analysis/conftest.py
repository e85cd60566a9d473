"""Fixtures of the analysis tests: the synthetic-body helpers of ``synth.py`` as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SYNTH = Path(__file__).with_name("synth.py")


def _load_synth() -> ModuleType:
    spec = importlib.util.spec_from_file_location("osteoscan_tests_analysis_synth", _SYNTH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def synth() -> ModuleType:
    """tests/analysis/synth.py (Body, voxelise, tilted_axes), loaded by path (importlib mode)."""
    return _load_synth()
