"""`camonnx sanity`: the model-parameter randomisation and random-logit tests (docs/sanity.md)."""

from __future__ import annotations

from pathlib import Path

import click

from camonnx.cli import (METHOD_CHOICE, REPORT_OPTION, TARGET_OPTION, _friendly_errors,
                         maybe_report, model_options, parse_layers,
                         parse_targets, split_inputs, UserError)
from camonnx.writer import check_writable


def parse_steps(value: str) -> str | list[int]:
    """'auto', 'all', or comma-separated randomisation depths (0 = none)."""
    if value in ("auto", "all"):
        return value
    try:
        depths = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        depths = []
    if not depths:
        raise UserError(f"--steps takes auto, all, or comma-separated depths such as 0,1,5,50 "
                        f"(0 = the original model); got {value!r}.")
    return depths


@click.command("sanity")
@click.argument("inputs", nargs=-1, metavar="[MODEL.onnx] [IMAGE]...")
@click.option("--method", "-m", "methods", type=METHOD_CHOICE, multiple=True,
              default=("gradcam",), show_default=True,
              help="CAM method; repeat for several (add randomcam as the baseline).")
@click.option("--layers", "-l", default="suggested", show_default=True,
              help="'all', 'suggested', or comma-separated layer names/indices (see `camonnx "
                   "layers`): the layers whose maps are compared.")
@click.option("--mode", type=click.Choice(["cascading", "independent"]), default="cascading",
              show_default=True,
              help="cascading: depth j randomises the j layers nearest the logits; independent: "
                   "only the j-th from the logits.")
@click.option("--steps", default="auto", show_default=True,
              help="Randomisation depths: auto (every depth up to 11 parameter layers, else 0 and "
                   "11 geometrically spaced), all, or e.g. 0,1,5,50.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the randomised weights, of the random-logit classes and of "
                   "randomcam's weights.")
@click.option("--random-logit/--no-random-logit", default=True, show_default=True,
              help="Also compare each map with the map of a random other class.")
@TARGET_OPTION
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("camonnx-sanity"), show_default=True,
              help="Output directory for sanity.csv, sanity.json and sanity.png.")
@REPORT_OPTION
@model_options
@_friendly_errors
def command(inputs, methods, layers, mode, steps, seed, random_logit, target, batch_size, out,
            report, tap, device, preprocessing, output, check_parity):
    """Sanity checks (Adebayo et al., 2018): how the maps change when MODEL's parameters are
    randomised from the logits down, and for a random other class.

    For each depth, the randomised model is written, reloaded (its mirror checked against ONNX
    Runtime again) and explained for the original model's classes; each map is compared with
    the original one by Spearman rank correlation, SSIM and the Pearson correlation of HOG
    features. Writes OUT/sanity.csv, OUT/sanity.json and OUT/sanity.png, each atomically, and
    prints each measure at the first and the last depth.
    """
    from camonnx.models import default_image
    from camonnx.sanity_checks import sanity

    depths = parse_steps(steps)
    model, images = split_inputs(inputs)
    images = images or [str(default_image())]
    check_writable(out, folder=True)  # fail before the model loads
    explainer = preprocessing.load(model, device=device, output=output, tap=tap,
                                   check_parity=check_parity)
    result = sanity(explainer, images, methods=methods, layers=parse_layers(layers), mode=mode,
                    steps=depths, seed=seed, targets=parse_targets(target),
                    random_logit=random_logit, batch_size=batch_size, progress=True)
    click.echo(result.summary())
    written = [result.write_csv(out / "sanity.csv"), result.write_json(out / "sanity.json"),
               result.plot(out / "sanity.png")]
    click.echo(f"Wrote {', '.join(str(p) for p in written)}")
    maybe_report(out, report, explainer, tap)
