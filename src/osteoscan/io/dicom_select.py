"""Rules that pick the one CT series to analyse from whatever a PACS export contains.

A study folder typically holds localizers (scouts), several reconstructions of the same scan
(soft-tissue and bone/lung kernels, thin and thick slices, axial and MPR reformats), dose reports
(secondary captures) and sometimes other modalities. The rules, in order (documented in docs/io.md):

1. **Rejected outright** (reported with the reason): not CT (``"MR series: osteoscan analyses CT
   only"``), localizers, secondary captures / dose screens, images without patient geometry.
2. **Ranked** among the rest, each criterion only breaking ties of the previous ones:
   a. ORIGINAL/PRIMARY over DERIVED/SECONDARY, and axial over reformatted (sagittal/coronal) stacks;
   b. volumes (>= :data:`MIN_VOLUME_SLICES` slices) over a few loose slices;
   c. soft-tissue kernel over unknown over sharp (bone/lung) kernels;
   d. slices of at least :data:`MIN_REASONABLE_THICKNESS_MM` over thinner ones, then the thinnest;
   e. most slices; then lowest series number (deterministic).

Everything here is pure (no file access) so the rules are testable on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

#: Slices thinner than this are unusual (noisy, huge) reconstructions; prefer >= 0.5 mm.
MIN_REASONABLE_THICKNESS_MM = 0.5
#: Fewer slices than this is a handful of images (e.g. a key-image set), not a volume.
MIN_VOLUME_SLICES = 10
#: |cos| between the slice normal and patient z above which a stack counts as axial (~25 degrees).
AXIAL_COS_MIN = 0.9

#: SOP classes of secondary captures (dose reports, screenshots): PS3.4 B.5.
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

_SOFT_WORDS = ("STANDARD", "STND", "SOFT", "SMOOTH", "BODY", "ABDOMEN", "ABD", "MEDIASTINUM", "BRAIN")
_SHARP_WORDS = ("BONE", "LUNG", "EDGE", "SHARP", "HIGH", "ULTRA", "DETAIL", "PLUS", "HRCT")
#: Siemens-style kernels: letter(s) + 2-digit sharpness (Br38f, B30f, I31f, Qr40, Bl57): <= 45 soft.
_SIEMENS = re.compile(r"^[A-Z][a-z]?(\d{2})")
_SIEMENS_SOFT_MAX = 45
#: Canon/Toshiba "FC" kernels: FC01-FC18 body soft tissue, FC30+ bone/lung.
_CANON = re.compile(r"^FC(\d{2})")
_CANON_SOFT_MAX = 20
#: Philips single-letter kernels: A, B, C smooth/standard; D, E, L, Y* sharp.
_PHILIPS_SOFT = {"A", "B", "C", "UB", "IMR1"}


class KernelClass:
    """Coarse class of a reconstruction kernel (rank value: lower is preferred)."""

    SOFT = 0
    UNKNOWN = 1
    SHARP = 2

    NAMES: ClassVar[dict[int, str]] = {0: "soft-tissue", 1: "unknown", 2: "bone/lung (sharp)"}


def classify_kernel(kernel: str | None) -> int:
    """Soft-tissue, sharp (bone/lung) or unknown, from the vendor's kernel name."""
    if not kernel:
        return KernelClass.UNKNOWN
    name = kernel.strip()
    up = name.upper()
    if any(w in up for w in _SHARP_WORDS):
        return KernelClass.SHARP
    m = _SIEMENS.match(name)
    if m:
        return KernelClass.SOFT if int(m.group(1)) <= _SIEMENS_SOFT_MAX else KernelClass.SHARP
    m = _CANON.match(up)
    if m:
        return KernelClass.SOFT if int(m.group(1)) <= _CANON_SOFT_MAX else KernelClass.SHARP
    if up in _PHILIPS_SOFT or any(w in up for w in _SOFT_WORDS):
        return KernelClass.SOFT
    if len(up) <= 2 and up[:1] in ("D", "E", "L", "Y"):
        return KernelClass.SHARP
    return KernelClass.UNKNOWN


@dataclass(frozen=True)
class StackInfo:
    """What the selection rules need to know about one candidate stack of images."""

    key: str  # unique id of the stack (series UID, with a suffix when a series was split)
    series_uid: str
    description: str
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    kernel: str | None
    thickness_mm: float | None
    n_slices: int
    normal_cos_z: float  # |cos| of the slice normal with patient z
    has_geometry: bool
    series_number: int
    split_note: str = ""  # why this stack was split off from its series (mixed sizes, ...)


@dataclass(frozen=True)
class SkippedSeries:
    """A series (or part of one) that was not analysed, and why."""

    series_uid: str
    description: str
    reason: str

    def __str__(self) -> str:
        return f"{self.series_uid} ({self.description or 'no description'}): {self.reason}"


def rejection_reason(s: StackInfo) -> str | None:
    """Why a stack can never be analysed, or None when it is a candidate."""
    modality = (s.modality or "").upper()
    if modality != "CT":
        shown = modality or "unknown-modality"
        return f"{shown} series: osteoscan analyses CT only"
    types = {t.upper() for t in s.image_type}
    if "LOCALIZER" in types or "SCOUT" in types or "TOPOGRAM" in types:
        return "localizer (scout) image, not a cross-sectional CT"
    if s.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX) or "SCREEN SAVE" in types:
        return "secondary capture (e.g. a dose report or screenshot), not CT image data"
    if not s.has_geometry:
        return "no ImagePositionPatient/ImageOrientationPatient/PixelSpacing: not a reconstructable CT image"
    return None


def _is_original_primary(s: StackInfo) -> bool:
    types = [t.upper() for t in s.image_type]
    return len(types) >= 2 and types[0] == "ORIGINAL" and types[1] == "PRIMARY"


def rank_key(s: StackInfo) -> tuple:
    """Sort key implementing rules 2a-2e (smaller is better)."""
    primary = 0 if _is_original_primary(s) else 1
    axial = 0 if s.normal_cos_z >= AXIAL_COS_MIN else 1
    volume = 0 if s.n_slices >= MIN_VOLUME_SLICES else 1
    kernel = classify_kernel(s.kernel)
    t = s.thickness_mm if s.thickness_mm and s.thickness_mm > 0 else float("inf")
    reasonable = 0 if t >= MIN_REASONABLE_THICKNESS_MM else 1
    return (primary + axial, volume, kernel, reasonable, t, -s.n_slices, s.series_number, s.key)


def _why_lost(loser: StackInfo, winner: StackInfo) -> str:
    """The first rule on which ``loser`` ranked below ``winner``, in words."""
    lk, wk = rank_key(loser), rank_key(winner)
    if lk[0] != wk[0]:
        what = []
        if not _is_original_primary(loser):
            what.append(f"image type {'/'.join(loser.image_type) or 'missing'} (derived or secondary)")
        if loser.normal_cos_z < AXIAL_COS_MIN:
            what.append("not axial (a reformat)")
        return (
            "not chosen: "
            + " and ".join(what or ["lower priority image type"])
            + "; an ORIGINAL/PRIMARY axial series is present"
        )
    if lk[1] != wk[1]:
        return f"not chosen: only {loser.n_slices} slice(s); a volume of {winner.n_slices} slices is present"
    if lk[2] != wk[2]:
        return (
            f"not chosen: {KernelClass.NAMES[lk[2]]} kernel ({loser.kernel or 'none'}); "
            f"the chosen series has a {KernelClass.NAMES[wk[2]]} kernel ({winner.kernel})"
        )
    if lk[3] != wk[3]:
        return (
            f"not chosen: slices of {loser.thickness_mm} mm are thinner than {MIN_REASONABLE_THICKNESS_MM} mm; "
            f"the chosen series has {winner.thickness_mm} mm"
        )
    if lk[4] != wk[4]:
        return f"not chosen: thicker slices ({loser.thickness_mm} mm vs {winner.thickness_mm} mm)"
    if lk[5] != wk[5]:
        return f"not chosen: fewer slices ({loser.n_slices} vs {winner.n_slices})"
    return "not chosen: equivalent to the chosen series (lower priority by series number/UID)"


def choose_stack(
    stacks: list[StackInfo], series_uid: str | None = None
) -> tuple[StackInfo | None, list[SkippedSeries], list[SkippedSeries]]:
    """Apply the rules; returns ``(chosen or None, skipped, rejected_candidates_for_uid)``.

    ``skipped`` lists every other stack with its reason. When ``series_uid`` is given only stacks of
    that series compete (others are skipped as "not the requested series"); if all of them are
    rejected, ``chosen`` is None and the third list holds their reasons.
    """
    skipped: list[SkippedSeries] = []
    candidates: list[StackInfo] = []
    requested_rejected: list[SkippedSeries] = []
    for s in stacks:
        reason = rejection_reason(s)
        if series_uid is not None and s.series_uid != series_uid:
            skipped.append(SkippedSeries(s.series_uid, s.description, reason or "not the requested series"))
            continue
        if reason:
            entry = SkippedSeries(s.series_uid, s.description, reason)
            skipped.append(entry)
            if series_uid is not None:
                requested_rejected.append(entry)
            continue
        candidates.append(s)
    if not candidates:
        return None, skipped, requested_rejected
    candidates.sort(key=rank_key)
    chosen = candidates[0]
    for s in candidates[1:]:
        reason = _why_lost(s, chosen)
        if s.series_uid == chosen.series_uid and s.split_note:
            reason = s.split_note
        skipped.append(SkippedSeries(s.series_uid, s.description, reason))
    return chosen, skipped, requested_rejected
