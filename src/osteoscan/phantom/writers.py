"""Write a phantom case to disk: ``ct/`` (DICOM series), ``ct.nii.gz``, ``labels.nii.gz``, ``truth.json``.

Writers live in :mod:`osteoscan.io` and import pydicom / nibabel themselves; this module imports
them only inside :func:`save_case`, so the generation path stays numpy + scipy only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from osteoscan.errors import InputError
from osteoscan.labels import Anatomy, VertebraLevel, body_label, disc_label, posterior_label
from osteoscan.phantom.generate import PhantomCase
from osteoscan.phantom.params import PRESETS

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom", "both")


def label_table() -> dict[int, str]:
    """Every label value the phantom can write, with its name (also stored in truth.json)."""
    table = {int(a): a.name.lower() for a in Anatomy}
    for v in VertebraLevel:
        name = "sacrum" if v is VertebraLevel.SACRUM else v.name
        table[body_label(v)] = f"{name}_body" if v is not VertebraLevel.SACRUM else "sacrum"
        if v is not VertebraLevel.SACRUM:
            table[posterior_label(v)] = f"{name}_posterior"
            below = "S1" if v in (VertebraLevel.L5, VertebraLevel.L6) else None
            table[disc_label(v)] = f"disc_{name}_{below or 'next'}"
    return table


def save_case(case: PhantomCase, outdir: str | Path, fmt: str = "both") -> list[Path]:
    """Write the case's files into ``outdir``; returns the paths written.

    Raises:
        InputError: unknown format or unwritable folder.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown phantom output format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc}); choose a writable path") from exc
    from osteoscan.io import write_dicom_series, write_nifti

    written: list[Path] = []
    vol = case.volume
    if fmt in ("nifti", "both"):
        written.append(write_nifti(vol, None, out / "ct.nii.gz"))
    if fmt in ("dicom", "both"):
        t = case.truth
        files = write_dicom_series(
            vol,
            out / "ct",
            series_description=f"osteoscan phantom {t['preset']} seed {t['seed']}",
            study_description=f"CT {PRESETS[t['preset']].split(':')[0]} (synthetic phantom)",
            manufacturer=vol.provenance.manufacturer,
            manufacturer_model=f"osteoscan-phantom {t['generator_version']}",
        )
        written.extend(files[:1])
    written.append(write_nifti(case.labels, vol.affine, out / "labels.nii.gz"))
    truth = dict(case.truth)
    truth["label_table"] = {str(k): v for k, v in sorted(label_table().items())}
    p = out / "truth.json"
    p.write_text(json.dumps(truth, indent=1))
    written.append(p)
    log.info("phantom seed %s written to %s (%s)", case.truth["seed"], out, fmt)
    return written
