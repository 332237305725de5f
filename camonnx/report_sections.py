"""The report's fixed sections: the map viewer, the Gradual Extrapolation comparison, the model
card, the manifest and the animation link. Each function returns one HTML ``<section>``."""

from __future__ import annotations

from typing import Sequence

from camonnx.report_frames import NORMS, View
from camonnx.report_html import definitions, esc, raw_json, section, table


def caption_parts(view: View, n: int, l: int, norm: str, indices: dict[str, int]) -> dict[str, str]:
    """The caption of image ``n`` at layer ``l``: the layer name, "layer k / L" (with the model's
    index), the method, the normalisation and the class (the page's script builds the same)."""
    name = view.layers[l]
    index = f" · #{indices[name]}" if name in indices else ""
    return {"layer": name, "pos": f"layer {l + 1} / {len(view.layers)}{index}",
            "method": view.label, "norm": norm, "class": view.classes[n] if n < len(view.classes) else ""}


def _alt(parts: dict[str, str], n: int) -> str:
    return (f"{parts['method']} map of image {n + 1} ({parts['class']}) at {parts['pos']}, "
            f"{parts['layer']}, {parts['norm']} normalisation, over the image")


def viewer(views: Sequence[View], norm: str, indices: dict[str, int], beside: str = "",
           curves: bool = False) -> str:
    """The layer slider through the maps: one method switch, one normalisation switch, one
    slider (and ◀ ▶ buttons, arrow keys) shared by every image's figure; ``beside``: a chart
    shown next to the figures (the run's main curve, whose points move the slider); ``curves``:
    whether the page has curves whose points do."""
    first = views[0]
    last = len(first.layers) - 1
    if len(views) > 1:
        options = "".join(f'<option value="{v.id}">{esc(v.label)}'
                          f'{"" if v.folder == v.method else f" ({esc(v.folder)})"}</option>' for v in views)
        method = (f'<div class="control"><label for="method">Method</label>'
                  f'<select id="method" aria-label="Method">{options}</select></div>')
    else:
        method = f'<div class="control"><span class="label">Method</span> <strong>{esc(first.label)}</strong></div>'
    radios = "".join(
        f'<input type="radio" name="norm" id="norm-{m}" value="{m}"{" checked" if m == norm else ""}>'
        f'<label for="norm-{m}">{m}</label>' for m in NORMS)
    norms = (f'<fieldset class="control norm"><legend>Normalisation</legend>{radios}</fieldset>')
    slider = (f'<div class="control slider"><button type="button" id="prev" aria-label="Previous layer">◀</button>'
              f'<label for="layer" class="label">Layer</label>'
              f'<input type="range" id="layer" min="0" max="{last}" value="{last}" step="1" '
              f'aria-label="Layer" aria-valuetext="{esc(first.layers[last])}">'
              f'<button type="button" id="next" aria-label="Next layer">▶</button>'
              f'<output id="layer-out" for="layer">{last + 1} / {last + 1}</output></div>')
    figures = []
    n_images = max(len(v.frames) for v in views)
    for n in range(n_images):
        parts = caption_parts(first, n, last, norm, indices) if n < len(first.frames) else None
        src = first.frames[n][norm][last] if parts else ""
        caption = ("".join(f'<span class="c-{k}">{esc(v)}</span>' for k, v in parts.items())
                   if parts else "")
        figures.append(
            f'<figure class="frame" id="figure-{n}" data-image="{n}"{"" if parts else " hidden"}>'
            f'<img id="frame-{n}" src="{src}" alt="{esc(_alt(parts, n)) if parts else ""}" '
            f'width="{first.size[1]}" height="{first.size[0]}">'
            f'<figcaption id="caption-{n}" aria-live="polite">{caption}</figcaption></figure>')
    body = (f'<div class="controls" role="group" aria-label="Map controls">{method}{norms}{slider}</div>'
            f'<div class="viewer"><div class="figures">{"".join(figures)}</div>'
            f'{f"<div class=side>{beside}</div>" if beside else ""}</div>'
            '<p class="note">← → step through the layers (Home / End: first / last). Local: each '
            "layer's own min–max; global: one min–max over all layers of the image, so early "
            f'layers look dim.{" Points on the curves jump to their layer." if curves else ""}</p>')
    return section("maps", "Maps through the layers (CAManim)", body)


def comparison(images: Sequence[tuple[str, str]]) -> str:
    """Gradual Extrapolation: each ``compare_*.png`` (name, data URI), plain vs extrapolated."""
    figures = "".join(
        f'<figure class="compare"><img src="{uri}" alt="Plain map beside its Gradual Extrapolation '
        f'({esc(name)})"><figcaption>{esc(name)}</figcaption></figure>' for name, uri in images)
    return section("compare", "Gradual Extrapolation: plain vs extrapolated", figures,
                   "The deepest selected layer's map, bilinearly upsampled (left) and sharpened "
                   "through the earlier layers' activations (right).")


def model_card(card: dict | None, model: str | None, run_layers: set[str]) -> str:
    """The model file, its sha256, input, preprocessing and the taps table (as `camonnx layers`
    prints it: index, name, ops, shape, stride, channels; * the suggested layer, bold the run's)."""
    if card is None:
        text = (f"The model file {model} is not there any more, and the run stored no model.json: "
                "no card." if model else "The run names no model: no card.")
        return section("model", "Model", f"<p>{esc(text)}</p>")
    facts = [("file", card["model"]), ("size", f"{card['bytes']:,} bytes"), ("sha256", card["sha256"]),
             ("input", f"{card['input']['name']}: {card['input']['layout']} "
                       f"{card['input']['size'][0]}×{card['input']['size'][1]}"),
             ("opset", str(card["opset"])), ("class output", card.get("output", "")),
             ("preprocessing", card["preprocess"]
              + ("" if card.get("preprocess_recorded", True) else
                 " (the model's own recipe, read when this page was made: the run did not record "
                 "its preprocessing)")),
             ("class labels", f"{card['labels']} names" if card["labels"] else "none (class indices)"),
             ("taps", f"{len(card['layers'])} ({card['tap']}); * suggested layer")]
    rows, attrs = [], []
    for layer in card["layers"]:
        mark = "*" if layer["index"] == card["suggested"] else ""
        rows.append((f"{layer['index']}{mark}", layer["name"], "+".join(layer["ops"]),
                     "×".join(str(d) for d in layer["shape"]), f"{layer['stride']:g}", layer["channels"]))
        attrs.append(f'data-layer="{esc(layer["name"])}"'
                     + (' class="in-run"' if layer["name"] in run_layers else ""))
    taps = table(("#", "name", "ops", "shape (K,h,w)", "stride", "channels"), rows,
                 caption="Taps (bold: explained in this run)", row_attrs=attrs, cls="taps")
    return section("model", "Model", definitions(facts) + taps)


def manifest(views: Sequence[View], others: Sequence[tuple[str, dict]]) -> str:
    """Versions, options and seeds: each explanation's manifest and the other run files' settings."""
    parts = []
    for view in views:
        m = view.manifest
        facts = [("folder", view.folder), ("method", m.get("method", "")),
                 ("normalisation", m.get("normalize", "")), ("layers", str(len(m.get("layers", [])))),
                 ("targets", ", ".join(m.get("target_labels") or [])),
                 ("options", m.get("options", {})), ("versions", m.get("versions", {}))]
        parts.append(f"<h3>{esc(view.label)} · {esc(view.folder)}/manifest.json</h3>" + definitions(facts)
                     + raw_json("manifest.json", m))
    for name, settings in others:
        parts.append(f"<h3>{esc(name)}</h3>" + definitions(settings.items()))
    return section("manifest", "Manifest", "".join(parts) or "<p>No manifest in this run.</p>")


def animation_links(outputs: Sequence[str]) -> str:
    """Links to the animations this run's page was made beside (relative, so they work from
    file:// as long as the files stay together)."""
    items = "".join(f'<li><a href="{esc(o)}">{esc(o)}</a></li>' for o in outputs)
    return section("animation", "Animation", f"<ul>{items}</ul>",
                   "The video or frames written by `camonnx animate` (beside this folder).")
