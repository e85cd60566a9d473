"""Hardware-neutral inference runtime: one interface over OpenVINO, ONNX Runtime and PyTorch.

>>> session = create_session(spec, backend="auto", device="auto", precision="fp32")
>>> out = session.infer(batch)            # numpy in, dict of numpy out, any batch size
>>> session.info.as_dict()                # provenance: back-end, device, precision, sha256 ...

Importing this package imports neither torch nor OpenVINO/ONNX Runtime; each back-end is
imported when a session on it is created (the edge install has no torch).
"""

from __future__ import annotations

from osteoscan.runtime.api import create_session
from osteoscan.runtime.config import RuntimeConfig, default_cache_dir, user_model_dir
from osteoscan.runtime.devices import Inventory, inventory
from osteoscan.runtime.model_source import ModelSource
from osteoscan.runtime.pool import DevicePool, PoolStats
from osteoscan.runtime.session import InferenceSession
from osteoscan.runtime.sliding_window import sliding_window_inference
from osteoscan.runtime.types import SessionInfo

__all__ = [
    "DevicePool",
    "InferenceSession",
    "Inventory",
    "ModelSource",
    "PoolStats",
    "RuntimeConfig",
    "SessionInfo",
    "create_session",
    "default_cache_dir",
    "inventory",
    "sliding_window_inference",
    "user_model_dir",
]
