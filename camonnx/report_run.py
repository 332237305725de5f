"""What ``animate --report`` and ``ybroad --report`` store so that their page can be made (and
made again later by ``camonnx report``) from the run folder alone.

- ``animate`` writes a video (or a folder of frames), not a run folder: with ``--report`` its run
  folder is ``<out>-report/`` beside the output (``camonnx.mp4`` → ``camonnx-report/``,
  ``frames/`` → ``frames-report/``), holding the explanation the frames came from
  (:meth:`~camonnx.explanation.Explanation.save` without overlay PNGs), ``model.json`` and
  ``animation.json`` (the outputs, relative to the folder, the normalisation and the frame rate).
- ``ybroad`` ranks maps it does not keep: with ``--report`` each method's explanation is made
  again (same seed and options: the same maps, at the cost of one more forward and backward per
  method, against ROAD's 2·Q forwards per layer) and saved in ``OUT/<method>/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from camonnx.report_model import write_model_card
from camonnx.writer import write_text


def animation_report_folder(out: str | os.PathLike | None, default: str = "camonnx.mp4") -> Path:
    """The run folder of ``animate --report``: ``<out without its extension>-report`` beside
    ``out`` (a file or a frames folder)."""
    base = Path(default if out is None else out)
    name = base.name if not base.suffix else base.stem
    return base.with_name(f"{name}-report")


def save_animation_run(explainer, explanation, run_dir: Path, outputs: Sequence[Path], tap: str,
                       norm: str, fps: float) -> Path:
    """Save ``explanation``, its model card and ``animation.json`` in ``run_dir``."""
    explanation.save(run_dir, overlays=False)
    write_model_card(explainer, run_dir, tap)
    record = {"format": "camonnx-animation", "norm": norm, "fps": fps,
              "outputs": [Path(os.path.relpath(Path(p).resolve(), run_dir.resolve())).as_posix()
                          for p in outputs]}
    write_text(run_dir / "animation.json", json.dumps(record, indent=1))
    return run_dir


def save_method_runs(explainer, images, methods: Sequence[str], out: Path, tap: str, *, layers,
                     targets, seed: int, **options) -> list[Path]:
    """Explain ``images`` with each method (``normalize="none"``, as ROAD ranks them) and save
    each in ``out/<method>/`` (no overlay PNGs); the model card goes to ``out``."""
    folders = []
    for method in methods:
        explanation = explainer.explain(images, method=method, layers=layers, targets=targets,
                                        normalize="none", seed=seed, **options)
        folders.append(explanation.save(out / method, overlays=False))
    write_model_card(explainer, out, tap)
    return folders
