"""A small, real study function for driving the batch orchestration in tests, and case builders.

``StatsFactory`` builds a processor that reads the study with ``osteoscan.io.load_ct`` (so bad
inputs are rejected by the real reader), finds bone (HU > 100) in three equal slabs along the
cranio-caudal axis and reports each slab's mean HU as a "vertebra" of a real ``StudyResult``. It
also logs every call (study id, pid) so tests can count recomputations, and obeys marker files
next to an input to make the worker die (``<input>.kill``: SIGKILL once, the marker is consumed;
``<input>.killalways``: every time) or to raise an internal error (``<input>.crash``).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osteoscan.io import CTVolume, affine_from_spacing, write_nifti
from osteoscan.io.load import load_ct
from osteoscan.result import (
    ModelInfo,
    QualityControl,
    ResultProvenance,
    StudyResult,
    Summary,
    VertebraResult,
)

LEVELS = ("L1", "L2", "L3")
BONE_HU = 100.0
SPACING = (2.0, 1.5, 1.5)


def case_volume(seed: int, shape: tuple[int, int, int] = (24, 20, 20)) -> CTVolume:
    """Air around a soft-tissue body with a bone column whose HU differs per slab and per seed."""
    rng = np.random.default_rng(seed)
    arr = np.full(shape, -1000, dtype=np.int16)
    arr[:, 3:-3, 3:-3] = 40
    c = shape[1] // 2
    slab = shape[0] // len(LEVELS)
    for i in range(len(LEVELS)):
        hu = 150 + 20 * i + int(rng.integers(0, 60))
        arr[i * slab:(i + 1) * slab, c - 3:c + 3, c - 3:c + 3] = hu + rng.integers(-10, 11, (slab, 6, 6))
    return CTVolume(arr, affine_from_spacing(SPACING))


def expected_means(seed: int) -> list[float]:
    """What StatsProcessor must report for case ``seed`` (computed independently, in array space)."""
    arr = case_volume(seed).array.astype(np.float64)
    slab = arr.shape[0] // len(LEVELS)
    return [float(arr[i * slab:(i + 1) * slab][arr[i * slab:(i + 1) * slab] > BONE_HU].mean()) for i in range(len(LEVELS))]


def make_cases(root: Path, seeds: list[int]) -> list[Path]:
    """One NIfTI per seed: root/case_<seed>.nii.gz."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in seeds:
        p = root / f"case_{s:03d}.nii.gz"
        write_nifti(case_volume(s), path=p)
        paths.append(p)
    return paths


def make_not_ct(path: Path) -> Path:
    """An MR-like NIfTI (no value below -200 HU): load_ct rejects it as not a CT."""
    arr = np.random.default_rng(0).integers(0, 800, (24, 20, 20)).astype(np.int16)
    write_nifti(CTVolume(arr, affine_from_spacing(SPACING)), path=path)
    return path


class StatsProcessor:
    def __init__(self, device: str, calls_log: Path, fingerprint: str, delay_s: float) -> None:
        self.device = device
        self.calls_log = calls_log
        self.fingerprint = fingerprint
        self.delay_s = delay_s

    def process(self, task, outdir: Path) -> StudyResult:
        with self.calls_log.open("a") as fh:
            fh.write(f"{task.study_id} {os.getpid()}\n")
        marker = Path(task.input_path + ".kill")
        if marker.exists():
            marker.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        if Path(task.input_path + ".killalways").exists():
            os.kill(os.getpid(), signal.SIGKILL)
        if Path(task.input_path + ".crash").exists():
            raise RuntimeError(f"simulated bug while screening {task.study_id}")
        t0 = time.perf_counter()
        volume = load_ct(task.input_path, task.series_uid)
        if self.delay_s:
            time.sleep(self.delay_s)
        arr = volume.array.astype(np.float64)
        slab = arr.shape[0] // len(LEVELS)
        voxel_ml = float(np.prod(volume.spacing)) / 1000.0
        vertebrae = []
        for i, level in enumerate(LEVELS):
            part = arr[i * slab:(i + 1) * slab]
            bone = part[part > BONE_HU]
            vertebrae.append(
                VertebraResult(
                    level=level,
                    complete=True,
                    volume_ml=bone.size * voxel_ml,
                    hu_trabecular=float(bone.mean()) if bone.size else None,
                    hu_trabecular_sd=float(bone.std()) if bone.size else None,
                )
            )
        return StudyResult(
            vertebrae=tuple(vertebrae),
            discs=(),
            summary=Summary(l1_hu=vertebrae[0].hu_trabecular),
            composition=None,
            qc=QualityControl(coverage=LEVELS, lumbar_covered=False, not_reported={"bmd_mg_cm3": "no model"}),
            provenance=ResultProvenance(
                osteoscan_version="test",
                input=volume.provenance.to_dict(),
                geometry={"shape": list(volume.shape), "spacing_mm": list(volume.spacing)},
                models=(ModelInfo(name="slab-stats", version=self.fingerprint, sha256="0" * 64),),
                backend="numpy",
                device=self.device,
                precision="fp64",
            ),
            timings_s={"total": time.perf_counter() - t0},
        )


@dataclass(frozen=True)
class StatsFactory:
    """Picklable factory: one StatsProcessor per worker."""

    calls_log: str
    fingerprint: str = "stats-v1"
    delay_s: float = 0.0
    fail_init: bool = False

    def __call__(self, device: str) -> StatsProcessor:
        if self.fail_init:
            raise OSError(f"model file missing on {device} (simulated)")
        return StatsProcessor(device, Path(self.calls_log), self.fingerprint, self.delay_s)


def calls(calls_log: Path) -> list[tuple[str, int]]:
    """(study id, pid) of every processor call so far."""
    if not calls_log.exists():
        return []
    return [(a, int(b)) for a, b in (line.split() for line in calls_log.read_text().splitlines() if line.strip())]
