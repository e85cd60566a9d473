"""Where the runtime keeps its derived artifacts and user models.

Derived artifacts (OpenVINO IR converted from the shipped ONNX, OpenVINO compiled-blob cache, ONNX
Runtime fp16 conversions) are caches: deleting the folder only costs the next start-up a second
or two. User models (``osteoscan models import``) are data: they live in a separate folder.

Paths come from an explicit :class:`RuntimeConfig`; the environment variables are only the
defaults of that config (for the CLI and for deployments), never read deep inside a back-end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: environment variable overriding the default cache folder
CACHE_DIR_ENV = "OSTEOSCAN_CACHE_DIR"
#: environment variable overriding the default user-model folder
MODEL_DIR_ENV = "OSTEOSCAN_MODEL_DIR"


def default_cache_dir() -> Path:
    """``$OSTEOSCAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/osteoscan``, else ``~/.cache/osteoscan``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "osteoscan"


def user_model_dir() -> Path:
    """Folder of user-imported models: ``$OSTEOSCAN_MODEL_DIR``, else ``~/.local/share/osteoscan/models``.

    The models registry may look here first so that a site's own model replaces a shipped one of
    the same name (see :func:`osteoscan.runtime.user_models.find_user_model`).
    """
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "osteoscan" / "models"


@dataclass(frozen=True)
class RuntimeConfig:
    """Folders used by the runtime. Build one explicitly in tests and services."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    model_dir: Path = field(default_factory=user_model_dir)
    #: reuse converted IR / compiled blobs across runs (turn off to measure cold starts)
    use_cache: bool = True

    @property
    def ir_dir(self) -> Path:
        """OpenVINO IR converted from ONNX, one sub-folder per (sha256, OV version, device, precision)."""
        return self.cache_dir / "openvino_ir"

    @property
    def ov_blob_dir(self) -> Path:
        """OpenVINO's own ``CACHE_DIR`` of compiled blobs."""
        return self.cache_dir / "openvino_blobs"

    @property
    def onnx_dir(self) -> Path:
        """Derived ONNX files (fp16 conversions for ONNX Runtime GPU providers, TensorRT engines)."""
        return self.cache_dir / "onnx_derived"
