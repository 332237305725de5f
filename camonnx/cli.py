"""The ``camonnx`` command line: a thin layer over the library.

Every user error (bad file, bad layer, bad option) prints ``Error: …`` and exits with code 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from camonnx.errors import CamonnxError
from camonnx.methods import CATALOGUE
from camonnx.presets import PRESETS
from camonnx.writer import check_writable


class UserError(click.ClickException):
    exit_code = 2


def _friendly_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CamonnxError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # unwritable output and the like
            raise UserError(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": ")) from None
    return wrapper


TAP_OPTION = click.option("--tap", type=click.Choice(["block", "conv"]), default="block",
                          show_default=True,
                          help="What a layer is: block, a conv's output after its BN/activation/"
                               "residual chain; conv, the raw conv output. Layer indices follow "
                               "it (see `camonnx layers --tap`).")
PARITY_OPTION = click.option("--parity-check/--no-parity-check", "check_parity", default=True,
                             show_default=True,
                             help="At load, check the torch mirror against ONNX Runtime on a probe "
                                  "input (the gradients' guarantee). Turn it off only to inspect a "
                                  "model that fails it.")
MODEL_ARG = click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
OUTPUT_OPTION = click.option("--output", default=None, metavar="NAME",
                             help="The class output to explain, for a model with several outputs "
                                  "(a graph output's or a tensor's name; default: the first that "
                                  "holds one score vector per image).")


# --- preprocessing flags ---------------------------------------------------------------------

def _numbers(ctx, param, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"give 1 or 3 comma-separated numbers (one per channel, in the "
                                 f"model's channel order), e.g. 0.485,0.456,0.406; got {value!r}.") from None


def _scale(ctx, param, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        top, _, bottom = value.partition("/")
        return float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"give a positive number or a fraction such as 1/255 or 1/127.5; "
                                 f"got {value!r}.") from None


def _size(ctx, param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        dims = [int(v) for v in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2):
        raise click.BadParameter(f"give the model's input size as S or H,W (e.g. 224 or 240,320); "
                                 f"got {value!r}.")
    return (dims[0], dims[-1])


def _resize(ctx, param, value: str | None) -> int | str | None:
    if value is None or value.lower() == "none":
        return None if value is None else "none"
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"give the shorter side in pixels (e.g. 256) or 'none'; "
                                 f"got {value!r}.") from None


_PREPROCESSING_OPTIONS = (
    click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                 help="How the model was trained to see images: torchvision (RGB, x/255, ImageNet "
                      "mean/std, 256 → crop 224), tf (Keras/TF: RGB in [-1, 1], 224), caffe (BGR, "
                      "0–255 minus the ImageNet mean pixel, 224), inception (like tf at 299). "
                      "Default: the model's recipe file, else torchvision.", ),
    click.option("--mean", callback=_numbers, metavar="M|M1,M2,M3",
                 help="Subtracted per channel after --scale (in the model's channel order)."),
    click.option("--std", callback=_numbers, metavar="S|S1,S2,S3",
                 help="Divides per channel after the mean (non-zero)."),
    click.option("--scale", callback=_scale, metavar="F",
                 help="Multiplies the 0–255 pixels first, e.g. 1/255 (→ [0, 1]) or 1 (0–255)."),
    click.option("--channel-order", type=click.Choice(["RGB", "BGR"], case_sensitive=False),
                 default=None, help="The model's channel order: RGB or BGR."),
    click.option("--size", callback=_size, metavar="S|H,W",
                 help="The crop fed to the model (a model with a fixed input size sets it)."),
    click.option("--resize", callback=_resize, metavar="N|none",
                 help="Resize the shorter side to N before the centre crop; none: resize straight "
                      "to --size (aspect ratio not kept)."),
    click.option("--interpolation", type=click.Choice(["bilinear", "bicubic"]), default=None,
                 help="Resampling of the resize."),
    click.option("--labels", type=click.Path(path_type=Path), default=None, metavar="FILE",
                 help="Class names, one per line in the model's output order (default: the "
                      "recipe file's)."),
)
_FIELDS = ("mean", "std", "scale", "channel_order", "size", "resize", "interpolation")


@dataclass(frozen=True)
class PreprocessFlags:
    """The preprocessing flags of one command: a preset, single fields over it, a labels file."""

    preset: str | None
    fields: dict
    labels: Path | None

    @property
    def given(self) -> bool:
        """Whether any preprocessing (not labels) was asked for."""
        return self.preset is not None or bool(self.fields)

    def recipe(self, model: Path | None):
        """The Preprocess the flags describe: the preset (else the model's recipe file, else
        torchvision) with the given fields replaced."""
        from camonnx.recipe import load_recipe
        from camonnx.presets import preset, with_overrides

        if self.preset is not None:
            base = preset(self.preset)
        else:
            if model is None:
                from camonnx.models import default_model
                model = default_model()
            base = load_recipe(model)[0]
        fields = {k: None if k == "resize" and v == "none" else v for k, v in self.fields.items()}
        return with_overrides(base, **fields)

    def load(self, model: Path | None, preprocess_always: bool = False, **kwargs):
        """The Explainer of ``model`` with these flags (``preprocess=`` when given, or always with
        ``preprocess_always``), refusing a --size that the model's fixed input size overrides."""
        from camonnx.errors import InputError
        from camonnx.explainer import Explainer

        preprocess = self.recipe(model) if self.given or preprocess_always else None
        explainer = Explainer(model, preprocess=preprocess, labels=self.labels, **kwargs)
        size = self.fields.get("size")
        if size is not None and tuple(explainer.preprocess.size) != tuple(size):
            h, w = explainer.preprocess.size
            raise InputError(f"--size {size[0]},{size[1]} does not fit {explainer.model_path.name}: "
                             f"its input is fixed at {h}×{w}. Leave --size out.")
        return explainer


def preprocessing_options(fn):
    """Add the preprocessing flags (--preset, --mean, --std, --scale, --channel-order, --size,
    --resize, --interpolation, --labels) to a command; it receives them as ``preprocessing``,
    one :class:`PreprocessFlags`."""
    @functools.wraps(fn)
    def wrapper(*args, preset, labels, **kwargs):
        fields = {name: kwargs.pop(name) for name in _FIELDS}
        if fields["channel_order"] is not None:
            fields["channel_order"] = fields["channel_order"].upper()
        given = {k: v for k, v in fields.items() if v is not None}
        return fn(*args, preprocessing=PreprocessFlags(preset, given, labels), **kwargs)
    for option in reversed(_PREPROCESSING_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="camonnx")
@click.option("-v", "--verbose", is_flag=True, help="Log what camonnx is doing.")
def main(verbose: bool) -> None:
    """Explain any ONNX CNN, every conv layer at once.

    MODEL defaults to the bundled ImageNet-pretrained EfficientNet-Lite0 (exported on first use
    and cached), IMAGE to the bundled cat photo.
    """
    _show_log(click.get_current_context(), verbose)


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes (click's test
    runner swaps it per invocation)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_log(ctx: click.Context, verbose: bool) -> None:
    """Print the "camonnx" logger's warnings (with -v also its info) on stderr for this command;
    the handler and the logger's level are restored when the command ends."""
    logger = logging.getLogger("camonnx")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("camonnx: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    level = logger.level
    if verbose:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)
    ctx.call_on_close(restore)


REPORT_OPTION = click.option("--report", is_flag=True,
                             help="Also write OUT/index.html: one self-contained page (opens from "
                                  "file://, no network) joining the maps, curves and manifest.")


def maybe_report(run_dir: Path, report: bool, explainer=None, tap: str = "block") -> None:
    """With ``--report``, write the run folder's HTML page (:func:`camonnx.report_page.write_report`)
    and say where it is; given the run's ``explainer`` (and ``tap``), first its model card
    (``model.json``: the preprocessing as used, the taps table), which the page shows."""
    if report:
        from camonnx.report_page import write_report

        if explainer is not None:
            from camonnx.report_model import write_model_card

            write_model_card(explainer, run_dir, tap)
        click.echo(f"Wrote {write_report(run_dir)}")


def model_options(fn):
    """The options of every command that loads a model and explains with it: --tap, --device,
    the preprocessing flags (:func:`preprocessing_options`), --output and --parity-check."""
    for option in (PARITY_OPTION, OUTPUT_OPTION, preprocessing_options, DEVICE_OPTION, TAP_OPTION):
        fn = option(fn)
    return fn


@main.command()
@MODEL_ARG
@TAP_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the layers as JSON.")
@OUTPUT_OPTION
@PARITY_OPTION
@_friendly_errors
def layers(model: Path | None, tap: str, as_json: bool, output: str | None,
           check_parity: bool) -> None:
    """List the conv layers (taps) of MODEL with their shapes and strides."""
    from camonnx.explainer import Explainer

    explainer = Explainer(model, tap=tap, output=output, check_parity=check_parity)
    suggested = explainer.suggested_layer.index
    if as_json:
        rows = [dict(layer.to_dict(), suggested=layer.index == suggested) for layer in explainer.layers]
        click.echo(json.dumps({"model": str(explainer.model_path), "input": list(explainer.preprocess.size),
                               "layout": explainer.graph.input.layout, "layers": rows}, indent=2))
        return
    click.echo(_layer_table(explainer, suggested))


def _layer_table(explainer, suggested: int) -> str:
    header = ("#", "name", "ops", "shape (K,h,w)", "stride", "channels")
    rows = [(f"{layer.index}{'*' if layer.index == suggested else ''}", layer.name,
             "+".join(layer.ops), "×".join(str(d) for d in layer.shape),
             f"{layer.stride:g}", str(layer.channels)) for layer in explainer.layers]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    spec = explainer.graph.input
    title = (f"{explainer.model_path.name}: {len(rows)} layers, input {spec.layout} "
             f"{explainer.preprocess.size[0]}×{explainer.preprocess.size[1]}, opset {explainer.graph.opset}")
    footer = f"* suggested layer: {explainer.suggested_layer.name}"
    return "\n".join([title, line(header), *map(line, rows), footer])


def split_inputs(inputs: tuple[str, ...]) -> tuple[Path | None, list[str]]:
    """``[MODEL.onnx] [IMAGE …]`` → (model or None, images); defaults applied by the caller."""
    models = [p for p in inputs if p.lower().endswith(".onnx")]
    if len(models) > 1:
        raise UserError(f"Give one model, got {len(models)}: {', '.join(models)}.")
    images = [p for p in inputs if not p.lower().endswith(".onnx")]
    return (Path(models[0]) if models else None), images


def parse_layers(value: str) -> str | list[str | int]:
    """'all', 'suggested', or a comma-separated list of layer names or indices."""
    if value in ("all", "suggested"):
        return value
    items: list[str | int] = []
    for item in (v.strip() for v in value.split(",")):
        if item:
            items.append(int(item) if item.lstrip("-").isdigit() else item)
    return items


def parse_targets(values: tuple[str, ...]) -> list[int] | int | None:
    if not values:
        return None
    try:
        targets = [int(v) for v in values]
    except ValueError:
        raise UserError(f"--target takes class indices (integers), got {', '.join(values)}.") from None
    return targets[0] if len(targets) == 1 else targets


METHOD_CHOICE = click.Choice(sorted(CATALOGUE))
METHOD_OPTION = click.option("--method", "-m", type=METHOD_CHOICE, default="gradcam",
                             show_default=True, help="CAM method.")
SMOOTH_DEFAULTS = CATALOGUE["smoothgradcam++"].defaults
RISE_DEFAULTS = CATALOGUE["rise"].defaults


LAYERS_OPTION = click.option("--layers", "-l", default="all", show_default=True,
                             help="'all', 'suggested', or comma-separated layer names/indices "
                                  "(see `camonnx layers`).")
TARGET_OPTION = click.option("--target", "-t", multiple=True,
                             help="Class index to explain (default: the predicted class). Repeat "
                                  "once per image for per-image targets.")
DEVICE_OPTION = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
EXTRAPOLATE_OPTION = click.option("--extrapolate", is_flag=True,
                                  help="Sharpen every map by Gradual Extrapolation through the "
                                       "earlier layers' activations (no extra pass).")
INCLUDE_INPUT_OPTION = click.option("--include-input/--no-include-input", default=False,
                                    show_default=True,
                                    help="With --extrapolate: add the input image as the last "
                                         "step (as the reference). Off by default: the input "
                                         "step multiplies the map by the image's brightness and "
                                         "lowered ROAD on real photos (bench/RESULTS.md).")


@main.command()
@click.argument("inputs", nargs=-1, metavar="[MODEL.onnx] [IMAGE]...")
@METHOD_OPTION
@LAYERS_OPTION
@TARGET_OPTION
@click.option("--normalize", type=click.Choice(["local", "global", "none"]), default="local",
              show_default=True, help="local: per map; global: across all layers of an image.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("camonnx-out"), show_default=True, help="Output directory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of randomcam's weights and smoothgradcam++'s noise.")
@click.option("--no-overlays", is_flag=True, help="Write no overlay PNGs (maps.npz, images.npz, "
                                                  "manifest.json and model.json only).")
@DEVICE_OPTION
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help=f"smoothgradcam++: noisy copies per image  [default: {SMOOTH_DEFAULTS['samples']}]")
@click.option("--noise", type=click.FloatRange(min=0), default=None,
              help="smoothgradcam++: noise level s, σ = s·(max−min) of each image  "
                   f"[default: {SMOOTH_DEFAULTS['noise']}]")
@click.option("--channels", default=None, metavar="I,J,…|topK",
              help="smoothgradcam++: feature-map subset, channel indices for every layer "
                   "(e.g. 0,5,7) or topK (the K largest weights per image and layer).")
@click.option("--region", default=None, metavar="X0,Y0,X1,Y1|MASK",
              help="smoothgradcam++: neuron subset, a box in input pixels (half-open) or a "
                   "boolean mask file (.npy, or an image: nonzero = inside) at the input's or a "
                   "layer's resolution; only its positions contribute to the weights.")
@click.option("--masks", type=click.IntRange(min=1), default=None,
              help=f"rise: random masks per image  [default: {RISE_DEFAULTS['masks']}]")
@click.option("--cells", type=click.IntRange(min=1), default=None,
              help=f"rise: grid cells per side of each low-resolution mask  "
                   f"[default: {RISE_DEFAULTS['cells']}]")
@click.option("--keep", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help=f"rise: probability that a cell is kept  [default: {RISE_DEFAULTS['keep']}]")
@EXTRAPOLATE_OPTION
@INCLUDE_INPUT_OPTION
@TAP_OPTION
@click.option("--compare", is_flag=True,
              help="With --extrapolate: also write compare_*.png, plain vs extrapolated map of the "
                   "deepest selected layer, side by side, per image.")
@REPORT_OPTION
@preprocessing_options
@OUTPUT_OPTION
@PARITY_OPTION
@_friendly_errors
def explain(inputs, method, layers, target, normalize, out, batch_size, seed, no_overlays, device,
            samples, noise, channels, region, masks, cells, keep, extrapolate, include_input, tap, compare, report,
            preprocessing, output, check_parity):
    """Explain IMAGE(s) with MODEL at every selected layer; write overlays, maps.npz, images.npz
    (the crops the model saw), manifest.json and model.json (the model card)."""
    from camonnx.models import default_image
    from camonnx.report_model import write_model_card

    check_extrapolation(extrapolate, include_input)
    if compare and not extrapolate:
        raise UserError("--compare shows plain vs extrapolated maps: add --extrapolate.")
    options = method_options(method, samples=samples, noise=noise, channels=channels, region=region,
                             masks=masks, cells=cells, keep=keep)
    model, images = split_inputs(inputs)
    check_writable(out, folder=True)  # fail before the model loads
    explainer = preprocessing.load(model, device=device, output=output, tap=tap,
                                   check_parity=check_parity)
    images = images or [str(default_image())]
    explanation = explainer.explain(images, method=method, layers=parse_layers(layers),
                                    targets=parse_targets(target), normalize=normalize,
                                    batch_size=batch_size, seed=seed, extrapolate=extrapolate,
                                    include_input=include_input, **options)
    explanation.save(out, overlays=not no_overlays)
    if compare:
        from camonnx.extrapolate import save_comparisons

        save_comparisons(explanation, out)
    write_model_card(explainer, out, tap)
    for i, image in enumerate(images):
        click.echo(f"{image}: {explanation.label(i)}")
    click.echo(f"Wrote {len(explanation.layers)} layer maps × {len(images)} image(s) to {out}")
    maybe_report(out, report)


def check_extrapolation(extrapolate: bool, include_input: bool) -> None:
    """--include-input is a step of Gradual Extrapolation: refuse it without --extrapolate."""
    if include_input and not extrapolate:
        raise UserError("--include-input adds the image as Gradual Extrapolation's last step: "
                        "add --extrapolate (or leave --include-input out).")


#: The method options of `explain`, by the one method that reads them.
METHOD_FLAGS = {"samples": "smoothgradcam++", "noise": "smoothgradcam++",
                "channels": "smoothgradcam++", "region": "smoothgradcam++",
                "masks": "rise", "cells": "rise", "keep": "rise"}


def method_options(method: str, **given) -> dict:
    """The method options that were given, parsed; an error naming the flags that belong to
    another method (:data:`METHOD_FLAGS`)."""
    given = {k: v for k, v in given.items() if v is not None}
    foreign = [k for k in given if METHOD_FLAGS[k] != method]
    if foreign:
        owner = METHOD_FLAGS[foreign[0]]
        flags = ", ".join(f"--{k}" for k in foreign)
        raise UserError(f"{flags} apply to --method {owner} only (got --method {method}).")
    if "channels" in given:
        given["channels"] = parse_channels(given["channels"])
    if "region" in given:
        given["region"] = parse_region(given["region"])
    return given


def parse_channels(value: str) -> str | list[int]:
    """'topK' or comma-separated channel indices."""
    text = value.strip()
    if text.lower().startswith("top"):
        return text
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--channels takes comma-separated channel indices (e.g. 0,5,7) or topK "
                        f"(e.g. top5), got {value!r}.") from None


def parse_region(value: str):
    """'x0,y0,x1,y1' (input pixels) or a mask file: .npy, or an image whose nonzero pixels are in."""
    parts = value.split(",")
    if len(parts) == 4:
        try:
            return tuple(float(v) for v in parts)
        except ValueError:
            pass
    path = Path(value)
    if not path.is_file():
        raise UserError(f"--region takes a box x0,y0,x1,y1 in input pixels or a mask file "
                        f"(.npy or an image); {value!r} is neither.")
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            mask = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UserError(f"Cannot read the region mask {path}: {exc}") from None
        return mask.tolist()  # nested lists: the manifest stores the options as JSON
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return (np.asarray(img.convert("L")) > 0).tolist()
    except UnidentifiedImageError:
        raise UserError(f"Cannot read the region mask {path}: not an image or .npy file.") from None


@main.command()
@click.argument("name")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A local state-dict (.pth) to load instead of random weights.")
@click.option("--exporter", type=click.Choice(["dynamo", "legacy"]), default="dynamo", show_default=True,
              help="torch.onnx exporter: dynamo (torch.export-based) or legacy (TorchScript).")
@click.option("--opset", type=int, default=None, help="ONNX opset (exporter default if omitted).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@_friendly_errors
def export(name: str, out: Path, weights: Path | None, exporter: str, opset: int | None, seed: int) -> None:
    """Export zoo model NAME to OUT.onnx (with its preprocessing recipe beside it).

    NAME: resnet18, resnet50, vgg16, densenet121, mobilenet_v3_large, efficientnet_b0 (random
    weights unless --weights), or efficientnet_lite0 (ImageNet-pretrained).
    """
    from camonnx.models import export_model

    path = export_model(name, out, weights=weights, exporter=exporter, opset=opset, seed=seed)
    click.echo(f"Wrote {path}")


@main.command()
@click.argument("inputs", nargs=-1, metavar="[MODEL.onnx] [IMAGE]...")
@METHOD_OPTION
@click.option("--norm", type=click.Choice(["local", "global", "both"]), default="local",
              show_default=True,
              help="local: each layer's own min-max; global: one min-max over all explained layers "
                   "of the image (early layers look dim); both: side by side.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=5, show_default=True,
              help="Frames (layers) per second.")
@LAYERS_OPTION
@click.option("--every", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Animate every K-th layer (the held last frame always shows the final one).")
@click.option("--hold", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds the last frame (final layer) stays on screen.")
@TARGET_OPTION
@click.option("--out", "-o", default=None,
              help="anim.mp4 (H.264), anim.gif (looping) or frames/ (PNG frames). Default: "
                   "camonnx.mp4. Several images: --out DIR/ writes DIR/<image name>.mp4; a file "
                   "name X.mp4 writes X-<image name>.mp4.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of randomcam's weights and smoothgradcam++'s noise.")
@EXTRAPOLATE_OPTION
@INCLUDE_INPUT_OPTION
@click.option("--report", is_flag=True,
              help="Also write the run folder <out>-report/ beside the output (camonnx.mp4 → "
                   "camonnx-report/): the explanation, model.json and index.html, one "
                   "self-contained page (opens from file://, no network) of all the images.")
@model_options
@_friendly_errors
def animate(inputs, method, norm, fps, layers, every, hold, target, out, batch_size, seed,
            extrapolate, include_input, tap, device, report, preprocessing, output, check_parity):
    """Animate MODEL's explanation of IMAGE(s) through every conv layer (CAManim).

    All frames come from one explanation of every selected layer (one forward and one
    backward); writes an MP4, a looping GIF or a folder of PNG frames. With --report, also
    OUT-report/ beside it (camonnx.mp4 → camonnx-report/): the explanation (maps.npz, images.npz,
    manifest.json, model.json) and index.html, the page of all the images.
    """
    from camonnx.animation import (animate as write_animation, animation_paths, check_output,
                                 explain_for_animation)
    from camonnx.models import default_image
    from camonnx.report_run import animation_report_folder, save_animation_run

    model, images = split_inputs(inputs)
    images = images or [str(default_image())]
    check_extrapolation(extrapolate, include_input)
    paths = animation_paths(out, images)
    for path in paths:  # fail before the model loads
        check_output(path)
    run_dir = animation_report_folder(out) if report else None
    if run_dir is not None:
        check_writable(run_dir, folder=True)
    explainer = preprocessing.load(model, device=device, output=output, tap=tap,
                                   check_parity=check_parity)
    explanation = explain_for_animation(explainer, images, method=method, layers=parse_layers(layers),
                                        targets=parse_targets(target), batch_size=batch_size,
                                        seed=seed, extrapolate=extrapolate,
                                        include_input=include_input)
    for i, (image, path) in enumerate(zip(images, paths)):
        written = write_animation(explanation, path, norm=norm, fps=fps, every=every,
                                  image_index=i, hold_seconds=hold)
        click.echo(f"{image}: {explanation.label(i)} -> {written}")
    if run_dir is not None:
        save_animation_run(explainer, explanation, run_dir, paths, tap, norm=norm, fps=fps)
        maybe_report(run_dir, report)


def parse_metrics(value: str) -> list[str]:
    """'road' or 'deletion,road': metric names of :data:`camonnx.metrics.CATALOGUE`, in order,
    each once; an unknown name or none is a :class:`UserError` listing the known ones."""
    from camonnx.errors import unknown_name_error
    from camonnx.metrics import CATALOGUE as METRICS

    known = ", ".join(sorted(METRICS))
    names = list(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    if not names:
        raise UserError(f"--metric takes comma-separated metric names from: {known}; got {value!r}.")
    for name in names:
        if name not in METRICS:
            raise UserError(f"--metric takes comma-separated metric names: "
                            f"{unknown_name_error('metric', name, METRICS, f'Known metrics: {known}.')}")
    return names


def parse_fractions(value: str) -> tuple[float, ...]:
    """'0.2,0.4,0.6,0.8' → fractions in (0, 1] (an InputError otherwise)."""
    from camonnx.errors import InputError
    from camonnx.road import check_fractions

    try:
        items = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--fractions takes comma-separated numbers in (0, 1], e.g. "
                         f"0.2,0.4,0.6,0.8; got {value!r}.") from None
    return check_fractions(items)


@main.command()
@click.argument("inputs", nargs=-1, metavar="[MODEL.onnx] [IMAGE]...")
@click.option("--method", "-m", "methods", type=METHOD_CHOICE, multiple=True,
              default=("gradcam",), show_default=True,
              help="CAM method; repeat for several (one curve each on the same plot).")
@LAYERS_OPTION
@TARGET_OPTION
@click.option("--fractions", default="0.2,0.4,0.6,0.8", show_default=True,
              help="Removal fractions q (MoRF and LeRF remove round(q·H·W) pixels each).")
@click.option("--trials", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeded trials (tie-breaking and imputation noise); the curve is their mean.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Imputed images per forward pass (and per imputation chunk).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("camonnx-ybroad"), show_default=True,
              help="Output directory for ybroad.csv, ybroad.json and ybroad.png.")
@EXTRAPOLATE_OPTION
@INCLUDE_INPUT_OPTION
@REPORT_OPTION
@model_options
@_friendly_errors
def ybroad(inputs, methods, layers, target, fractions, trials, seed, batch_size, out, extrapolate,
           include_input, tap, device, report, preprocessing, output, check_parity):
    """ybROAD: ROAD faithfulness of every selected layer's map (Kaczmarek et al., 2023).

    For each method, one explanation of every layer, then per layer and image 2 × len(fractions)
    noisy-linear-imputed images (MoRF and LeRF) through the model. Writes OUT/ybroad.csv (one
    row per method and layer), OUT/ybroad.json and OUT/ybroad.png (one curve per method), each
    atomically, and prints the maximum, the layer attaining it, and the mean. With --report,
    also OUT/<method>/ (each method's explanation: one more forward and backward, no overlay
    PNGs), OUT/model.json and OUT/index.html.
    """
    from camonnx.models import default_image
    from camonnx.road_report import plot_curves, write_csv, write_json
    from camonnx.road import ybroad as run_ybroad

    check_extrapolation(extrapolate, include_input)
    qs = parse_fractions(fractions)
    model, images = split_inputs(inputs)
    images = images or [str(default_image())]
    check_writable(out, folder=True)  # fail before the model loads
    explainer = preprocessing.load(model, device=device, output=output, tap=tap,
                                   check_parity=check_parity)
    options = {"extrapolate": True, "include_input": include_input} if extrapolate else {}
    results = []
    for method in dict.fromkeys(methods):
        result = run_ybroad(explainer, images, method=method, layers=parse_layers(layers),
                            fractions=qs, trials=trials, seed=seed, targets=parse_targets(target),
                            batch_size=batch_size, **options)
        results.append(result)
        click.echo(result.summary())
        click.echo(f"  {result.timing_summary()}")
    written = [write_csv(results, out / "ybroad.csv"), write_json(results, out / "ybroad.json"),
               plot_curves(results, out / "ybroad.png")]
    click.echo(f"Wrote {', '.join(str(p) for p in written)}")
    if report:
        from camonnx.report_run import save_method_runs

        save_method_runs(explainer, images, list(dict.fromkeys(methods)), out, tap,
                         layers=parse_layers(layers), targets=parse_targets(target), seed=seed,
                         **options)
        maybe_report(out, report)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@preprocessing_options
@OUTPUT_OPTION
@PARITY_OPTION
@click.option("--force", is_flag=True, help="Replace MODEL's existing recipe file.")
@_friendly_errors
def recipe(model: Path, preprocessing: PreprocessFlags, output: str | None, check_parity: bool,
           force: bool) -> None:
    """Save how MODEL wants its images in MODEL.camonnx.json, once: later commands read it and
    need no flags.

    Start from --preset (torchvision, tf, caffe, inception) and change single values with
    --mean, --std, --scale, --channel-order, --size, --resize, --interpolation; without
    --preset they change the existing recipe (with --force), else the torchvision preset.
    --labels FILE stores the class names (one per line, as many as the model has classes).
    The model is loaded and checked first; a fixed input size replaces the crop size, keeping
    the preset's crop fraction. An existing recipe is replaced only with --force.

    \b
    Examples:
      camonnx recipe keras_mobilenet.onnx --preset tf --labels classes.txt
      camonnx recipe vgg_caffe.onnx --preset caffe
      camonnx recipe my.onnx --preset torchvision --size 256 --resize none
    """
    from camonnx.recipe import load_sidecar, recipe_path, save_recipe
    from camonnx.presets import describe

    target = recipe_path(model)
    old = load_sidecar(model) if target.exists() else None
    if target.exists() and not force:
        raise UserError(f"{target} already exists: pass --force to replace it (or delete it).")
    explainer = preprocessing.load(model, preprocess_always=True, output=output,
                                   check_parity=check_parity)
    extra = {**((old or {}).get("extra") or {}), "written_by": "camonnx recipe"}
    extra.pop("preset", None)
    if preprocessing.preset is not None:
        extra["preset"] = preprocessing.preset
    written = save_recipe(model, explainer.preprocess, explainer.labels, extra)
    click.echo(f"Wrote {written}")
    click.echo(f"  preprocessing: {describe(explainer.preprocess)}")
    labels = explainer.labels
    click.echo(f"  labels: {len(labels)} class names" if labels else
               "  labels: none (class indices are shown; add --labels FILE)")


# Commands in their own modules (they use the options above).
from camonnx import cli_audit, cli_metrics, cli_report, cli_sanity  # noqa: E402

for _module in (cli_metrics, cli_sanity, cli_audit, cli_report):
    main.add_command(_module.command)
