"""The typed error hierarchy shown to users.

Every error carries a message that names the offending file/series/value and what to do about it.
The CLI turns ``OsteoscanError`` subclasses into a one-line message and an exit code; anything else
is an internal error (exit code 1) and is logged with a traceback.
"""

from __future__ import annotations


class OsteoscanError(Exception):
    """Base class of every error osteoscan raises on purpose."""

    exit_code: int = 1


class InputError(OsteoscanError):
    """The input cannot be read (missing, empty, corrupt, unreadable, wrong format)."""

    exit_code = 2


class UnsupportedSeriesError(InputError):
    """The input is readable but is not something osteoscan analyses (e.g. MR, a localizer)."""


class GeometryError(InputError):
    """The input's geometry is inconsistent (mixed sizes, unresolvable tilt, no usable slices)."""


class ModelError(OsteoscanError):
    """A model artifact is missing, corrupt (sha256 mismatch) or does not match its spec."""


class BackendError(OsteoscanError):
    """An inference back-end or device is unavailable or failed."""
