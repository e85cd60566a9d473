"""Calibration inputs for int8 quantisation: exactly what each model sees in the pipeline.

The phantom cases go through the pipeline's own stages (``osteoscan.pipeline.stages``) with fp32
sessions wrapped in :class:`RecordingSession`, which keeps every batch a model receives. So the
int8 scales are fitted on real preprocessing (resampling, HU window, crops, guidance masks), not
on a re-implementation of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from osteoscan.runtime.session import Feed, InferenceSession

log = logging.getLogger(__name__)

#: the calibration cohort: phantom preset and first seed (held apart from the evaluation seeds)
CALIBRATION_PRESET = "cap"  # chest-abdomen-pelvis: every level the cascade sees
CALIBRATION_SEED0 = 900_000


class RecordingSession(InferenceSession):
    """A session that runs ``inner`` and keeps a copy of every input batch it was given."""

    def __init__(self, inner: InferenceSession, max_batches: int = 1000) -> None:
        self.inner = inner
        self.info = inner.info
        self.input_names = inner.input_names
        self.output_names = inner.output_names
        self.input_ranks = inner.input_ranks
        self.batch_size = inner.batch_size
        self.max_batches = max_batches
        self.recorded: list[Feed] = []

    def _run_batch(self, feed: Feed) -> Feed:
        if len(self.recorded) < self.max_batches:
            self.recorded.append({k: v.copy() for k, v in feed.items()})
        return self.inner._run_batch(feed)


def phantom_calibration_inputs(
    n_cases: int = 8, seed0: int = CALIBRATION_SEED0, preset: str = CALIBRATION_PRESET, *,
    backend: str = "openvino", config: Any = None, weights_dir: Any = None,
) -> dict[str, list[Feed]]:
    """Run the fp32 cascade on ``n_cases`` phantom cases; return each model's input batches.

    Needs the four fp32 models (shipped, or in ``weights_dir``; the fine model's crops come from
    the coarse model's levels) and the phantom generator. With untrained models the coarse model
    finds no vertebrae and the fine/BMD lists stay empty (``quantize`` then refuses them).
    """
    from osteoscan.models.registry import MODEL_NAMES, get_spec
    from osteoscan.phantom import generate_case
    from osteoscan.pipeline import stages
    from osteoscan.pipeline.cascade import LoadedModel
    from osteoscan.runtime.api import create_session

    specs = {name: get_spec(name, weights_dir=weights_dir) if weights_dir else get_spec(name) for name in MODEL_NAMES}
    rec = {
        name: RecordingSession(create_session(spec, backend=backend, device="cpu", precision="fp32", config=config))
        for name, spec in specs.items()
    }
    models = {name: LoadedModel(spec=specs[name], session=rec[name]) for name in MODEL_NAMES}
    for i in range(n_cases):
        case = generate_case(seed0 + i, preset)
        volume = case.volume
        loc = stages.localise_spine(volume, models["spine_coarse"])
        segments = stages.segment_vertebrae(volume, loc, loc.detected, models["vertebra_fine"])
        stages.regress_bmd(volume, segments, models["bmd_regressor"])
        stages.segment_tissue(volume, _tissue_slice(segments, volume), models["tissue_2d"], level_assumed=False)
        log.info("calibration case %d/%d: %s", i + 1, n_cases, {k: len(v.recorded) for k, v in rec.items()})
    return {name: split_batches(r.recorded) for name, r in rec.items()}


def _tissue_slice(segments: Sequence[Any], volume: Any) -> int:
    """Axial index of the L3 body centre when L3 was segmented, else the middle slice."""
    from osteoscan.labels import VertebraLevel

    for seg in segments:
        if seg.level == VertebraLevel.L3 and seg.body.any():
            centre = seg.grid.index_to_lps(np.argwhere(seg.body).mean(axis=0))
            k = np.linalg.solve(volume.affine, np.append(centre, 1.0))[0]
            return int(np.clip(round(k), 0, volume.shape[0] - 1))
    return volume.shape[0] // 2


def split_batches(feeds: Sequence[Feed]) -> list[Feed]:
    """One-sample batches (NNCF's statistics see each crop/patch as one sample)."""
    out = []
    for f in feeds:
        n = next(iter(f.values())).shape[0]
        out.extend({k: v[i : i + 1] for k, v in f.items()} for i in range(n))
    return out
