"""Model registry: the four cascade models by name, their recipes, and loaders.

* :func:`get_spec` / :func:`list_specs` read the JSON sidecars of the shipped (or a given) weights
  folder and check each ONNX file's sha256; no torch needed.
* :func:`recipe` is the training-time definition of each model (architecture, input geometry,
  normalisation) from which a spec is filled in at export; ``tiny=True`` gives the small variants
  used by tests and CPU smoke runs.
* :func:`build_torch_model` / :func:`load_torch_model` create the ``nn.Module`` by architecture
  name; torch is imported lazily inside them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from osteoscan.errors import ModelError
from osteoscan.labels import NUM_SPINE_CLASSES, Tissue, VertebraLevel, VertebraPart
from osteoscan.models.spec import ModelSpec, Normalisation

log = logging.getLogger(__name__)

#: Folder of the weights shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

SPINE_COARSE = "spine_coarse"
VERTEBRA_FINE = "vertebra_fine"
BMD_REGRESSOR = "bmd_regressor"
TISSUE_2D = "tissue_2d"
MODEL_NAMES: tuple[str, ...] = (SPINE_COARSE, VERTEBRA_FINE, BMD_REGRESSOR, TISSUE_2D)

#: Architecture keys known to :func:`build_torch_model`.
ARCHITECTURES: tuple[str, ...] = ("res_unet3d", "unet3d", "unet2d", "densenet3d")

SPINE_LABEL_NAMES: tuple[str, ...] = ("background",) + tuple(v.name for v in VertebraLevel)
PART_LABEL_NAMES: tuple[str, ...] = tuple(p.name.lower() for p in VertebraPart)
TISSUE_LABEL_NAMES: tuple[str, ...] = tuple(t.name.lower() for t in Tissue)


def get_spec(name: str, weights_dir: str | Path | None = None, verify: bool = True) -> ModelSpec:
    """The spec of model ``name`` from ``weights_dir`` (default: the shipped weights).

    Raises:
        ModelError: no such spec, unreadable spec, or (``verify``) ONNX file missing/sha256 mismatch.
    """
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = folder / f"{name}.json"
    if not path.is_file():
        available = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        raise ModelError(
            f"no model spec {path}; models in {folder}: {', '.join(available) or 'none'}. "
            f"Train and export it with `osteoscan train {name}` or pass the right weights folder"
        )
    spec = ModelSpec.from_json(path)
    if spec.name != name:
        raise ModelError(f"spec file {path} describes model {spec.name!r}, not {name!r}; rename or re-export it")
    if verify:
        spec.verify()
    return spec


def list_specs(weights_dir: str | Path | None = None, verify: bool = False) -> list[ModelSpec]:
    """Every spec in ``weights_dir`` (default: shipped weights), sorted by name."""
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    if not folder.is_dir():
        return []
    # <name>.int8.json beside a model is its int8 artifact's spec (osteoscan.runtime.int8), not a ModelSpec
    return [get_spec(p.stem, folder, verify=verify) for p in sorted(folder.glob("*.json")) if not p.stem.endswith(".int8")]


# ------------------------------------------------------------------------------------ recipes
def _recipe_coarse(tiny: bool) -> dict[str, Any]:
    return dict(
        architecture="res_unet3d",
        # batch norm (folded into the convolutions at export): the output does not depend on the
        # window, so the pipeline gives the model the whole scan at 4 mm in one call instead of
        # sliding 3 mm training patches (version 0.1.0: instance norm, 3 mm, ~3x the voxels)
        arch_params={"channels": [4, 8] if tiny else [8, 16, 32, 64, 128], "norm": "batch"},
        in_channels=1,
        out_channels=NUM_SPINE_CLASSES,
        input_names=("image",),
        output_names=("logits",),
        input_spacing_mm=(4.0, 4.0, 4.0) if not tiny else (6.0, 6.0, 6.0),
        # 448 mm of z (a chest or an abdomen with its neighbours) x 512 mm (any field of view)
        patch_size=(16, 32, 32) if tiny else (112, 128, 128),
        size_divisor=2 if tiny else 16,
        normalisation=Normalisation(hu_min=-500.0, hu_max=1500.0),
        label_names=SPINE_LABEL_NAMES,
        output_semantics={
            "logits": "per-voxel class scores (softmax): 0 background, c = osteoscan.labels.VertebraLevel(c)"
        },
        window_invariant=True,
    )


def _recipe_fine(tiny: bool) -> dict[str, Any]:
    return dict(
        architecture="unet3d",
        arch_params={"channels": [4, 8] if tiny else [12, 24, 48, 96]},
        in_channels=2,
        out_channels=len(VertebraPart),
        input_names=("image",),
        output_names=("logits",),
        input_spacing_mm=(2.5, 2.5, 2.5) if tiny else (1.25, 1.25, 1.25),
        patch_size=(16, 24, 24) if tiny else (64, 96, 96),
        size_divisor=2 if tiny else 8,
        normalisation=Normalisation(hu_min=-500.0, hu_max=1500.0),
        label_names=PART_LABEL_NAMES,
        output_semantics={
            "image": "ch0 normalised CT crop centred on the vertebra centroid; ch1 binary coarse mask of "
            "the target vertebra",
            "logits": "per-voxel scores of osteoscan.labels.VertebraPart for the TARGET vertebra only",
        },
    )


def _recipe_bmd(tiny: bool) -> dict[str, Any]:
    return dict(
        architecture="densenet3d",
        arch_params={"stem_channels": 4, "growth": 4, "block_layers": [1, 1]}
        if tiny
        else {"stem_channels": 16, "growth": 12, "block_layers": [3, 4, 6]},
        in_channels=2,
        out_channels=2,
        input_names=("image",),
        output_names=("bmd", "sigma"),
        input_spacing_mm=(2.5, 2.5, 2.5) if tiny else (1.25, 1.25, 1.25),
        patch_size=(8, 16, 16) if tiny else (32, 64, 64),
        size_divisor=4 if tiny else 8,
        # wide enough to keep trabecular contrast and the fat/muscle/air references unclipped
        normalisation=Normalisation(hu_min=-1000.0, hu_max=1400.0),
        label_names=(),
        output_semantics={
            "image": "ch0 normalised CT crop centred on the vertebral-body centroid; ch1 body mask",
            "bmd": "trabecular BMD, mg/cm3 (QCT-equivalent, calcium hydroxyapatite)",
            "sigma": "predicted 1-sigma uncertainty of bmd, mg/cm3 (Gaussian NLL)",
        },
        dynamic_spatial=False,
    )


def _recipe_tissue(tiny: bool) -> dict[str, Any]:
    return dict(
        architecture="unet2d",
        arch_params={"channels": [4, 8] if tiny else [16, 32, 64, 96, 128]},
        in_channels=1,
        out_channels=len(Tissue),
        input_names=("image",),
        output_names=("logits",),
        input_spacing_mm=(6.0, 6.0) if tiny else (1.5, 1.5),
        patch_size=(32, 32) if tiny else (320, 320),
        size_divisor=2 if tiny else 16,
        normalisation=Normalisation(hu_min=-400.0, hu_max=400.0),
        label_names=TISSUE_LABEL_NAMES,
        output_semantics={
            "image": "axial slice resampled in-plane, centred on the image centre, padded with air",
            "logits": "per-pixel scores of osteoscan.labels.Tissue",
        },
    )


_RECIPES = {
    SPINE_COARSE: _recipe_coarse,
    VERTEBRA_FINE: _recipe_fine,
    BMD_REGRESSOR: _recipe_bmd,
    TISSUE_2D: _recipe_tissue,
}


#: Version of the architecture/preprocessing each recipe describes (a new one when they change).
RECIPE_VERSIONS: dict[str, str] = {SPINE_COARSE: "0.2.0"}


def recipe(name: str, tiny: bool = False, version: str | None = None) -> ModelSpec:
    """The untrained spec of model ``name`` (no files, no sha256): what training starts from."""
    try:
        make = _RECIPES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None
    fields = make(tiny)
    version = version or RECIPE_VERSIONS.get(name, "0.1.0")
    return ModelSpec(name=name + ("_tiny" if tiny else ""), version=version, **fields)


# ------------------------------------------------------------------------------------ torch
def build_torch_model(spec: ModelSpec):  # -> torch.nn.Module
    """A freshly initialised ``nn.Module`` of ``spec.architecture`` with ``spec.arch_params``."""
    p = dict(spec.arch_params)
    if spec.architecture in ("res_unet3d", "unet3d", "unet2d"):
        from osteoscan.models.unet import UNet

        return UNet(
            dim=2 if spec.architecture == "unet2d" else 3,
            in_channels=spec.in_channels,
            out_channels=spec.out_channels,
            channels=p["channels"],
            residual=spec.architecture == "res_unet3d",
            norm=p.get("norm", "instance"),
        )
    if spec.architecture == "densenet3d":
        from osteoscan.models.densenet3d import DenseNet3d

        return DenseNet3d(in_channels=spec.in_channels, **p)
    raise ModelError(
        f"spec {spec.name} names architecture {spec.architecture!r}; known: {', '.join(ARCHITECTURES)}"
    )


def load_torch_model(spec: ModelSpec, device: str = "cpu"):  # -> torch.nn.Module in eval mode
    """Build the module and load the spec's torch state dict (``torch_state_file``).

    Raises:
        ModelError: the spec has no state file, or it does not fit the architecture.
    """
    import torch

    path = spec.torch_state_path
    if path is None or not path.is_file():
        raise ModelError(
            f"spec {spec.name} has no PyTorch state file ({path}); use an ONNX back-end or retrain"
        )
    model = build_torch_model(spec)
    state = torch.load(path, map_location=device, weights_only=True)
    # shipped state dicts are stored in float16 to halve their size; the module runs in float32
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"state dict {path} does not fit architecture {spec.architecture}: {exc}") from exc
    return model.to(device).eval()
