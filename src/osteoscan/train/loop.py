"""The training loop shared by the four models: streamed phantom data, AMP, logging, export.

One process trains one model. Training stops at ``steps`` or after ``minutes`` (whichever comes
first: device time is the scarce resource), with a cosine learning-rate decay over that progress.
Metrics go to ``<out>/<name>.log.jsonl`` (one JSON object per line); the state dict is saved to
``<out>/checkpoint_<name>.pt`` every few minutes (for resuming; never shipped), and the final model
is exported to ONNX + state dict + spec by :func:`osteoscan.train.export.export_model`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osteoscan.models.registry import build_torch_model, recipe
from osteoscan.models.spec import ModelSpec
from osteoscan.train.datasets import TRAIN_SEED_BASE, PhantomSampleStream, validation_samples
from osteoscan.train.export import export_model
from osteoscan.train.tasks import TASKS, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    model: str
    out_dir: Path
    steps: int = 1000
    minutes: float | None = None
    batch_size: int | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    workers: int = 4
    device: str = "auto"
    seed: int = 0
    tiny: bool = False
    log_every: int = 10
    checkpoint_minutes: float = 3.0
    init_from: Path | None = None
    val_cases: int = 4
    export: bool = True
    amp: bool = True
    #: batches over which batch-norm running statistics are re-estimated after training
    bn_batches: int = 100
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    spec: ModelSpec | None
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    val_metrics: dict[str, float]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` and (unless ``export`` is off) export it into ``config.out_dir``."""
    task: Task = TASKS[config.model]
    spec = recipe(config.model, tiny=config.tiny)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_torch_model(spec)
    if config.init_from:
        state = torch.load(config.init_from, map_location="cpu", weights_only=True)
        _load_initial_state(model, {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
        log.info("initialised %s from %s", spec.name, config.init_from)
    model.to(device)
    batch_size = config.batch_size or (2 if config.tiny else task.batch_size)
    stream = PhantomSampleStream(
        task.name, spec, seed_base=TRAIN_SEED_BASE + 1_000_000 * config.seed, buffer_size=task.buffer_size
    )
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,
        prefetch_factor=4 if config.workers > 0 else None,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log_path = out / f"{spec.name}.log.jsonl"
    t0 = time.monotonic()
    last_ckpt = t0
    first_loss = last_loss = float("nan")
    running: list[float] = []
    step = 0
    budget_s = config.minutes * 60.0 if config.minutes else None
    warmup = max(1, min(50, config.steps // 20))
    model.train()
    if task.freeze_batchnorm and config.init_from:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        log.info("%s: batch-norm statistics frozen (running statistics from %s)", spec.name, config.init_from)
    with open(log_path, "a") as logf:
        it = iter(loader)
        while step < config.steps:
            elapsed = time.monotonic() - t0
            progress = step / config.steps
            if budget_s:
                progress = max(progress, elapsed / budget_s)
            if progress >= 1.0:
                break
            lr = config.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = _to_device(next(it), device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss, stats = task.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            value = float(loss.detach())
            if not math.isfinite(value):
                log.warning("non-finite loss at step %d; batch skipped", step)
            else:
                running.append(value)
            if step == 0:
                first_loss = value
            step += 1
            if step % config.log_every == 0 or step == config.steps:
                rec = {"step": step, "loss": float(np.mean(running)) if running else None, "lr": lr,
                       "elapsed_s": round(time.monotonic() - t0, 1), **{k: float(v) for k, v in stats.items()}}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log.info("%s step %d loss %.4f lr %.2e (%.0f s)", spec.name, step, rec["loss"] or float("nan"), lr, rec["elapsed_s"])
                last_loss = rec["loss"] if rec["loss"] is not None else last_loss
                running = []
            if time.monotonic() - last_ckpt > config.checkpoint_minutes * 60:
                torch.save(model.state_dict(), out / f"checkpoint_{spec.name}.pt")
                last_ckpt = time.monotonic()
        if running:
            last_loss = float(np.mean(running))
        seconds = time.monotonic() - t0
        if not task.freeze_batchnorm:
            n = recalibrate_batchnorm(model, (_to_device(b, device)[0] for b in it), config.bn_batches, use_amp)
            if n:
                log.info("%s: batch-norm statistics re-estimated over %d batches", spec.name, n)
        model.eval()
        val = task.validate(model, validation_samples(task.name, spec, config.val_cases), device)
        logf.write(json.dumps({"step": step, "final": True, "seconds": round(seconds, 1), "val": val}) + "\n")
    log.info("%s: %d steps in %.0f s, validation %s", spec.name, step, seconds, val)
    final_spec = None
    if config.export:
        training = {
            "phantom_generator": _phantom_version(),
            "train_seed_base": TRAIN_SEED_BASE + 1_000_000 * config.seed,
            "steps": step,
            "seconds": round(seconds, 1),
            "batch_size": batch_size,
            "lr": config.lr,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "amp": use_amp,
            "init_from": str(config.init_from) if config.init_from else None,
            "torch": torch.__version__,
        }
        final_spec = export_model(model, spec, out, training=training, metrics={"validation": val})
    return TrainResult(final_spec, step, seconds, first_loss, last_loss, val)


_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _load_initial_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model``; the only keys allowed to be missing are batch-norm statistics
    (starting a batch-norm model from an instance-norm one: convolutions and affine norm parameters
    carry over, the statistics are learnt)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.endswith(_BN_BUFFERS)]
    if bad or unexpected:
        raise ValueError(f"initial state does not fit the model: missing {bad[:5]}, unexpected {list(unexpected)[:5]}")
    if missing:
        log.info("initial state has no batch-norm statistics (%d buffers): learnt from scratch", len(missing))


def recalibrate_batchnorm(model: torch.nn.Module, inputs: Any, n_batches: int, amp: bool) -> int:
    """Re-estimate every batch-norm layer's running statistics as the plain average over
    ``n_batches`` input batches with the final weights ("precise BN"), returning how many were used.

    The exponential moving average kept during training mixes statistics of earlier weights; at
    inference (folded into the convolutions) the statistics must match the weights that ship.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or n_batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    used = 0
    with torch.no_grad():
        for x in inputs:
            with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=amp and x.device.type == "cuda"):
                model(x)
            used += 1
            if used >= n_batches:
                break
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return used


def _phantom_version() -> str:
    try:
        from osteoscan.phantom import GENERATOR_VERSION  # type: ignore[attr-defined]
    except ImportError:
        return "unknown"
    return str(GENERATOR_VERSION)


def config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
