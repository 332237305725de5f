"""Errors that camonnx raises for bad input.

Every error a user can cause derives from :class:`CamonnxError` and carries a message that names
the problem and the fix. The CLI turns them into ``Error: …`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class CamonnxError(ValueError):
    """Base class of every user-facing camonnx error."""


class ModelLoadError(CamonnxError):
    """The ONNX file is missing, unreadable, invalid, or not an image classifier."""


class UnsupportedModelError(CamonnxError):
    """The model uses an operator or an attribute form the torch mirror does not implement."""


class ParityError(CamonnxError):
    """The torch mirror and ONNX Runtime disagree on the probe input."""


class InputError(CamonnxError):
    """An image, tensor, target or option given by the user is not usable."""


class DeviceError(CamonnxError):
    """The requested device or execution provider is not available."""


def unknown_name_error(kind: str, name: str, known: Iterable[str], fix: str) -> InputError:
    """An :class:`InputError` for an unknown name, suggesting the closest known names."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return InputError(f"Unknown {kind} {name!r}.{hint} {fix}")
