"""osteoscan: opportunistic bone-density, fracture and body-composition screening on routine CT."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
