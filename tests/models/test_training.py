"""Training on CPU: a few steps on phantom samples lower the loss; the loop runs and exports."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.models import registry
from osteoscan.train.augment import degrade_mask

torch = pytest.importorskip("torch")


def test_a_few_steps_lower_the_loss() -> None:
    from osteoscan.train.datasets import build_samples
    from osteoscan.train.tasks import TASKS

    spec = registry.recipe(registry.TISSUE_2D, tiny=True)
    samples = build_samples(registry.TISSUE_2D, spec, seed=10_000_123)
    assert samples and samples[0][0].shape == (1, *spec.patch_size)
    x = torch.from_numpy(np.stack([s[0] for s in samples]))
    y = torch.from_numpy(np.stack([s[1] for s in samples]))
    torch.manual_seed(0)
    model = registry.build_torch_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    task = TASKS[registry.TISSUE_2D]
    losses = []
    for _ in range(30):
        loss, _ = task.loss(model, (x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3]), losses


def test_training_loop_runs_and_exports(tmp_path) -> None:
    from osteoscan.train.loop import TrainConfig, train

    result = train(TrainConfig(model=registry.BMD_REGRESSOR, out_dir=tmp_path, steps=2, workers=0,
                               device="cpu", tiny=True, val_cases=1, log_every=1))
    assert result.steps == 2
    assert result.spec is not None and (tmp_path / "bmd_regressor_tiny.onnx").is_file()
    assert "mae" in result.val_metrics
    again = registry.get_spec("bmd_regressor_tiny", tmp_path)
    assert again.training["steps"] == 2 and again.sha256 == result.spec.sha256
    assert (tmp_path / "bmd_regressor_tiny.log.jsonl").read_text().count("\n") >= 3


def test_degraded_mask_stays_near_the_truth() -> None:
    rng = np.random.default_rng(0)
    m = np.zeros((64, 64, 64), dtype=bool)  # a lumbar vertebra's size at 1.25 mm
    m[20:44, 12:52, 14:50] = True
    dices = []
    for _ in range(20):
        g = degrade_mask(m, rng, spacing_mm=1.25, coarse_mm=3.0)
        dices.append(2 * (g & m).sum() / (g.sum() + m.sum()))
    # coarse-like: clearly imperfect, usually close, always overlapping (a cut can leave a sliver)
    assert 0.6 < np.median(dices) < 0.95
    assert min(dices) > 0.1


def test_batchnorm_statistics_are_re_estimated_as_the_plain_average_of_the_batches() -> None:
    from osteoscan.train.loop import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    batches = [torch.randn(2, 1, 4, 4, 4) * s + s for s in (1.0, 3.0, 5.0)]
    used = recalibrate_batchnorm(model, iter(batches), n_batches=3, amp=False)
    assert used == 3 and not model.training
    bn = model[1]
    with torch.no_grad():
        per_batch_means = torch.stack([model[0](b).mean(dim=(0, 2, 3, 4)) for b in batches])
    # cumulative average over the three batches, not an exponential moving average
    torch.testing.assert_close(bn.running_mean, per_batch_means.mean(dim=0), rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.1  # restored
    # without batch norm nothing is done
    assert recalibrate_batchnorm(torch.nn.Conv3d(1, 1, 1), iter(batches), 3, amp=False) == 0


def test_a_batchnorm_model_starts_from_instance_norm_weights_but_not_from_a_different_network() -> None:
    from osteoscan.train.loop import _load_initial_state

    spec = registry.recipe(registry.SPINE_COARSE, tiny=True)
    bn_model = registry.build_torch_model(spec)
    in_spec = spec.replace(arch_params={**spec.arch_params, "norm": "instance"})
    in_state = registry.build_torch_model(in_spec).state_dict()
    _load_initial_state(bn_model, in_state)  # convolutions and affine parameters carry over
    key = next(k for k in in_state if k.endswith("conv1.weight"))
    torch.testing.assert_close(bn_model.state_dict()[key], in_state[key])
    wrong = dict(in_state)
    wrong.pop(key)
    with pytest.raises(ValueError, match="does not fit"):
        _load_initial_state(bn_model, wrong)
