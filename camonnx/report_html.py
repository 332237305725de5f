"""Small HTML helpers of the report: escaping, tables, definition lists, sections."""

from __future__ import annotations

import json
from html import escape
from typing import Iterable, Sequence


def esc(value) -> str:
    """Text → HTML text (quotes too, so it is safe in attributes)."""
    return escape(str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence], caption: str = "",
          row_attrs: Sequence[str] | None = None, cls: str = "") -> str:
    """A ``<table>`` of text cells (escaped); ``row_attrs``: raw attributes per body row."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = []
    for i, row in enumerate(rows):
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{attrs}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    klass = f' class="{cls}"' if cls else ""
    wrap = f"table-wrap {cls}-wrap" if cls else "table-wrap"
    return (f'<div class="{wrap}"><table{klass}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def definitions(pairs: Iterable[tuple[str, object]]) -> str:
    """A ``<dl>`` of (term, value) pairs; dicts and lists are shown as compact JSON."""
    items = []
    for term, value in pairs:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=False)
        items.append(f"<dt>{esc(term)}</dt><dd>{esc(text)}</dd>")
    return f'<dl class="facts">{"".join(items)}</dl>'


def section(ident: str, title: str, body: str, note: str = "") -> str:
    """A ``<section>`` labelled by its heading (``note``: a paragraph under it)."""
    lead = f'<p class="note">{esc(note)}</p>' if note else ""
    return (f'<section id="{ident}" aria-labelledby="{ident}-h"><h2 id="{ident}-h">{esc(title)}</h2>'
            f"{lead}{body}</section>")


def raw_json(title: str, document) -> str:
    """A collapsed ``<details>`` with ``document`` as indented JSON."""
    return (f"<details><summary>{esc(title)}</summary><pre>{esc(json.dumps(document, indent=1))}"
            f"</pre></details>")


def script_json(ident: str, document) -> str:
    """``document`` as an inert ``<script type="application/json">`` (``</`` escaped)."""
    text = json.dumps(document, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{ident}">{text}</script>'
