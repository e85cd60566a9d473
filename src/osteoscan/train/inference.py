"""Running the exported models for evaluation, exactly as the pipeline feeds them.

Sessions come from :func:`osteoscan.runtime.create_session` (ONNX Runtime, fp32, CPU unless told
otherwise), crops from :mod:`osteoscan.pipeline.grid` (the pipeline's own sampling), inputs from
:mod:`osteoscan.models.preprocess`. No torch here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osteoscan.io import CTVolume
from osteoscan.labels import VertebraLevel
from osteoscan.models.preprocess import normalise_hu
from osteoscan.models.registry import BMD_REGRESSOR, SPINE_COARSE, TISSUE_2D, VERTEBRA_FINE, get_spec
from osteoscan.models.spec import ModelSpec
from osteoscan.models.spine_decoding import SpineDecoding, decode_spine, softmax

log = logging.getLogger(__name__)

#: HU of points outside the scanned field of view (air), as the pipeline pads crops.
OUTSIDE_HU = -1024.0


@dataclass(frozen=True)
class Runner:
    spec: ModelSpec
    session: Any

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.session.infer(np.ascontiguousarray(x, dtype=np.float32))


def open_runner(name: str, weights_dir: str | Path | None = None, backend: str = "onnxruntime",
                device: str = "cpu", precision: str = "fp32") -> Runner:
    from osteoscan.runtime import create_session

    spec = get_spec(name, weights_dir)
    return Runner(spec, create_session(spec, backend=backend, device=device, precision=precision))


def coarse_predict(runner: Runner, volume: CTVolume) -> tuple[np.ndarray, np.ndarray, CTVolume]:
    """(probabilities (C, D, H, W), affine, resampled volume) of the coarse model on ``volume``."""
    from osteoscan.io.resample import resample
    from osteoscan.pipeline.body_crop import coarse_logits

    spec = runner.spec
    low = resample(volume, tuple(spec.input_spacing_mm), order=1)
    logits, window = coarse_logits(lambda b: runner(b)["logits"], low.array, spec)
    # the windows the pipeline uses; outside them (air) the model would say background
    probs = softmax(logits, axis=0)
    full = np.zeros((probs.shape[0], *low.shape), dtype=probs.dtype)
    full[0] = 1.0
    full[(slice(None), *window)] = probs
    return full, low.affine, low


def localise(runner: Runner, volume: CTVolume) -> tuple[SpineDecoding, CTVolume]:
    probs, affine, low = coarse_predict(runner, volume)
    return decode_spine(probs, affine), low


def fine_segment(runner: Runner, volume: CTVolume, decoding: SpineDecoding, low_affine: np.ndarray,
                 levels: list[VertebraLevel] | None = None) -> dict[VertebraLevel, tuple[Any, np.ndarray]]:
    """Fine parts map (VertebraPart per crop voxel) and its grid for each decoded level."""
    from osteoscan.pipeline.grid import Grid, centered_grid, sample

    spec = runner.spec
    shape = tuple(int(s) for s in spec.patch_size)
    spacing = tuple(float(s) for s in spec.input_spacing_mm)
    chosen = [v for v in decoding.vertebrae if v.level is not VertebraLevel.SACRUM
              and (levels is None or v.level in levels)]
    if not chosen:
        return {}
    grids = [centered_grid(np.asarray(v.centroid_lps_mm), shape, spacing, volume.direction) for v in chosen]
    batch = []
    for v, g in zip(chosen, grids):
        ct = sample(volume.array, volume.affine, g, order=1, cval=OUTSIDE_HU)
        guide = sample(decoding.level_map == int(v.level), low_affine, g, order=0, cval=0)
        batch.append(np.stack([normalise_hu(ct, spec), guide.astype(np.float32)]))
    out: dict[VertebraLevel, tuple[Grid, np.ndarray]] = {}
    for i in range(0, len(batch), 4):
        logits = runner(np.stack(batch[i:i + 4]))["logits"]
        for v, g, lg in zip(chosen[i:i + 4], grids[i:i + 4], logits):
            out[v.level] = (g, np.argmax(lg, axis=0).astype(np.uint8))
    return out


def bmd_predict(runner: Runner, ct_crops: list[np.ndarray], body_masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """BMD and sigma (mg/cm3) of crops already sampled on the spec's grid."""
    spec = runner.spec
    x = np.stack([np.stack([normalise_hu(c, spec), m.astype(np.float32)]) for c, m in zip(ct_crops, body_masks)])
    out = runner(x)
    return out["bmd"].reshape(-1), out["sigma"].reshape(-1)


def tissue_predict(runner: Runner, model_in_hu: np.ndarray) -> np.ndarray:
    """Tissue class map of slices already resampled to the spec's grid ((N, H, W) HU)."""
    x = normalise_hu(model_in_hu, runner.spec)[:, None]
    return np.argmax(runner(x)["logits"], axis=1).astype(np.uint8)


ALL_MODELS = (SPINE_COARSE, VERTEBRA_FINE, BMD_REGRESSOR, TISSUE_2D)
