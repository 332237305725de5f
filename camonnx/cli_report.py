"""`camonnx report RUN_DIR`: the run folder's self-contained HTML page (docs/report.md)."""

from __future__ import annotations

from pathlib import Path

import click

from camonnx.cli import _friendly_errors


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@_friendly_errors
def command(run_dir: Path) -> None:
    """Write RUN_DIR/index.html: one page (opens from file://, no network) joining what RUN_DIR
    holds: the maps of every explanation in it (RUN_DIR itself and its sub-folders, one per
    method: a method switch), a layer slider with local/global switch, the Gradual Extrapolation
    comparison, ybROAD, sanity, metrics and audit curves, the model card and the manifest.

    \b
    Examples:
      camonnx explain --out run && camonnx report run
      camonnx explain -m gradcam --out run/gradcam && camonnx explain -m layercam --out run/layercam
      camonnx ybroad -m gradcam -m layercam --out run && camonnx report run
    """
    from camonnx.report_page import write_report

    click.echo(f"Wrote {write_report(run_dir)}")
