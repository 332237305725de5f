"""`camonnx metrics`: faithfulness metrics of every selected layer's map, one curve per metric
and method (docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path

import click

from camonnx.cli import (EXTRAPOLATE_OPTION, INCLUDE_INPUT_OPTION, LAYERS_OPTION, METHOD_CHOICE,
                         REPORT_OPTION, TARGET_OPTION, _friendly_errors,
                         maybe_report, model_options, parse_fractions, parse_metrics,
                         parse_layers, parse_targets, split_inputs,
                         UserError)
from camonnx.metrics import CATALOGUE
from camonnx.writer import check_writable

DEFAULT_METRICS = "deletion,insertion,drop,increase,road"
#: Which metrics each per-metric option applies to.
OPTION_METRICS = {"fractions": ("road",), "pixels_per_step": ("deletion", "insertion")}


def metric_options(names: list[str], fractions: str | None, pixels_per_step: int | None) -> dict:
    """Per metric, the options given for it; an option given for none of the chosen metrics is an
    error (it would be silently ignored)."""
    given = {"fractions": fractions, "pixels_per_step": pixels_per_step}
    options: dict[str, dict] = {name: {} for name in names}
    for key, value in given.items():
        if value is None:
            continue
        takers = [n for n in names if n in OPTION_METRICS[key]]
        if not takers:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} applies to --metric {' or '.join(OPTION_METRICS[key])} only "
                            f"(chosen: {', '.join(names)}).")
        for name in takers:
            options[name][key] = parse_fractions(value) if key == "fractions" else value
    return options


@click.command("metrics")
@click.argument("inputs", nargs=-1, metavar="[MODEL.onnx] [IMAGE]...")
@click.option("--method", "-m", "methods", type=METHOD_CHOICE, multiple=True,
              default=("gradcam",), show_default=True,
              help="CAM method; repeat for several (one curve each per metric).")
@LAYERS_OPTION
@TARGET_OPTION
@click.option("--metric", "metric_names", default=DEFAULT_METRICS, show_default=True,
              help="Comma-separated metrics: " + ", ".join(
                  f"{name} ({'higher' if entry.higher_is_better else 'lower'} is better)"
                  for name, entry in sorted(CATALOGUE.items())) + ".")
@click.option("--fractions", default=None,
              help="road: removal fractions q  [default: 0.2,0.4,0.6,0.8]")
@click.option("--pixels-per-step", type=click.IntRange(min=1), default=None,
              help="deletion, insertion: pixels changed per step  [default: 224, one row at "
                   "224×224]")
@click.option("--trials", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeded trials (tie-breaking, ROAD's noise); the curve is their mean.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Perturbed images per forward pass.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("camonnx-metrics"), show_default=True,
              help="Output directory for metrics.csv, metrics.json and metrics.png.")
@EXTRAPOLATE_OPTION
@INCLUDE_INPUT_OPTION
@model_options
@REPORT_OPTION
@_friendly_errors
def command(inputs, methods, layers, target, metric_names, fractions, pixels_per_step, trials,
            seed, batch_size, out, extrapolate, include_input, tap, device, preprocessing, output,
            check_parity, report):
    """Faithfulness metrics of every selected layer's map: deletion, insertion, Average Drop,
    Increase in Confidence, ROAD (docs/metrics.md).

    For each method, one explanation of every selected layer, then each metric scores every
    layer's map of every image. Writes OUT/metrics.csv (one row per metric, method and layer),
    OUT/metrics.json and OUT/metrics.png (one panel per metric, one curve per method), each
    atomically, and prints each curve's best layer and mean.
    """
    from camonnx.metrics import get_metric
    from camonnx.metrics.curve import plot_curves, write_csv, write_json
    from camonnx.metrics.evaluate import evaluate
    from camonnx.models import default_image

    names = parse_metrics(metric_names)
    options = metric_options(names, fractions, pixels_per_step)
    metrics = [get_metric(name, **options[name]) for name in names]  # options checked here
    model, images = split_inputs(inputs)
    images = images or [str(default_image())]
    check_writable(out, folder=True)  # fail before the model loads
    explainer = preprocessing.load(model, device=device, output=output, tap=tap,
                                   check_parity=check_parity)
    explain = {"extrapolate": True, "include_input": include_input} if extrapolate else {}
    curves = evaluate(explainer, images, metrics, methods=list(methods),
                      layers=parse_layers(layers), trials=trials, seed=seed,
                      targets=parse_targets(target), batch_size=batch_size, **explain)
    for curve in curves:
        click.echo(curve.summary())
        click.echo(f"  {curve.timing_summary()}")
    written = [write_csv(curves, out / "metrics.csv"), write_json(curves, out / "metrics.json"),
               plot_curves(curves, out / "metrics.png")]
    click.echo(f"Wrote {', '.join(str(p) for p in written)}")
    if report:  # the page's layer slider needs the maps, which the metrics do not keep
        from camonnx.report_run import save_method_runs

        save_method_runs(explainer, images, list(dict.fromkeys(methods)), out, tap,
                         layers=parse_layers(layers), targets=parse_targets(target), seed=seed,
                         **explain)
        maybe_report(out, report)
