"""CAM methods by name (formulas: docs/methods.md; adding one: docs/extending.md#add-a-method).

Importing this package is cheap: :data:`CATALOGUE` names every method, the module that defines it
and the defaults of the options it reads, so the command line can list methods and show defaults
without torch. A method's module (and torch, the kernels) is imported when the method is first
looked up in :data:`METHODS` or by :func:`get_method`. The base classes are in
:mod:`camonnx.methods.base`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from camonnx.errors import unknown_name_error

if TYPE_CHECKING:
    from camonnx.methods.base import CamMethod


@dataclass(frozen=True)
class MethodEntry:
    """Where a method lives, and the defaults of the ``explain`` options it reads."""

    module: str  # in camonnx.methods
    defaults: dict[str, Any] = field(default_factory=dict)


#: Every registered method. A new method is a new module plus one line here.
CATALOGUE: dict[str, MethodEntry] = {
    "ablationcam": MethodEntry("ablationcam"),
    "eigencam": MethodEntry("eigencam"),
    "eigengradcam": MethodEntry("eigengradcam"),
    "elementwise": MethodEntry("elementwise"),
    "gradcam": MethodEntry("gradcam"),
    "gradcam++": MethodEntry("gradcampp"),
    "hirescam": MethodEntry("hirescam"),
    "layercam": MethodEntry("layercam"),
    "randomcam": MethodEntry("randomcam"),
    "rise": MethodEntry("rise", {"masks": 5000, "cells": 8, "keep": 0.5}),
    "scorecam": MethodEntry("scorecam"),
    "smoothgradcam++": MethodEntry("smoothgradcampp", {"samples": 25, "noise": 0.15}),
    "xgradcam": MethodEntry("xgradcam"),
}


class _Methods(Mapping):
    """name → method class, each module imported on first use."""

    def __getitem__(self, name: str) -> type[CamMethod]:
        from camonnx.methods.base import REGISTERED

        entry = CATALOGUE[name]
        if name not in REGISTERED:
            importlib.import_module(f"camonnx.methods.{entry.module}")
        if name not in REGISTERED:
            raise LookupError(f"camonnx.methods.{entry.module} registers no method {name!r}: "
                              "give its class that name and the @register decorator.")
        return REGISTERED[name]

    def __iter__(self) -> Iterator[str]:
        return iter(CATALOGUE)

    def __len__(self) -> int:
        return len(CATALOGUE)


METHODS: Mapping[str, type[CamMethod]] = _Methods()


def get_method(name: str) -> CamMethod:
    """A method instance by name (case, "-" and "_" ignored); an unknown name lists the known
    ones."""
    aliases = {m.replace("-", "").replace("_", ""): m for m in CATALOGUE}
    key = name if name in CATALOGUE else aliases.get(name.lower().replace("_", "").replace("-", ""))
    if key is None:
        raise unknown_name_error("method", name, CATALOGUE,
                                 f"Known methods: {', '.join(sorted(CATALOGUE))}.")
    return METHODS[key]()
