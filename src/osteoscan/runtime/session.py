"""The back-end-neutral session: numpy in, numpy out, any batch size.

Back-ends implement only ``_run_batch`` (one batch that fits the device) and, where they can
overlap requests (OpenVINO async queues), ``_run_many``. Splitting a large batch into device-sized
chunks, validating inputs and reassembling outputs happens once, here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from osteoscan.errors import BackendError, InputError
from osteoscan.runtime.types import SessionInfo

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
ModelInput = np.ndarray | Mapping[str, np.ndarray]


class InferenceSession(ABC):
    """A compiled model on one back-end and device.

    Attributes set by the back-end: ``info`` (provenance), ``input_names``, ``output_names``,
    ``input_ranks`` (expected ndim of each input including the batch axis, or ``None`` when
    unknown), ``batch_size`` (largest batch sent to the device in one request).
    """

    info: SessionInfo
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_ranks: dict[str, int | None]
    batch_size: int

    # ------------------------------------------------------------------ back-end hooks
    @abstractmethod
    def _run_batch(self, feed: Feed) -> Feed:
        """Run one batch (batch axis <= ``batch_size``); return float32 arrays by output name."""

    def _run_many(self, feeds: Sequence[Feed]) -> list[Feed]:
        """Run several batches; back-ends with concurrent requests override this."""
        return [self._run_batch(f) for f in feeds]

    def close(self) -> None:
        """Release device memory; the session is unusable afterwards."""

    # ------------------------------------------------------------------ public API
    def infer(self, x: ModelInput) -> dict[str, np.ndarray]:
        """Run the model on ``x`` (an array for single-input models, else a dict by input name).

        ``x`` carries a batch axis of any length; it is split into device-sized chunks which
        run concurrently where the back-end allows, and the outputs are concatenated back.
        """
        return self.infer_many([x])[0]

    __call__ = infer

    def infer_many(self, inputs: Sequence[ModelInput]) -> list[dict[str, np.ndarray]]:
        """Run a list of inputs (crops, sliding-window batches) with as much overlap as the
        back-end offers (OpenVINO: an AsyncInferQueue). Returns one output dict per input."""
        feeds = [self._normalise(x) for x in inputs]
        chunks: list[Feed] = []
        owners: list[int] = []
        for idx, feed in enumerate(feeds):
            n = next(iter(feed.values())).shape[0]
            for start in range(0, n, self.batch_size):
                chunks.append({k: v[start : start + self.batch_size] for k, v in feed.items()})
                owners.append(idx)
        results = self._run_many(chunks) if len(chunks) > 1 else [self._run_batch(chunks[0])] if chunks else []
        grouped: list[list[Feed]] = [[] for _ in feeds]
        for owner, out in zip(owners, results):
            grouped[owner].append(out)
        return [_concat(parts) for parts in grouped]

    def __enter__(self) -> InferenceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"<{type(self).__name__} {i.model_name}@{i.model_version} {i.backend}/{i.device}/{i.precision}>"

    # ------------------------------------------------------------------ helpers
    def _normalise(self, x: ModelInput) -> Feed:
        """Dict of C-contiguous float32 arrays with one common batch length; errors name the fix."""
        if isinstance(x, np.ndarray):
            if len(self.input_names) != 1:
                raise InputError(
                    f"model {self.info.model_name!r} has inputs {list(self.input_names)}; "
                    "pass a dict {input_name: array}"
                )
            feed = {self.input_names[0]: x}
        elif isinstance(x, Mapping):
            missing = set(self.input_names) - set(x)
            extra = set(x) - set(self.input_names)
            if missing or extra:
                raise InputError(
                    f"model {self.info.model_name!r} expects inputs {list(self.input_names)}, "
                    f"got {sorted(x)} (missing {sorted(missing)}, unknown {sorted(extra)})"
                )
            feed = dict(x)
        else:
            raise InputError(f"model input must be a numpy array or a dict of arrays, got {type(x).__name__}")
        out: Feed = {}
        batch: int | None = None
        for name in self.input_names:
            arr = np.ascontiguousarray(np.asarray(feed[name], dtype=np.float32))
            rank = self.input_ranks.get(name)
            if rank is not None and arr.ndim != rank:
                hint = " (add the batch axis: x[None])" if arr.ndim == rank - 1 else ""
                raise InputError(
                    f"input {name!r} of model {self.info.model_name!r} must have {rank} dims "
                    f"(batch, channels, spatial...), got shape {arr.shape}{hint}"
                )
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise InputError(f"inputs of model {self.info.model_name!r} have different batch sizes")
            out[name] = arr
        if batch == 0:
            raise InputError(f"empty batch given to model {self.info.model_name!r}")
        return out


def _concat(parts: list[Feed]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def to_float32(arr: Any) -> np.ndarray:
    """Back-end output (numpy of any float dtype) as an owned float32 array."""
    out = np.asarray(arr)
    if out.dtype != np.float32:
        out = out.astype(np.float32)
    return out


def check_io_names(model_label: str, kind: str, actual: Sequence[str], expected: Sequence[str] | None) -> None:
    """Raise ModelError when the artifact's input/output names differ from its spec."""
    from osteoscan.errors import ModelError

    if expected and tuple(expected) != tuple(actual):
        if set(expected) == set(actual):
            return  # same names, order differs: back-ends address tensors by name
        raise ModelError(
            f"model {model_label}: the artifact's {kind} names {list(actual)} differ from the spec's "
            f"{list(expected)}; re-export the model or fix the spec"
        )


def unsupported(backend: str, what: str, alternative: str) -> BackendError:
    """A BackendError that names what is not supported and what to use instead."""
    return BackendError(f"{backend}: {what} is not supported; use {alternative}")
