"""The int8 gate: its metrics, its verdict, and which artifacts the pipeline may use."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osteoscan.errors import ModelError
from osteoscan.labels import BODY_OFFSET, DISC_OFFSET, POSTERIOR_OFFSET, Tissue, VertebraLevel
from osteoscan.runtime import ModelSource
from osteoscan.runtime.int8 import int8_paths, select_gated_int8
from osteoscan.runtime.int8_gate import (
    GateReport,
    _Accumulator,
    _verdict,
    per_level_dice,
    tissue_dice,
    vertebra_level_map,
    write_gate,
)
from osteoscan.runtime.quantize import quantize

L1, L2 = int(VertebraLevel.L1), int(VertebraLevel.L2)


def test_vertebra_dice_counts_body_and_posterior_but_not_discs() -> None:
    truth = np.zeros((4, 4, 4), np.uint16)
    truth[0, :2] = BODY_OFFSET + L1
    truth[0, 2:] = POSTERIOR_OFFSET + L1
    truth[1] = DISC_OFFSET + L1
    truth[2:] = BODY_OFFSET + L2
    pred = truth.copy()
    pred[1] = BODY_OFFSET + L1  # the disc wrongly called L1 body: 16 extra voxels
    pred[3] = 0  # half of L2 missed
    lv = vertebra_level_map(truth)
    assert set(np.unique(lv)) == {0, L1, L2}
    d = per_level_dice(vertebra_level_map(pred), lv, [L1, L2])
    assert d[L1] == pytest.approx(2 * 16 / (32 + 16))
    assert d[L2] == pytest.approx(2 * 16 / (16 + 32))


def test_tissue_dice_is_mean_over_present_tissues() -> None:
    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = Tissue.MUSCLE
    truth[2:] = Tissue.SAT
    pred = truth.copy()
    pred[3] = Tissue.VAT
    # muscle 1.0, SAT 2*4/(4+8), VAT 0 (only in pred)
    assert tissue_dice(pred, truth) == pytest.approx((1.0 + 8 / 12 + 0.0) / 3)
    assert tissue_dice(np.zeros((2, 2)), np.zeros((2, 2))) is None


class _Errors:
    def __init__(self, mae: float | None, n: int = 5) -> None:
        self.mae, self.n = mae, n

    def summary(self) -> dict:
        return {"bmd_mae_mg_cm3": self.mae, "n_vertebrae_bmd": self.n}


def _acc(dice: list[float], mae: float | None, tissue: list[float], levels: list[tuple[str, ...]]) -> _Accumulator:
    return _Accumulator(vertebra_dice=dice, tissue_dice=tissue, levels=levels, segment_s=[1.0], errors=_Errors(mae))


def test_verdict_passes_within_limits_and_names_each_failure() -> None:
    lv = [("L1", "L2")]
    ref = _acc([0.90, 0.92], 5.0, [0.95], lv)
    ok, why, figs = _verdict(ref, _acc([0.899, 0.915], 5.8, [0.945], lv))
    assert ok, why
    assert figs["vertebra_dice_drop_change"] == pytest.approx(0.003) and figs["bmd_mae_increase_change"] == pytest.approx(0.8)
    ok, why, _ = _verdict(ref, _acc([0.88, 0.90], 6.5, [0.95], lv))
    assert not ok and "vertebra_dice_drop" in why and "bmd_mae_increase" in why and "tissue" not in why
    ok, why, _ = _verdict(ref, _acc([0.90, 0.92], 5.0, [], [("L1",)]))  # lost the L3 slice, a level
    assert not ok and "measured in one run only" in why and "same levels in 0/1" in why


def test_pipeline_uses_only_gated_untampered_artifacts(tiny3d, rt_config, smooth_input, nets, tmp_path) -> None:
    path, _ = tiny3d
    base = ModelSource.from_onnx(path)
    folder = tmp_path / "int8"
    quantize(path, [smooth_input((1, 1, 16, 16, 16), seed=s) for s in range(4)], folder, config=rt_config)
    choice = select_gated_int8(base, (tmp_path / "empty", folder))
    assert choice.source is None and "never measured" in choice.reason
    write_gate(folder, GateReport("tiny3d", False, "vertebra_dice_drop +0.0300 (limit 0.01)", {"cases": 8}))
    choice = select_gated_int8(base, (folder,))
    assert choice.source is None and "failed on 8 cases" in choice.reason and "+0.0300" in choice.reason
    write_gate(folder, GateReport("tiny3d", True, "ok", {"cases": 8, "cohort": "validation", "date": "today"}))
    choice = select_gated_int8(base, (folder,))
    assert choice.source is not None and choice.source.native_precision == "int8" and "passed on 8" in choice.reason
    # altered IR: refused loudly, never skipped
    _xml, binp, js = int8_paths(folder, "tiny3d")
    data = bytearray(binp.read_bytes())
    data[-1] ^= 0xFF
    binp.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        select_gated_int8(base, (folder,))
    # made from other weights: not used (the model falls back to its auto precision)
    quantize(path, [smooth_input((1, 1, 16, 16, 16))], folder, config=rt_config)
    write_gate(folder, GateReport("tiny3d", True, "ok", {"cases": 8}))
    nets.export_onnx(nets.make_net(seed=5), path, 1, (16, 16, 16))
    choice = select_gated_int8(ModelSource.from_onnx(path), (folder,))
    assert choice.source is None and "other weights" in choice.reason
    assert json.loads(js.read_text())["gate"]["passed"] is True


def test_gate_cli_needs_names_or_pipeline(capfd) -> None:
    from osteoscan.cli import main

    assert main(["models", "gate"]) == 2
    assert main(["models", "gate", "--pipeline", "vertebra_fine"]) == 2
    assert main(["models", "gate", "no_such_model"]) == 2
    err = capfd.readouterr().err
    assert "name the model(s) to gate" in err and "give no model names" in err and "unknown model" in err
