"""The report's figures as PNG bytes: sagittal spine, L3 tissue overlay, BMD-per-level chart.

All drawn with matplotlib's Agg canvas (no display needed). Images are shown in physical
proportions (mm), in the usual radiological display: sagittal with anterior on the left and head at
the top; axial with anterior at the top and the patient's right on the viewer's left.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from osteoscan.io import CTVolume
from osteoscan.labels import Tissue, VertebraLevel
from osteoscan.report import constants as C
from osteoscan.report.content import CM2, MG_CM3, bmd_color, fmt
from osteoscan.report.levels import nonzero_box
from osteoscan.result import StudyResult, VertebraResult

log = logging.getLogger(__name__)

#: Sagittal crop margins around the labelled spine, mm.
SAGITTAL_MARGIN_SI_MM = 15.0
SAGITTAL_MARGIN_ANTERIOR_MM = 60.0
SAGITTAL_MARGIN_POSTERIOR_MM = 35.0
OVERLAY_ALPHA = 0.5
DPI = 150
#: zlib level of the PNG figures. Level 1 encodes 3x faster than PIL's default 6 (0.13 s less per report
#: on the 2-core box) for files ~20 % larger (report.html grows by ~0.2 MB); the pixels are the same, and
#: report.pdf and the SC images, which store decoded pixels, are byte-for-byte unchanged.
PNG_COMPRESS_LEVEL = 1


def vertebra_colors(result: StudyResult) -> dict[str, str]:
    """Level name -> ACR band colour of its BMD (regressor, else calibrated; grey if neither)."""
    return {v.level: bmd_color(_bmd(v)) for v in result.vertebrae}


def _bmd(v: VertebraResult) -> float | None:
    return v.bmd_mg_cm3 if v.bmd_mg_cm3 is not None else v.bmd_calibrated_mg_cm3


#: White margin around a figure's content, inches.
PAD_INCHES = 0.04


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas, white background, trimmed to its content plus ``PAD_INCHES``).

    The same pixels as ``savefig(bbox_inches="tight")``, drawn once instead of twice: "tight" first
    draws the whole figure (image resampling, text, 3-D render polygons) with the output disabled just
    to measure it, although these figures (fixed axes, no layout engine) measure the same without it.
    The box is measured at the output dpi, as savefig does.
    """
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    box = fig.get_tightbbox(canvas.get_renderer()).padded(PAD_INCHES)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", bbox_inches=box,
                pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buf.getvalue()


def _window(img: np.ndarray, window: tuple[float, float]) -> tuple[float, float]:
    level, width = window
    return level - width / 2, level + width / 2


def spread_labels(positions: list[float], min_gap: float) -> list[float]:
    """Label positions moved apart (keeping their order) so that neighbours are at least ``min_gap`` apart."""
    order = np.argsort(positions)
    placed = np.asarray(positions, dtype=float)[order]
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + min_gap)
    shift = (np.asarray(positions, dtype=float)[order] - placed).mean()  # re-centre the block
    out = np.empty(len(placed))
    out[order] = placed + shift
    return out.tolist()


def _spine_path(lvl: np.ndarray) -> np.ndarray:
    """Left-right column index of the spine on each axial slice (follows scoliosis), smoothed."""
    n_slices, _, n_cols = lvl.shape
    counts = np.zeros((n_slices, n_cols), dtype=np.intp)  # labelled voxels per (slice, column)
    box = nonzero_box(lvl)
    if box is not None:  # counted within the labelled box only: the rest of the grid is zero
        counts[box[0], box[2]] = np.count_nonzero(lvl[box], axis=1)
    total = counts.sum(axis=1)
    cols = np.arange(n_cols)
    have = total > 0
    path = np.full(n_slices, (n_cols - 1) / 2.0)
    if have.any():
        centre = (counts[have] * cols).sum(axis=1) / total[have]
        path = np.interp(np.arange(n_slices), np.flatnonzero(have), centre)
        path = ndimage.uniform_filter1d(path, size=5, mode="nearest")
    return np.clip(np.round(path).astype(int), 0, n_cols - 1)


def sagittal_png(ct: CTVolume, lvl: np.ndarray, result: StudyResult) -> bytes:
    """Curved sagittal reformat through the spine, vertebrae coloured by BMD band and labelled.

    ``lvl`` is the level map of the labels (:func:`osteoscan.report.levels.level_map`).
    """
    path = _spine_path(lvl)
    rows = np.arange(ct.shape[0])
    img = ct.array[rows, :, path].astype(np.float32)  # (slices, AP)
    sag = lvl[rows, :, path]
    sz, sy = ct.spacing[0], ct.spacing[1]

    k_lo, k_hi, j_lo, j_hi = 0, ct.shape[0] - 1, 0, ct.shape[1] - 1
    if sag.any():
        ks, js = np.nonzero(sag)
        k_lo = max(0, int(ks.min() - SAGITTAL_MARGIN_SI_MM / sz))
        k_hi = min(ct.shape[0] - 1, int(ks.max() + SAGITTAL_MARGIN_SI_MM / sz))
        j_lo = max(0, int(js.min() - SAGITTAL_MARGIN_ANTERIOR_MM / sy))
        j_hi = min(ct.shape[1] - 1, int(js.max() + SAGITTAL_MARGIN_POSTERIOR_MM / sy))
    img = img[k_lo : k_hi + 1, j_lo : j_hi + 1]
    sag = sag[k_lo : k_hi + 1, j_lo : j_hi + 1]

    colors = vertebra_colors(result)
    overlay = np.zeros(sag.shape + (4,), dtype=np.float32)
    for value in np.unique(sag[sag > 0]):
        name = VertebraLevel(int(value)).name
        rgba = to_rgba(colors.get(name, C.COLOR_NOT_MEASURED), OVERLAY_ALPHA)
        overlay[sag == value] = rgba

    height_mm, width_mm = img.shape[0] * sz, img.shape[1] * sy
    fig_h = 6.0
    fig_w = float(np.clip(fig_h * width_mm / max(height_mm, 1.0) + 1.6, 3.0, 6.0))
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0.02, 0.06, 0.96, 0.90))
    extent = (0.0, width_mm, 0.0, height_mm)
    vmin, vmax = _window(img, C.WINDOW_BONE)
    ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", extent=extent, interpolation="bilinear")
    ax.imshow(overlay, origin="lower", extent=extent, interpolation="nearest")
    by_level = {v.level: v for v in result.vertebrae}
    values = [int(v) for v in np.unique(sag[sag > 0])]
    if values:
        # one column of labels in front of the spine, spread apart so that neighbours never overlap
        x_anchor = float(np.nonzero(sag)[1].min() * sy - 4.0)
        ys = spread_labels([float(np.nonzero(sag == v)[0].mean() * sz) for v in values], 9.0)
        for value, y in zip(values, ys):
            name = VertebraLevel(value).name
            ax.text(
                max(x_anchor, 2.0),
                y,
                level_caption(by_level.get(name), name),
                ha="right" if x_anchor > 30 else "left",
                va="center",
                fontsize=8,
                color="white",
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "black", "ec": "none", "alpha": 0.6},
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(2, height_mm - 2, "A", color="yellow", fontsize=9, va="top")
    ax.text(width_mm - 2, height_mm - 2, "P", color="yellow", fontsize=9, va="top", ha="right")
    ax.set_title(f"Sagittal reformat: level, BMD ({MG_CM3}), Genant grade (G)", fontsize=9)
    ax.legend(
        handles=_acr_legend_handles(),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.005),
        ncol=2,
        fontsize=7.5,
        frameon=False,
        handlelength=1.2,
        columnspacing=1.0,
    )
    return png_bytes(fig)


def level_caption(v: VertebraResult | None, name: str) -> str:
    """'L1  62  G2': level, BMD (mg/cm3) when measured, Genant grade when fractured."""
    text = name
    if v is not None:
        bmd = _bmd(v)
        if bmd is not None:
            text += f"  {bmd:.0f}"
        if v.genant_grade:
            text += f"  G{v.genant_grade}"
    return text


def _acr_legend_handles() -> list[Patch]:
    return [
        Patch(color=C.COLOR_NORMAL, label=f"> {C.ACR_NORMAL_ABOVE_MG_CM3:.0f} normal"),
        Patch(
            color=C.COLOR_OSTEOPENIA,
            label=f"{C.ACR_OSTEOPOROSIS_BELOW_MG_CM3:.0f}-{C.ACR_NORMAL_ABOVE_MG_CM3:.0f} osteopenia",
        ),
        Patch(color=C.COLOR_OSTEOPOROSIS, label=f"< {C.ACR_OSTEOPOROSIS_BELOW_MG_CM3:.0f} osteoporosis"),
        Patch(color=C.COLOR_NOT_MEASURED, label="not measured"),
    ]


#: Margin around the body outline in the axial figure, mm; HU above which a pixel is "body" (not air).
AXIAL_MARGIN_MM = 12.0
BODY_HU_THRESHOLD = -500.0


def _body_box(img: np.ndarray, tissue: np.ndarray, spacing: tuple[float, float]) -> tuple[slice, slice]:
    """Crop of an axial slice to the patient (largest non-air component, or the tissue map) plus margin."""
    body = img > BODY_HU_THRESHOLD
    lab, n = ndimage.label(body)
    if n:
        sizes = ndimage.sum(body, lab, index=np.arange(1, n + 1))
        body = lab == (int(np.argmax(sizes)) + 1)  # the patient, not the table
    body |= tissue > 0
    if not body.any():
        return slice(None), slice(None)
    r, c = np.nonzero(body)
    mr, mc = int(AXIAL_MARGIN_MM / spacing[0]), int(AXIAL_MARGIN_MM / spacing[1])
    return (slice(max(0, r.min() - mr), min(img.shape[0], r.max() + mr + 1)),
            slice(max(0, c.min() - mc), min(img.shape[1], c.max() + mc + 1)))


def axial_tissue_png(ct: CTVolume, tissue: np.ndarray, slice_index: int, result: StudyResult) -> bytes:
    """The L3 axial slice (soft-tissue window) with the tissue map overlaid and the areas in the legend."""
    img = ct.array[slice_index].astype(np.float32)
    sy, sx = ct.spacing[1], ct.spacing[2]
    rows, cols = _body_box(img, tissue, (sy, sx))
    img, tissue = img[rows, cols], tissue[rows, cols]
    overlay = np.zeros(img.shape + (4,), dtype=np.float32)
    for t in (Tissue.MUSCLE, Tissue.SAT, Tissue.VAT, Tissue.IMAT):
        overlay[tissue == t] = to_rgba(C.TISSUE_COLORS[t.name], 0.45)
    comp = result.composition
    areas = {
        "MUSCLE": comp.sma_cm2 if comp else None,
        "SAT": comp.sat_cm2 if comp else None,
        "VAT": comp.vat_cm2 if comp else None,
        "IMAT": comp.imat_cm2 if comp else None,
    }
    fig = Figure(figsize=(4.6, 4.6 * img.shape[0] * sy / (img.shape[1] * sx) + 0.9))
    ax = fig.add_axes((0.02, 0.17, 0.96, 0.76))
    extent = (0.0, img.shape[1] * sx, img.shape[0] * sy, 0.0)
    vmin, vmax = _window(img, C.WINDOW_SOFT_TISSUE)
    ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="bilinear")
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    w, h = img.shape[1] * sx, img.shape[0] * sy
    for x, y, s, ha, va in ((w / 2, 3, "A", "center", "top"), (3, h / 2, "R", "left", "center"),
                            (w - 3, h / 2, "L", "right", "center")):
        ax.text(x, y, s, color="yellow", fontsize=9, ha=ha, va=va)
    level = comp.level if comp else "L3"
    ax.set_title(f"{level} axial slice {slice_index}: body composition", fontsize=9)
    handles = [
        Patch(color=C.TISSUE_COLORS[k], label=f"{C.TISSUE_NAMES[k]}: {fmt(areas[k], CM2)}")
        for k in ("MUSCLE", "SAT", "VAT", "IMAT")
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=8,
              frameon=False, handlelength=1.2, columnspacing=1.0)
    return png_bytes(fig)


def bmd_chart_png(result: StudyResult) -> bytes:
    """Trabecular BMD per level (with uncertainty) against the ACR category bands."""
    verts = [v for v in result.vertebrae if _bmd(v) is not None]
    fig = Figure(figsize=(7.0, 2.7))
    ax = fig.add_axes((0.09, 0.17, 0.89, 0.72))
    top = max([250.0] + [(_bmd(v) or 0.0) + (v.bmd_uncertainty_mg_cm3 or 0.0) + 20 for v in verts])
    ax.axhspan(0, C.ACR_OSTEOPOROSIS_BELOW_MG_CM3, color=C.COLOR_OSTEOPOROSIS, alpha=0.15, lw=0)
    ax.axhspan(C.ACR_OSTEOPOROSIS_BELOW_MG_CM3, C.ACR_NORMAL_ABOVE_MG_CM3, color=C.COLOR_OSTEOPENIA, alpha=0.18, lw=0)
    ax.axhspan(C.ACR_NORMAL_ABOVE_MG_CM3, top, color=C.COLOR_NORMAL, alpha=0.12, lw=0)
    for y, text in ((C.ACR_OSTEOPOROSIS_BELOW_MG_CM3 / 2, "osteoporosis"),
                    ((C.ACR_OSTEOPOROSIS_BELOW_MG_CM3 + C.ACR_NORMAL_ABOVE_MG_CM3) / 2, "osteopenia"),
                    ((C.ACR_NORMAL_ABOVE_MG_CM3 + top) / 2, "normal")):
        ax.text(1.01, y, text, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7.5,
                color="#444444", style="italic")
    x = np.arange(len(verts))
    if verts:
        reg = [(i, v) for i, v in enumerate(verts) if v.bmd_mg_cm3 is not None]
        if reg:
            ax.errorbar(
                [i for i, _ in reg],
                [v.bmd_mg_cm3 for _, v in reg],
                yerr=[v.bmd_uncertainty_mg_cm3 or 0.0 for _, v in reg],
                fmt="o",
                color="#1f3b73",
                ecolor="#1f3b73",
                capsize=3,
                ms=6,
                label="BMD (regressor) ± uncertainty",
            )
        cal = [(i, v) for i, v in enumerate(verts) if v.bmd_calibrated_mg_cm3 is not None]
        if cal:
            ax.plot(
                [i for i, _ in cal],
                [v.bmd_calibrated_mg_cm3 for _, v in cal],
                "D",
                mfc="none",
                mec="#7a3fb0",
                ms=6,
                label="BMD (phantomless calibration)",
            )
    s = result.summary
    if s.bmd_l1_l2_mg_cm3 is not None:
        ax.axhline(s.bmd_l1_l2_mg_cm3, color="#1f3b73", ls="--", lw=0.8,
                   label=f"mean L1-L2 {s.bmd_l1_l2_mg_cm3:.1f} {MG_CM3}")
    if verts:
        ax.legend(fontsize=7, loc="upper left", frameon=False, ncol=3)
    ax.set_xticks(x, [v.level for v in verts])
    ax.set_xlim(-0.6, max(len(verts), 1) - 0.4)
    ax.set_ylim(0, top)
    ax.set_ylabel(f"trabecular BMD ({MG_CM3})", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title("Bone mineral density per level vs ACR QCT categories", fontsize=9)
    if not verts:
        ax.text(0.5, 0.5, "no vertebra with a BMD measurement", transform=ax.transAxes, ha="center")
    return png_bytes(fig)
