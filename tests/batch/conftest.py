"""Make tests/batch/batch_testlib.py importable by worker processes and Ray actors.

Workers are spawned (local pool) or started by Ray, so the study function the tests inject must
live in an importable module: its folder goes on sys.path (inherited by spawned children) and on
PYTHONPATH (inherited by the Ray workers that a test cluster starts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
_pp = os.environ.get("PYTHONPATH", "")
if HERE not in _pp.split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, _pp) if p)
