"""The four networks of the cascade: specs, registry, preprocessing, spine level decoding.

Importable without PyTorch: the torch modules (``unet3d``, ``unet2d``, ``densenet3d``) are only
imported by :func:`osteoscan.models.registry.build_torch_model` and the training code.
"""

from osteoscan.models.spec import ModelSpec, Normalisation

__all__ = ["ModelSpec", "Normalisation"]
