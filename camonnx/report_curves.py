"""The report's curve sections, one per JSON file a run folder may hold: ``ybroad.json``
(ybROAD per layer), ``metrics.json`` (other metrics per layer), ``summary.json`` (the dataset
audit: means with confidence bands) and ``sanity.json`` (similarity against randomisation depth).

Every per-layer curve is drawn over the model's layer index (``camonnx layers``), so points of
different files line up, and each point moves the page's layer slider to its layer.
"""

from __future__ import annotations

import math
from typing import Sequence

from camonnx.report_html import esc, section, table
from camonnx.report_svg import Series, legend, line_chart


def _chart(series: Sequence[Series], title: str, x_label: str, y_label: str,
           x_names: dict[float, str] | None = None) -> str:
    return (f'<figure class="curve">{line_chart(series, title, x_label, y_label, x_names)}'
            f"<figcaption>{esc(title)}</figcaption>{legend(series)}</figure>")


YBROAD_TITLE = "ybROAD per layer (ring: best layer; band: ± std over trials and images)"


def ybroad_series(doc: dict, colours: dict[str, str], linked: bool = True) -> list[Series]:
    """One series per method of ``ybroad.json``: the curve (mean over trials and images) ± its
    standard deviation (a band only where there is a spread), the best layer ringed.
    ``linked``: whether the page has maps the points can move to."""
    series = []
    for r in doc.get("results", []):
        ge = " + GE" if r.get("options", {}).get("extrapolate") else ""
        curve, std = r["curve"], r["curve_std"]
        scores = r.get("scores") or []  # (T, L, N)
        spread = bool(scores and scores[0]) and len(scores) * len(scores[0][0]) > 1
        series.append(Series(
            f"{r['method']}{ge}", r["layer_indices"], curve, r["layers"], method=r["method"],
            lo=[c - d for c, d in zip(curve, std)] if spread else None,
            hi=[c + d for c, d in zip(curve, std)] if spread else None,
            best=r["argmax"], colour=colours.get(r["method"], ""), clickable=linked))
    return series


def ybroad_chart(doc: dict, colours: dict[str, str], linked: bool = True) -> str:
    """The ybROAD chart alone (the map viewer shows it beside the maps too)."""
    series = ybroad_series(doc, colours, linked)
    return _chart(series, YBROAD_TITLE, "layer index (camonnx layers)", "ROAD") if series else ""


def ybroad(doc: dict, colours: dict[str, str], linked: bool = True, chart: bool = True) -> str:
    """ybROAD (docs/metrics.md#ybroad): the chart of :func:`ybroad_series` (unless ``chart`` is
    False: the viewer shows it beside the maps) and a table of the maxima and means."""
    rows = []
    for r in doc.get("results", []):
        ge = " + GE" if r.get("options", {}).get("extrapolate") else ""
        rows.append((f"{r['method']}{ge}", f"{r['max']:+.4f}", f"{r['max_index']}: {r['max_layer']}",
                     f"{r['mean']:+.4f}", len(r["layers"]), len(r.get("targets", [])), r["trials"],
                     ", ".join(f"{q:g}" for q in r["fractions"])))
    if not rows:
        return section("ybroad", "ybROAD", "<p>ybroad.json holds no results.</p>")
    body = ((ybroad_chart(doc, colours, linked) if chart else
             '<p class="note">The curve is beside the maps above.</p>')
            + table(("method", "max ybROAD", "at layer", "mean", "layers", "images", "trials",
                     "fractions"), rows, caption="ROAD = (mean Δ LeRF − mean Δ MoRF) / 2; higher is "
                                                 "more faithful"))
    return section("ybroad", "ybROAD: faithfulness per layer", body)


def sanity(doc: dict, colours: dict[str, str]) -> str:
    """Sanity checks: per similarity metric, the mean similarity (over layers and images) of each
    method's maps to the original model's against the randomisation depth, ± its std; and the
    random-logit test's means."""
    labels = doc.get("step_labels") or [str(s) for s in doc.get("steps", [])]
    x = list(range(len(labels)))
    names = {i: _short(label) for i, label in enumerate(labels)}
    charts = []
    for metric, by_method in doc.get("curve", {}).items():
        stds = doc.get("curve_std", {}).get(metric, {})
        series = []
        for method, curve in by_method.items():
            std = stds.get(method)
            series.append(Series(method, x, curve, labels, method=method, clickable=False,
                                 lo=[c - s for c, s in zip(curve, std)] if std else None,
                                 hi=[c + s for c, s in zip(curve, std)] if std else None,
                                 colour=colours.get(method, "")))
        charts.append(_chart(series, f"{metric} similarity to the original maps, "
                                     f"{doc.get('mode', '')} randomisation",
                             "randomised down to (parameter layer)", metric, names))
    body = _grid(charts) if charts else ""
    logit = doc.get("random_logit")
    if logit:
        metrics = list(logit.get("mean", {}))
        methods = sorted({m for v in logit["mean"].values() for m in v})
        rows = [(m, *(f"{logit['mean'][k].get(m, float('nan')):.3f}" for k in metrics)) for m in methods]
        body += table(("method", *metrics), rows, caption="Random-logit test: map of a random other "
                                                          "class vs the target's (1: the map ignores the class)")
    note = ("Similarity is 1 at the original model; a method that depends on the weights falls "
            "toward 0 as more layers are randomised.")
    return section("sanity", "Sanity checks: model randomisation", body or "<p>No curves.</p>", note)


def _band(curve: Sequence, lo: Sequence | None, hi: Sequence | None):
    """Band bounds with None where a value is missing (a layer with no score)."""
    if lo is None or hi is None:
        return None, None
    return ([math.nan if v is None else v for v in lo], [math.nan if v is None else v for v in hi])


def _values(values: Sequence) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def metrics(doc: dict, colours: dict[str, str], linked: bool = True) -> str:
    """``metrics.json``: per metric, each method's curve over the layers ± its std, the best layer
    (argmax, or argmin when lower is better) ringed; a table of the best layers."""
    by_metric: dict[str, list[Series]] = {}
    rows = []
    for r in doc.get("results", []):
        curve, std = _values(r["curve"]), _values(r.get("curve_std") or [0.0] * len(r["curve"]))
        by_metric.setdefault(r["metric"], []).append(Series(
            r["method"], r["layer_indices"], curve, r["layers"], method=r["method"],
            lo=[c - d for c, d in zip(curve, std)], hi=[c + d for c, d in zip(curve, std)],
            best=r.get("best"), colour=colours.get(r["method"], ""), clickable=linked))
        rows.append((r["metric"], r["method"], "higher" if r.get("higher_is_better") else "lower",
                     f"{r.get('best_index')}: {r.get('best_layer')}", f"{r.get('best_value', math.nan):.4g}",
                     f"{r.get('mean', math.nan):.4g}", r.get("trials", ""), len(r.get("targets", []))))
    charts = _grid(_chart(series, f"{metric} per layer (ring: best layer; band: ± std)",
                          "layer index (camonnx layers)", metric)
                   for metric, series in by_metric.items())
    body = (charts + table(("metric", "method", "better", "best layer", "best value", "mean",
                            "trials", "images"), rows, caption="Best layer per metric and method")
            if rows else "<p>metrics.json holds no results.</p>")
    return section("metrics", "Metrics per layer", body)


def audit(doc: dict, colours: dict[str, str], linked: bool = True) -> str:
    """The dataset audit (``summary.json``): per metric, each method's mean over the images per
    layer with its bootstrap confidence band, the best layer ringed; the best layers (and whether
    the runner-up's interval overlaps), a per-class table and the failed images."""
    boot = doc.get("bootstrap", {})
    level = f"{100 * boot.get('confidence', 0.95):g}%"
    by_metric: dict[str, list[Series]] = {}
    best_rows, class_rows = [], []
    for c in doc.get("curves", []):
        lo, hi = _band(c["mean"], c.get("ci_low"), c.get("ci_high"))
        best = c.get("best") or {}
        by_metric.setdefault(c["metric"], []).append(Series(
            c["method"], c["layer_indices"], _values(c["mean"]), c["layers"], method=c["method"],
            lo=lo, hi=hi, best=best.get("position"), colour=colours.get(c["method"], ""),
            clickable=linked))
        runner = c.get("runner_up") or {}
        overlap = c.get("best_overlaps_runner_up")
        best_rows.append((c["metric"], c["method"], f"{best.get('layer_index')}: {best.get('layer')}",
                          _ci(best), f"{runner.get('layer_index')}: {runner.get('layer')}" if runner else "—",
                          _ci(runner) if runner else "—",
                          "—" if overlap is None else ("yes: not separated" if overlap else "no")))
        sign = 1 if c.get("higher_is_better", True) else -1
        for k in c.get("per_class", []):
            means = _values(k["mean"])
            finite = [i for i, v in enumerate(means) if math.isfinite(v)]
            if not finite:
                continue
            b = max(finite, key=lambda i: sign * means[i])
            class_rows.append((c["metric"], c["method"], k.get("label", k.get("class")),
                               max(k.get("n") or [0]), f"{c['layer_indices'][b]}: {c['layers'][b]}",
                               f"{means[b]:.4g}", f"[{_num(k['ci_low'][b])}, {_num(k['ci_high'][b])}]"))
    charts = _grid(_chart(series, f"{metric}: mean over images per layer (band: {level} "
                                  "bootstrap interval; ring: best layer)",
                          "layer index (camonnx layers)", metric)
                   for metric, series in by_metric.items())
    body = charts + table(("metric", "method", "best layer", f"mean [{level} CI]", "runner-up",
                           f"mean [{level} CI]", "intervals overlap"), best_rows,
                          caption=f"Best layers over {doc.get('scored', '?')} of "
                                  f"{doc.get('images', '?')} images ({doc.get('trials', '?')} trial(s))")
    if class_rows:
        body += table(("metric", "method", "class", "images", "best layer", "mean", f"{level} CI"),
                      class_rows, caption="Per class: the best layer of each class")
    failures = doc.get("failures", [])
    body += (table(("image", "path", "reason"), [(f.get("image_id"), f.get("path"), f.get("reason"))
                                                 for f in failures],
                   caption=f"{len(failures)} failed image(s)") if failures
             else "<p>No failed images.</p>")
    return section("audit", f"Dataset audit: {doc.get('dataset', '')}", body)


def _grid(charts) -> str:
    """Several charts side by side where the page is wide enough."""
    return f'<div class="charts">{"".join(charts)}</div>'


def _num(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _ci(point: dict) -> str:
    return f"{_num(point.get('mean'))} [{_num(point.get('ci_low'))}, {_num(point.get('ci_high'))}]"


def _short(label: str, keep: int = 14) -> str:
    return label if len(label) <= keep else "…" + label[-(keep - 1):]
