"""``osteoscan info INPUT``: what osteoscan will analyse in an input, and why.

Prints the chosen series, its geometry, HU range, provenance and transfer syntax, and every series
that was skipped with the reason. Exit code 2 (with a one-line reason) when the input is not
usable, e.g. an MR volume.
"""

from __future__ import annotations

import argparse

HELP = "show the CT series osteoscan would analyse in a DICOM folder/zip or NIfTI, and why"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="+", help="DICOM folder, zip, DICOM file(s) or .nii/.nii.gz file")
    parser.add_argument(
        "--series",
        metavar="UID",
        default=None,
        help="SeriesInstanceUID to use instead of the automatic choice",
    )


def _fmt(value: object) -> str:
    if value is None or value == "" or value == ():
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _report(volume, skipped, ignored, out: list[str]) -> None:
    """Human summary lines of a loaded volume (canonical orientation: axes z, y, x)."""
    import numpy as np

    from osteoscan.io.load import ct_statistics

    prov = volume.provenance
    sz, sy, sx = volume.spacing
    nz, ny, nx = volume.shape
    stats = ct_statistics(volume.array)
    lo, hi = float(volume.array.min()), float(volume.array.max())
    out.append(f"Input:           {prov.source_path}")
    out.append(f"Format:          {prov.source_format}")
    if prov.source_format == "dicom":
        out.append(f'Series:          {_fmt(prov.series_instance_uid)}  "{_fmt(prov.series_description)}"')
        out.append(f"Modality:        {_fmt(prov.modality)}")
        out.append(f"Slices:          {nz}")
        out.append(f"Transfer syntax: {_fmt(prov.transfer_syntax)}")
    else:
        out.append(f"Modality:        CT (judged by intensities: {stats.describe()})")
        out.append(f"Slices:          {nz}")
    out.append(
        f"Geometry:        {nx}x{ny}x{nz} voxels (x, y, z), spacing {sx:.2f}x{sy:.2f}x{sz:.2f} mm, "
        f"orientation {''.join(volume.orientation)} (array axes), origin {np.round(volume.origin, 2).tolist()} mm LPS"
    )
    out.append(f"HU range:        {lo:.0f} .. {hi:.0f} (dtype {volume.array.dtype})")
    for label, val in (
        ("Study date", prov.study_date),
        ("Study UID", prov.study_instance_uid),
        ("Frame of ref.", prov.frame_of_reference_uid),
        ("Manufacturer", " ".join(v for v in (prov.manufacturer, prov.manufacturer_model) if v) or None),
        ("kVp", prov.kvp),
        ("Kernel", prov.convolution_kernel),
        ("Slice thickness", f"{prov.slice_thickness_mm:g} mm" if prov.slice_thickness_mm else None),
        ("Contrast agent", prov.contrast_agent),
        (
            "Patient",
            " / ".join(
                x
                for x in (
                    f"age {prov.patient_age_years:g} y" if prov.patient_age_years is not None else "",
                    f"sex {prov.patient_sex}" if prov.patient_sex else "",
                    f"height {prov.patient_height_m:g} m" if prov.patient_height_m else "",
                    f"weight {prov.patient_weight_kg:g} kg" if prov.patient_weight_kg else "",
                )
                if x
            )
            or None,
        ),
    ):
        out.append(f"{label + ':':<17}{_fmt(val)}")
    for note in prov.geometry_notes:
        out.append(f"Geometry note:   {note}")
    if skipped:
        out.append(f"Skipped series ({len(skipped)}):")
        for s in skipped:
            out.append(f"  - {s}")
    if ignored:
        out.append(f"Ignored files ({len(ignored)}):")
        for path, why in ignored[:20]:
            out.append(f"  - {path}: {why}")
        if len(ignored) > 20:
            out.append(f"  ... and {len(ignored) - 20} more")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from osteoscan.io.load import check_is_ct
    from osteoscan.io.nifti import is_nifti_path, read_nifti
    from osteoscan.io.volume import to_canonical

    inputs = [Path(p) for p in args.input]
    out: list[str] = []
    if len(inputs) == 1 and is_nifti_path(inputs[0]):
        volume = read_nifti(inputs[0])
        check_is_ct(volume, str(inputs[0]))
        _report(to_canonical(volume), (), (), out)
    else:
        from osteoscan.io.dicom import load_dicom_series

        source = inputs[0] if len(inputs) == 1 else inputs
        series = load_dicom_series(source, args.series)
        _report(series.volume, series.skipped, series.ignored_files, out)
    print("\n".join(out))
    return 0
