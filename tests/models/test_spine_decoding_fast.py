"""The decoder's fast paths give exactly what the simple whole-volume computations give.

Each fast path (argmax from logits, softmax on gathered voxels, per-level labelling in bounding
boxes, the list-based Viterbi) is compared bit for bit with a plain reference on small synthetic
data, including the float32 corner cases (ties created by the softmax, NaN, inf).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from osteoscan.labels import NUM_SPINE_CLASSES
from osteoscan.labels import VertebraLevel as V
from osteoscan.models import spine_decoding as sd

SPACING_MM = 4.0


def _ref_argmax(scores: np.ndarray) -> np.ndarray:
    """The decoder's original argmax: numpy's, on the whole-volume softmax."""
    return np.argmax(sd.as_probabilities(scores), axis=0).astype(np.uint8)


def _tricky_logits(seed: int) -> np.ndarray:
    """Random logits with voxels whose top two logits are 1 ulp apart (the softmax can tie them),
    exactly tied, NaN, +-inf and very large."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, (NUM_SPINE_CLASSES, 6, 7, 9)).astype(np.float32)
    flat = x.reshape(NUM_SPINE_CLASSES, -1)
    n = flat.shape[1]
    for v in range(n // 2):  # 1-ulp near ties: the lower channel gets the smaller logit
        lo, hi = sorted(rng.choice(NUM_SPINE_CLASSES, 2, replace=False))
        top = np.float32(rng.uniform(-0.5, 0.5) if v % 2 else flat[:, v].max() + 1.0)
        flat[:, v] = np.minimum(flat[:, v], top - 2.0)
        flat[hi, v] = top  # near 0, exp rounds 1 ulp below the top to the top: the softmax ties them
        flat[lo, v] = np.nextafter(top, np.float32(-np.inf))
    flat[:, n // 2] = 0.5  # all tied
    flat[3, n // 2 + 1] = flat[7, n // 2 + 1] = flat[:, n // 2 + 1].max() + 1  # two tied maxima
    flat[5, n // 2 + 2] = np.nan
    flat[9, n // 2 + 3] = np.inf
    flat[:, n // 2 + 4] = -np.inf
    flat[2, n // 2 + 5] = -np.inf
    flat[:, n // 2 + 6] *= 1e5
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logit_argmax_is_the_argmax_of_the_softmax(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd, "_ARGMAX_SLAB_VOXELS", 100)  # several slabs, one of them partial
    x = _tricky_logits(seed)
    with np.errstate(invalid="ignore"):
        ref = _ref_argmax(x)
        fast = sd._Scores(x).argmax()
        # the data must hold voxels where the logits' own argmax is wrong, or this test proves nothing
        assert np.any(np.argmax(x, axis=0) != ref)
        np.testing.assert_array_equal(fast, ref)
        # a non-contiguous view (the sliding window's cropped output) gives the same
        padded = np.pad(x, ((0, 0), (0, 2), (0, 0), (0, 0)))[:, : x.shape[1]]
        np.testing.assert_array_equal(sd._Scores(padded).argmax(), ref)


def test_argmax_of_probabilities_is_numpys() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((NUM_SPINE_CLASSES, 5, 6, 7)).astype(np.float32)
    p[:, 0, 0, 0] = 0.25  # all tied
    p[4, 1, 1, 1] = p[11, 1, 1, 1] = 2.0  # tied maxima
    p[6, 2, 2, 2] = np.nan
    p[8, 3, 3, 3] = p[2, 3, 3, 3] = np.nan
    np.testing.assert_array_equal(sd.first_argmax(p), np.argmax(p, axis=0).astype(np.uint8))
    probs = sd.softmax(rng.normal(size=(NUM_SPINE_CLASSES, 5, 6, 7)))
    scores = sd._Scores(probs)
    assert scores.are_probabilities
    np.testing.assert_array_equal(scores.argmax(), np.argmax(probs, axis=0))


def test_softmax_of_gathered_voxels_is_bit_identical() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 4.0, (NUM_SPINE_CLASSES, 9, 10, 11)).astype(np.float32)
    full = sd.softmax(x).reshape(NUM_SPINE_CLASSES, -1)
    idx = rng.permutation(x[0].size)[:500]
    gathered = sd._Scores(x).probs_at(idx)
    np.testing.assert_array_equal(gathered, full[:, idx])
    # the candidates' mean probabilities (summation order follows the memory layout)
    np.testing.assert_array_equal(gathered.mean(axis=1), full[:, idx].mean(axis=1))


def test_level_components_match_whole_volume_labelling() -> None:
    rng = np.random.default_rng(5)
    noise = ndimage.gaussian_filter(rng.random((30, 20, 24)), 1.5)
    levels = np.digitize(noise, np.quantile(noise, np.linspace(0.3, 1.0, 9)[:-1])).astype(np.uint8)
    levels[levels > 0] += 3  # levels 4..11, 1..3 absent
    levels[rng.random(levels.shape) < 0.02] = 19  # scattered single voxels
    structure = ndimage.generate_binary_structure(3, 1)
    ref = []
    for level in range(1, NUM_SPINE_CLASSES):
        lab, n = ndimage.label(levels == level, structure=structure)
        ref += [np.flatnonzero(lab == i) for i in range(1, n + 1)]
    fast = sd._level_components(levels, NUM_SPINE_CLASSES)
    assert len(fast) == len(ref) > 20
    for a, b in zip(fast, ref):
        np.testing.assert_array_equal(a, b)


def _ref_viterbi(cands, seq, spacing):
    """The decoder's original Viterbi (numpy score table, sums recomputed per transition)."""
    n, p = len(cands), len(seq)
    eps = 1e-4
    emis = np.empty((n, p))
    for i, c in enumerate(cands):
        fg = c.mean_prob[1:].sum()
        for j, lv in enumerate(seq):
            emis[i, j] = math.log(c.mean_prob[int(lv)] / max(fg, eps) + eps)
    drop = np.array([sd.DROP_PENALTY * float(c.mean_prob[1:].sum()) for c in cands])
    neg = -1e18
    score = np.full((n + 1, p + 1), neg)
    back = [[(-1, False)] * (p + 1) for _ in range(n + 1)]
    score[0, p] = 0.0
    last_centroid = {}
    for i in range(n):
        for s in range(p + 1):
            cur = score[i, s]
            if cur <= neg / 2:
                continue
            v = cur - drop[i]
            if v > score[i + 1, s]:
                score[i + 1, s] = v
                back[i + 1][s] = (s, False)
                if (i, s) in last_centroid:
                    last_centroid[(i + 1, s)] = last_centroid[(i, s)]
            if s < p and seq[s] is V.SACRUM:  # further pieces of the sacrum stay sacrum
                v = cur + emis[i, s]
                if v > score[i + 1, s]:
                    score[i + 1, s] = v
                    back[i + 1][s] = (s, True)
                    last_centroid[(i + 1, s)] = last_centroid[(i, s)]
                continue
            start = 0 if s == p else s + 1
            for j in range(start, p):
                v = cur + emis[i, j]
                if s != p:
                    prev = last_centroid[(i, s)]
                    dist = float(np.linalg.norm((prev - cands[i].centroid) * spacing))
                    expected = sum(sd._step_mm(seq[k]) for k in range(s, j))
                    v -= sd.SKIP_PENALTY * (j - s - 1)
                    v -= sd.DISTANCE_WEIGHT * math.log(max(dist, 1.0) / expected) ** 2
                if v > score[i + 1, j]:
                    score[i + 1, j] = v
                    back[i + 1][j] = (s, True)
                    last_centroid[(i + 1, j)] = cands[i].centroid
    end = int(np.argmax(score[n]))
    assign = [None] * n
    s = end
    for i in range(n, 0, -1):
        prev, assigned = back[i][s]
        if assigned:
            assign[i - 1] = seq[s]
        s = prev
    return float(score[n, end]), assign


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 14))
    z = np.cumsum(rng.uniform(2.0, 12.0, n))[::-1]  # cranial first
    cands = []
    for i in range(n):
        prob = rng.dirichlet(np.full(NUM_SPINE_CLASSES, 0.3)).astype(np.float32)
        centroid = np.array([z[i], 20 + rng.normal(0, 2), 30 + rng.normal(0, 2)])
        cands.append(sd._Candidate(np.arange(3), centroid, prob, 3))
    spacing = np.array([SPACING_MM, 0.8, 0.8])
    for seq in (sd.STANDARD_SEQUENCE, sd.L6_SEQUENCE):
        assert sd._viterbi(cands, seq, spacing) == _ref_viterbi(cands, seq, spacing)


def _noisy_column_logits(seed: int) -> np.ndarray:
    """Logits of boxes T10..L5, sacrum stacked cranio-caudally, with noise that makes fragments."""
    rng = np.random.default_rng(seed)
    levels = [V(v) for v in range(V.T10, V.L5 + 1)] + [V.SACRUM]
    depth = 8 * len(levels) + 6
    x = rng.normal(0.0, 1.2, (NUM_SPINE_CLASSES, depth, 16, 16)).astype(np.float32)
    x[0] += 4.0
    for i, lv in enumerate(levels):
        z0 = depth - 4 - 8 * (i + 1)
        x[int(lv), z0 : z0 + 7, 4:12, 4:12] += 7.0
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_decoding_logits_equals_decoding_their_probabilities(seed: int) -> None:
    """Logits take the sparse softmax path, probabilities the whole-volume one: same result."""
    x = _noisy_column_logits(seed)
    aff = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    fast = sd.decode_spine(x, aff)
    ref = sd.decode_spine(sd.softmax(x), aff)
    assert len(fast.vertebrae) >= 5
    assert fast.vertebrae == ref.vertebrae
    np.testing.assert_array_equal(fast.level_map, ref.level_map)
    assert fast.notes == ref.notes


def test_probability_detection() -> None:
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(NUM_SPINE_CLASSES, 4, 5, 6)).astype(np.float32)
    assert sd._are_probabilities(sd.softmax(logits))
    assert not sd._are_probabilities(logits)
    positive = np.abs(logits)  # no negative value for the quick check: the full test decides
    assert not sd._are_probabilities(positive)
    late_negative = sd.softmax(logits)
    late_negative[3, 2, 1, 1] = -0.1  # not in the quick check's plane
    assert not sd._are_probabilities(late_negative)
