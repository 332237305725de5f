"""The report's model card: what model a run explained, stored beside the run as ``model.json``.

The commands that write a run folder (``explain``, ``animate --report``, ``ybroad --report``)
call :func:`write_model_card` with the explainer they loaded, so the page can be built later
without the model. A run folder without ``model.json`` (written from Python, or by a command
that does not store it) gets its card computed when the page is made (:func:`model_card_for`):
the model named by the run's JSON files is loaded without the parity check
(``Explainer(path, check_parity=False)``) and its own recipe file is read, so preprocessing
flags given to the original run are then unknown, and the card says so.

The card holds the model file (path, size, sha256), the input (name, layout, H×W, opset), the
preprocessing (:func:`camonnx.presets.describe` and the recipe's fields), the class-label count,
the tap mode and the taps table as ``camonnx layers`` prints it (index, name, ops, shape, stride,
channels; the suggested layer marked).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from camonnx.errors import InputError
from camonnx.writer import write_text

#: File name of the card inside a run folder.
CARD_NAME = "model.json"
CARD_FORMAT = "camonnx-model-card"


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_card(explainer, tap: str = "block", recorded: bool = True) -> dict:
    """The card of a loaded :class:`~camonnx.Explainer` (see the module docstring).
    ``recorded``: whether the preprocessing is the run's own (False when recomputed later)."""
    from camonnx.presets import describe

    path = Path(explainer.model_path).resolve()
    spec = explainer.graph.input
    recipe = explainer.preprocess
    return {
        "format": CARD_FORMAT, "version": 1,
        "model": str(path), "file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path),
        "input": {"name": spec.name, "layout": spec.layout, "size": list(recipe.size)},
        "opset": explainer.graph.opset, "output": explainer.graph.output,
        "preprocess": describe(recipe), "recipe": recipe.to_dict(),
        "preprocess_recorded": recorded,
        "labels": len(explainer.labels) if explainer.labels else 0,
        "tap": tap, "suggested": explainer.suggested_layer.index,
        "layers": [layer.to_dict() for layer in explainer.layers],
    }


def write_model_card(explainer, folder: str | os.PathLike, tap: str = "block") -> Path:
    """Write ``folder/model.json`` (atomically) for ``explainer``; returns its path."""
    card = model_card(explainer, tap)
    return write_text(Path(folder) / CARD_NAME, json.dumps(card, indent=1))


def read_card(path: Path) -> dict | None:
    """The card stored at ``path``, or None when there is none (a broken one is an error)."""
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read the model card {path}: {exc}. Delete it, and `camonnx "
                         f"report` recomputes it from the model.") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise InputError(f"{path} is not a camonnx model card. Delete it, and `camonnx report` "
                         f"recomputes it from the model.")
    return card


def model_card_for(folders: list[Path], model: str | None, layers: list[str]) -> dict | None:
    """The card of a run: the first ``model.json`` among ``folders``, else computed from
    ``model`` (the path the run's JSON names) with the tap mode whose names cover ``layers``;
    None when no model is named or the file is gone (the page then says so)."""
    for folder in folders:
        card = read_card(folder / CARD_NAME)
        if card is not None:
            return card
    if not model or not Path(model).is_file():
        return None
    from camonnx.explainer import Explainer

    card = None
    for tap in ("block", "conv"):
        explainer = Explainer(model, tap=tap, check_parity=False)
        card = model_card(explainer, tap, recorded=False)
        if set(layers) <= {layer["name"] for layer in card["layers"]}:
            break
    return card
