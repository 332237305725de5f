"""`camonnx audit`: a dataset's faithfulness per method and layer (docs/audit.md).

Only click and camonnx's light modules are imported here; the model, torch and Ray load when
the command runs (``camonnx audit --help`` imports none of them).
"""

from __future__ import annotations

from pathlib import Path

import click

from camonnx.cli import (LAYERS_OPTION, METHOD_CHOICE, REPORT_OPTION, _friendly_errors,
                         maybe_report, model_options, parse_layers, parse_metrics,
                         split_inputs, UserError)
from camonnx.metrics import CATALOGUE
from camonnx.writer import check_writable


@click.command("audit")
@click.argument("inputs", nargs=-1, required=True, metavar="[MODEL.onnx] DATA")
@click.option("--method", "-m", "methods", type=METHOD_CHOICE, multiple=True,
              default=("gradcam",), show_default=True, help="CAM method; repeat for several.")
@LAYERS_OPTION
@click.option("--metric", "metric", default="road", show_default=True,
              help=f"Comma-separated faithfulness metrics: {', '.join(sorted(CATALOGUE))}.")
@click.option("--trials", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeded trials per image (a metric's randomness); averaged per image.")
@click.option("--target", type=click.Choice(["predicted", "label"]), default="predicted",
              show_default=True,
              help="The class explained and scored: the model's prediction, or the dataset's "
                   "label (class folders or the 'label' column, as class indices or the "
                   "model's class names).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Perturbed images per forward pass of a metric.")
@click.option("--shard-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per shard: the unit of work, of resuming and of memory.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("camonnx-audit"), show_default=True,
              help="Run folder: manifest.json, shards/*.parquet, summary.json/.csv/.png. Rerun "
                   "the same command on it to resume.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None,
              metavar="[ADDRESS]",
              help="Run on Ray: CPU tasks read the images, an actor pool (one model per "
                   "actor, one GPU each where there are GPUs) scores them. Without ADDRESS: "
                   "$RAY_ADDRESS or a local Ray. Put --ray after DATA (or write --ray=ADDRESS).")
@click.option("--actors", type=click.IntRange(min=1), default=None,
              help="With --ray: actors in the pool (default: one per GPU, else CPUs - 1).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads of torch and ONNX Runtime per worker (default: in-process all "
                   "cores; Ray actors 1).")
@REPORT_OPTION
@model_options
@_friendly_errors
def command(inputs, methods, layers, metric, trials, target, seed, batch_size, shard_size, out,
            ray_address, actors, threads, report, tap, device, preprocessing, output,
            check_parity):
    """Audit a dataset: every method's map at every selected layer of every image, scored by
    faithfulness metrics, with 95% bootstrap intervals over images.

    DATA: a folder of images (searched recursively; class sub-folders give labels), a quoted
    glob ('photos/**/*.jpg'), or a .csv/.parquet file with a 'path' column (and optionally
    'label'). Rows go to OUT/shards/*.parquet as images finish; an unreadable image is a
    failed row and the run goes on. Rerunning the same command resumes; a changed model or
    option is refused. Writes OUT/summary.json, summary.csv, summary.png and prints the best
    layer per method.
    """
    from camonnx.audit_run import audit
    from camonnx.audit_data import IMAGE_EXTENSIONS
    from camonnx.report_model import write_model_card

    model, data = split_inputs(inputs)
    if not data:
        raise UserError("Give the dataset: a folder, a glob, or a .csv/.parquet file.")
    metrics = parse_metrics(metric)
    check_writable(out, folder=True)  # fail before the model loads
    if len(data) == 1 and Path(data[0]).suffix.lower() not in IMAGE_EXTENSIONS:
        data = data[0]  # a folder, a glob or a table; else the image paths themselves
    ray = None if ray_address is None else (ray_address or True)
    explainer = preprocessing.load(model, device=device, output=output, tap=tap,
                                   check_parity=check_parity,
                                   **({"threads": threads} if threads and not ray else {}))
    try:
        summary = audit(explainer, data,
                        methods=list(dict.fromkeys(methods)), layers=parse_layers(layers),
                        metrics=metrics, trials=trials, target=target, seed=seed,
                        batch_size=batch_size, shard_size=shard_size, out=out, ray=ray,
                        actors=actors, threads=threads, device=device)
    except KeyboardInterrupt:
        click.echo(f"Interrupted: the finished shards are kept in {out}; rerun the same command "
                   "to resume.", err=True)
        raise click.exceptions.Exit(130) from None
    write_model_card(explainer, out, tap)
    click.echo(summary.text())
    click.echo(f"Wrote {out / 'summary.json'}, {out / 'summary.csv'}, {out / 'summary.png'} and "
               f"{out / 'shards'}")
    maybe_report(out, report)
