"""Label tables shared by the phantom, the models, the analyses and the outputs.

Label numbers are never written as magic constants elsewhere: import them from here.

Vertebra levels use one index space everywhere (``VertebraLevel``). Label maps that carry vertebra
sub-regions (phantom ground truth, ``labels.nii.gz`` written by the pipeline) encode them as

* ``BODY_OFFSET + level``      vertebral body of that level,
* ``POSTERIOR_OFFSET + level`` posterior elements (pedicles, laminae, processes) of that level,
* ``DISC_OFFSET + level``      the intervertebral disc *below* that level,

so ``label % 100`` is always the level and ``label // 100`` the sub-region.
"""

from __future__ import annotations

from enum import IntEnum


class VertebraLevel(IntEnum):
    """Vertebra levels covered by the cascade, cranial to caudal (value order = anatomical order)."""

    C7 = 1
    T1 = 2
    T2 = 3
    T3 = 4
    T4 = 5
    T5 = 6
    T6 = 7
    T7 = 8
    T8 = 9
    T9 = 10
    T10 = 11
    T11 = 12
    T12 = 13
    L1 = 14
    L2 = 15
    L3 = 16
    L4 = 17
    L5 = 18
    L6 = 19  # transitional lumbar vertebra, present in a few % of people
    SACRUM = 20

    @property
    def region(self) -> str:
        """'cervical', 'thoracic', 'lumbar' or 'sacral'."""
        if self is VertebraLevel.C7:
            return "cervical"
        if self <= VertebraLevel.T12:
            return "thoracic"
        if self <= VertebraLevel.L6:
            return "lumbar"
        return "sacral"

    @classmethod
    def from_name(cls, name: str) -> VertebraLevel:
        """Parse 'L1', 'l1', 'S', 'sacrum'; raise ValueError naming the accepted names."""
        key = name.strip().upper()
        if key in ("S", "S1", "SACRUM"):
            return cls.SACRUM
        try:
            return cls[key]
        except KeyError:
            raise ValueError(
                f"unknown vertebra level {name!r}; expected one of {', '.join(m.name for m in cls)}"
            ) from None


#: Levels that are actual vertebrae (everything but the sacrum).
VERTEBRAE: tuple[VertebraLevel, ...] = tuple(v for v in VertebraLevel if v is not VertebraLevel.SACRUM)
#: Number of classes of the coarse spine model: background + every level (incl. L6 and sacrum).
NUM_SPINE_CLASSES: int = len(VertebraLevel) + 1

BODY_OFFSET = 100
POSTERIOR_OFFSET = 200
DISC_OFFSET = 300


class VertebraPart(IntEnum):
    """Output classes of the fine vertebra model."""

    BACKGROUND = 0
    BODY = 1
    POSTERIOR = 2


class Tissue(IntEnum):
    """Output classes of the 2D body-composition model (and tissue values in tissue_L3.nii.gz)."""

    BACKGROUND = 0
    MUSCLE = 1  # skeletal muscle
    SAT = 2  # subcutaneous adipose tissue
    VAT = 3  # visceral adipose tissue
    IMAT = 4  # intermuscular adipose tissue


class Anatomy(IntEnum):
    """Non-spine labels of the phantom's ground-truth label map (values < BODY_OFFSET)."""

    BACKGROUND = 0
    SKIN = 1
    SAT = 2
    VAT = 3
    IMAT = 4
    MUSCLE_RECTUS = 5
    MUSCLE_OBLIQUES = 6
    MUSCLE_ERECTOR = 7
    MUSCLE_QUADRATUS = 8
    MUSCLE_PSOAS = 9
    MUSCLE_OTHER = 10  # chest wall, paraspinal above the lumbar spine, gluteal
    LUNG = 20
    HEART = 21
    LIVER = 22
    SPLEEN = 23
    KIDNEY = 24
    STOMACH = 25
    BOWEL = 26
    BOWEL_GAS = 27
    BLADDER = 28
    AORTA = 29
    IVC = 30
    OTHER_SOFT_TISSUE = 31
    RIB = 40
    STERNUM = 41
    PELVIS = 42
    TABLE = 50


MUSCLE_LABELS: frozenset[Anatomy] = frozenset(
    {
        Anatomy.MUSCLE_RECTUS,
        Anatomy.MUSCLE_OBLIQUES,
        Anatomy.MUSCLE_ERECTOR,
        Anatomy.MUSCLE_QUADRATUS,
        Anatomy.MUSCLE_PSOAS,
        Anatomy.MUSCLE_OTHER,
    }
)


def body_label(level: VertebraLevel) -> int:
    return BODY_OFFSET + int(level)


def posterior_label(level: VertebraLevel) -> int:
    return POSTERIOR_OFFSET + int(level)


def disc_label(upper: VertebraLevel) -> int:
    return DISC_OFFSET + int(upper)


def level_of(label: int) -> VertebraLevel | None:
    """The vertebra level encoded in a body/posterior/disc label, or None for other labels."""
    if label < BODY_OFFSET:
        return None
    return VertebraLevel(label % 100)
