"""One self-contained HTML page per run folder (docs/report.md): ``RUN_DIR/index.html``.

:func:`write_report` looks at what the folder holds (:func:`discover`) and joins it into one
page, every asset inlined (frames as base64 JPEG data URIs, curves as inline SVG, our own CSS and
script from ``camonnx/data/report/``, the data the script needs as embedded JSON), so the file
opens from ``file://`` with no network and can be mailed on its own. What a run folder may hold:

- explanation folders (``manifest.json`` + ``maps.npz`` [+ ``images.npz``]): the folder itself
  (``camonnx explain --out``) and/or its direct sub-folders, one per method (``ybroad --report``
  writes ``OUT/<method>/``; for several ``explain`` runs, give each ``--out RUN/<name>``): the
  layer slider through their maps, with a method switch when there are several;
- ``compare_*.png`` in them (``explain --extrapolate --compare``);
- ``ybroad.json`` (``camonnx ybroad``), ``metrics.json`` (``camonnx metrics``), ``summary.json``
  (``camonnx audit``, with its ``manifest.json``) and ``sanity.json`` (``camonnx sanity``): their
  curves and tables;
- ``model.json`` (:mod:`camonnx.report_model`): the model card; computed from the model when
  absent;
- ``animation.json`` (``animate --report``): links to the animation files.

The page is written atomically (:func:`camonnx.writer.write_text`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from camonnx.errors import InputError

REPORT_NAME = "index.html"
#: The run files with a section of their own, by the command that writes them.
RUN_FILES = {"ybroad.json": "camonnx ybroad", "metrics.json": "camonnx metrics",
             "summary.json": "camonnx audit", "sanity.json": "camonnx sanity"}
#: Keys of a run's own ``manifest.json`` (one that is not an explanation's, e.g. the audit's)
#: shown in the manifest section.
MANIFEST_KEYS = ("kind", "created", "dataset", "options", "seeds", "versions")
ANIMATION_FILE = "animation.json"
AUDIT_KIND = "camonnx-audit-summary"


@dataclass
class RunContents:
    """What a run folder holds (see the module docstring)."""

    run_dir: Path
    explanations: list[Path] = field(default_factory=list)
    documents: dict[str, dict] = field(default_factory=dict)
    compare: list[Path] = field(default_factory=list)
    animation: dict | None = None
    #: The run's own manifest.json when it is not an explanation's (the audit's).
    run_manifest: dict | None = None

    @property
    def empty(self) -> bool:
        return not (self.explanations or self.documents)

    def curve_entries(self) -> list[dict]:
        """Every per-layer record of the run files: ybROAD and metrics results, audit curves,
        the sanity document (each has ``layers``; all but sanity a ``method``)."""
        d = self.documents
        return [*d.get("ybroad.json", {}).get("results", []),
                *d.get("metrics.json", {}).get("results", []),
                *d.get("summary.json", {}).get("curves", [])]

    def settings(self) -> list[tuple[str, dict]]:
        """The run files' settings for the manifest section: seeds, trials, fractions, options."""
        d, out = self.documents, []
        if "ybroad.json" in d:
            first = (d["ybroad.json"].get("results") or [{}])[0]
            out.append(("ybroad.json", {k: first[k] for k in ("seed", "trials", "fractions",
                                                              "options", "solver") if k in first}))
        if "metrics.json" in d:
            results = d["metrics.json"].get("results", [])
            first = (results or [{}])[0]
            out.append(("metrics.json", {k: first[k] for k in ("seed", "trials") if k in first}
                        | {f"options ({r['metric']}, {r['method']})": r.get("options", {})
                           for r in results}))
        if "summary.json" in d and self.run_manifest:
            out.append(("manifest.json", {k: self.run_manifest[k] for k in MANIFEST_KEYS
                                          if k in self.run_manifest}))
        if "sanity.json" in d:
            out.append(("sanity.json", {k: d["sanity.json"][k] for k in ("mode", "seed", "options")
                                        if k in d["sanity.json"]}))
        return out

    def model(self) -> str | None:
        """The model path the run's files name (the first found)."""
        from camonnx.report_frames import load_json

        for folder in self.explanations:
            model = load_json(folder / "manifest.json").get("model")
            if model:
                return model
        for doc in [*self.documents.values(), self.run_manifest or {}]:
            model = doc.get("model") or next((r.get("model") for r in doc.get("results", [])
                                              if isinstance(r, dict)), None)
            if isinstance(model, dict):  # the audit manifest's {"path", "sha256"}
                model = model.get("path")
            if isinstance(model, str) and model:
                return model
        return None


def discover(run_dir: str | os.PathLike) -> RunContents:
    """The explanation folders, run files, comparisons and animation record in ``run_dir``; an
    :class:`InputError` when it is missing, not a folder, or holds nothing to report."""
    from camonnx.report_frames import is_explanation_folder, load_json

    run_dir = Path(run_dir)
    fix = ("Give the folder a camonnx command wrote (explain --out, ybroad --out, sanity --out, "
           "metrics --out, audit --out), or pass --report to that command.")
    if not run_dir.exists():
        raise InputError(f"The run folder {run_dir} does not exist. {fix}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is a file, not a run folder. {fix}")
    contents = RunContents(run_dir)
    folders = [run_dir] + sorted(p for p in run_dir.iterdir()
                                 if p.is_dir() and not p.name.startswith("."))
    contents.explanations = [f for f in folders if is_explanation_folder(f)]
    contents.documents = {name: load_json(run_dir / name) for name in RUN_FILES
                          if (run_dir / name).is_file()}
    if contents.documents.get("summary.json", {}).get("kind", AUDIT_KIND) != AUDIT_KIND:
        del contents.documents["summary.json"]  # some other tool's summary
    contents.compare = [p for f in contents.explanations for p in sorted(f.glob("compare_*.png"))]
    if (run_dir / "manifest.json").is_file() and run_dir not in contents.explanations:
        contents.run_manifest = load_json(run_dir / "manifest.json")
    if (run_dir / ANIMATION_FILE).is_file():
        contents.animation = load_json(run_dir / ANIMATION_FILE)
    if contents.empty:
        raise InputError(f"{run_dir} holds nothing to report: no manifest.json with maps.npz "
                         f"(camonnx explain) and none of {', '.join(RUN_FILES)}. {fix}")
    return contents


def write_report(run_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Write ``run_dir/index.html``, the run's self-contained page; returns its path."""
    from camonnx.writer import check_writable, write_text

    contents = discover(run_dir)
    target = check_writable(contents.run_dir / REPORT_NAME)
    return write_text(target, build_page(contents, progress))


def _asset(name: str) -> str:
    return resources.files("camonnx").joinpath("data", "report", name).read_text(encoding="utf-8")


def build_page(contents: RunContents, progress: bool = True) -> str:
    """The page's HTML (see the module docstring)."""
    import camonnx
    from camonnx import report_curves as curves, report_sections as sections
    from camonnx.report_frames import NORMS, data_uri_of_file, view_of
    from camonnx.report_html import esc, script_json
    from camonnx.report_model import model_card_for
    from camonnx.report_svg import PALETTE

    run_dir, docs = contents.run_dir, contents.documents
    views = [view_of(folder, run_dir, i, progress) for i, folder in enumerate(contents.explanations)]
    sanity = docs.get("sanity.json", {})
    entries = contents.curve_entries()
    run_layers = ({name for v in views for name in v.layers}
                  | {name for record in [*entries, sanity] for name in record.get("layers", [])})
    model = contents.model()
    card = model_card_for(list(dict.fromkeys([run_dir, *contents.explanations])), model,
                          sorted(run_layers))
    indices = {layer["name"]: layer["index"] for layer in (card or {}).get("layers", [])}
    methods = list(dict.fromkeys([v.method for v in views] + [e["method"] for e in entries]
                                 + list(sanity.get("methods", []))))
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    asked = views[0].manifest.get("normalize") if views else None
    norm = (contents.animation or {}).get("norm", asked)
    norm = norm if norm in NORMS else "local"

    body, nav = [], []

    def add(ident: str, title: str, html: str) -> None:
        body.append(html)
        nav.append(f'<li><a href="#{ident}">{esc(title)}</a></li>')

    linked = bool(views)  # curve points move the slider only where there are maps
    if views:
        beside = curves.ybroad_chart(docs["ybroad.json"], colours) if "ybroad.json" in docs else ""
        add("maps", "Maps", sections.viewer(views, norm, indices, beside, bool(entries)))
    if contents.compare:
        add("compare", "Gradual Extrapolation", sections.comparison(
            [(p.name, data_uri_of_file(p)) for p in contents.compare]))
    if "ybroad.json" in docs:
        add("ybroad", "ybROAD", curves.ybroad(docs["ybroad.json"], colours, linked, chart=not views))
    if "metrics.json" in docs:
        add("metrics", "Metrics", curves.metrics(docs["metrics.json"], colours, linked))
    if "summary.json" in docs:
        add("audit", "Audit", curves.audit(docs["summary.json"], colours, linked))
    if sanity:
        add("sanity", "Sanity", curves.sanity(sanity, colours))
    if contents.animation:
        add("animation", "Animation", sections.animation_links(contents.animation.get("outputs", [])))
    add("model", "Model", sections.model_card(card, model, run_layers))
    add("manifest", "Manifest", sections.manifest(views, contents.settings()))

    data = {"views": [v.to_json() for v in views], "norm": norm, "indices": indices}
    title = f"camonnx report · {Path(model).name if model else run_dir.name}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_asset('report.css')}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><p class="sub">run folder {esc(run_dir.resolve().name)} · '
        f"made by camonnx {esc(camonnx.__version__)} · self-contained, works offline</p>"
        f'<nav aria-label="Sections"><ul>{"".join(nav)}</ul></nav></header>'
        f'<main>{"".join(body)}</main>'
        f'{script_json("report-data", data)}<script>{_asset("report.js")}</script></body></html>\n')


__all__ = ["REPORT_NAME", "RunContents", "build_page", "discover", "write_report"]
