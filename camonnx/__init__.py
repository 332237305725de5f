"""camonnx: explain any ONNX CNN, every conv layer at once.

The public API:

- ``Explainer(model=None)``: a model (the bundled default when none is given) with its
  ``layers``, ``activations``, ``gradients`` and ``explain``, which returns an ``Explanation``
  (numpy maps with their layer names; ``save``).
- ``animate(explanation, out)``: CAManim of an explanation already made (it only draws and
  writes, so one explanation can be animated several ways).
- ``ybroad(explainer, images)`` and ``road_score(explainer, images, maps)``: ROAD faithfulness;
  they take the explainer and the images because they run the model on imputed images.
- ``evaluate(explainer, images, metrics, methods, layers)``: any faithfulness metrics
  (``camonnx.metrics.CATALOGUE``) of each method's map at every selected layer.
- ``sanity(explainer, images, methods)``: the model-parameter randomisation and random-logit
  tests (docs/sanity.md).
- ``audit(explainer_or_model, data, methods, layers, metrics)``: faithfulness over a whole
  dataset, resumable, in-process or on Ray, with bootstrap confidence intervals (docs/audit.md).
- ``report(run_dir)``: one self-contained HTML page of a run folder (docs/report.md).
- ``default_image()``: the path of the bundled cat photo.

Imports are lazy so that ``import camonnx`` (and the command line's ``--help``) stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "Explainer": ("camonnx.explainer", "Explainer"),
    "Explanation": ("camonnx.explanation", "Explanation"),
    "animate": ("camonnx.animation", "animate"),
    "ybroad": ("camonnx.road", "ybroad"),
    "road_score": ("camonnx.road", "road_score"),
    "evaluate": ("camonnx.metrics.evaluate", "evaluate"),
    "sanity": ("camonnx.sanity_checks", "sanity"),
    "audit": ("camonnx.audit_run", "audit"),
    "report": ("camonnx.report_page", "write_report"),
    "default_image": ("camonnx.models", "default_image"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'camonnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
