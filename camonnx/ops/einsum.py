"""ONNX Einsum: Einstein summation over any number of operands.

``y[out] = Σ_{labels not in out} Π_k x_k[term_k]``: each operand's term names its axes with a
letter (``a``–``z``, ``A``–``Z``), an ellipsis ``...`` standing for the same number of unnamed
(broadcast) leading, middle or trailing axes in every operand. Spaces are ignored (torch's
exporter writes ``"B G H I D, B G H J D -> B G H I J"``). A letter repeated within one term takes
that term's diagonal. Without ``->`` the output is the ellipsis axes followed by the letters that
occur exactly once in the equation, in ASCII order (upper case first), as the ONNX reference
(numpy) orders them; the mirror writes that output explicitly so as not to depend on torch's
implicit rule.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import torch

from camonnx.ops import Node, register

_TERM = re.compile(r"^[a-zA-Z]*(\.\.\.)?[a-zA-Z]*$")


@dataclass(frozen=True)
class Equation:
    """A parsed equation: one term per operand and the explicit output term."""

    terms: tuple[str, ...]
    output: str

    def torch_form(self) -> str:
        return ",".join(self.terms) + "->" + self.output


@lru_cache(maxsize=256)
def parse_equation(equation: str) -> Equation:
    """Parse an ONNX Einsum equation; raise ``ValueError`` naming what is malformed."""
    compact = "".join(equation.split())
    if compact.count("->") > 1:
        raise ValueError("more than one '->'")
    lhs, arrow, rhs = compact.partition("->")
    terms = tuple(lhs.split(","))
    for term in terms + ((rhs,) if arrow else ()):
        if not _TERM.match(term):
            raise ValueError(f"term {term!r} is not letters with at most one '...'")
    letters = Counter(c for term in terms for c in term if c.isalpha())
    ellipsis = any("..." in term for term in terms)
    if not arrow:
        output = ("..." if ellipsis else "") + "".join(
            sorted(c for c, count in letters.items() if count == 1))
        return Equation(terms, output)
    out_letters = [c for c in rhs if c.isalpha()]
    unknown = sorted(set(out_letters) - set(letters))
    if unknown:
        raise ValueError(f"output label(s) {''.join(unknown)!r} occur in no input")
    if len(set(out_letters)) != len(out_letters):
        raise ValueError("an output label is repeated")
    if "..." in rhs and not ellipsis:
        raise ValueError("'...' in the output but in no input")
    return Equation(terms, rhs)


def _check_einsum(node: Node, constants) -> None:
    try:
        equation = parse_equation(str(node.attr("equation", "")))
    except ValueError as exc:
        raise node.unsupported(f"equation {node.attr('equation')!r} ({exc})") from None
    if len(equation.terms) != len(node.inputs):
        raise node.unsupported(f"equation {node.attr('equation')!r} with {len(equation.terms)} "
                               f"terms for {len(node.inputs)} inputs")


@register("Einsum", check=_check_einsum)
def einsum(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    return torch.einsum(parse_equation(str(node.attr("equation"))).torch_form(), *xs)
