"""ONNX Attention (opset 23+): scaled dot-product attention, as torch's exporter writes
``F.scaled_dot_product_attention`` from opset 23 on.

``Y = softmax(cap(Q·Kᵀ · scale) + bias) · V`` per batch and head, with ``scale`` defaulting to
``1/√head_size``, ``cap(s) = softcap · tanh(s / softcap)`` when ``softcap > 0``, and ``bias`` the
sum of the float ``attn_mask`` or ``−∞`` where a boolean ``attn_mask`` is False, and ``−∞`` above
the causal diagonal (``is_causal=1``: query ``i`` sees keys ``j ≤ i``). A query row with no key
left has output 0 (not NaN), as ONNX Runtime computes it. 3-D inputs ``(batch, sequence,
heads·size)`` are split into ``q_num_heads``/``kv_num_heads`` heads and the output merged back;
with fewer key/value heads than query heads (grouped-query attention) query head ``h`` reads
key/value head ``h // (q_num_heads / kv_num_heads)``.

The key/value cache (``past_key``/``past_value``/``nonpad_kv_seqlen`` inputs, ``present_*``
outputs), the ``qk_matmul_output`` debug output and sliding windows are refused at load time: no
image classifier uses them.
"""

from __future__ import annotations

import math

import torch

from camonnx.ops import Node, register

#: ONNX element types ``softmax_precision`` may name.
_PRECISION = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _check_attention(node: Node, constants) -> None:
    extra_inputs = [name for name in node.inputs[4:] if name]
    if extra_inputs:
        raise node.unsupported("past_key/past_value/nonpad_kv_seqlen inputs (a key/value cache)")
    if any(node.outputs[1:]):
        raise node.unsupported("present_key/present_value/qk_matmul_output outputs")
    for key in ("left_window_size", "right_window_size"):
        if int(node.attr(key, -1)) != -1:
            raise node.unsupported(f"{key}={node.attr(key)} (a sliding window)")
    precision = node.attr("softmax_precision")
    if precision is not None and int(precision) not in _PRECISION:
        raise node.unsupported(f"softmax_precision={precision}")
    if (node.attr("q_num_heads") is None) != (node.attr("kv_num_heads") is None):
        raise node.unsupported("only one of q_num_heads and kv_num_heads")


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, sequence, heads·size) → (batch, heads, sequence, size)."""
    batch, sequence, hidden = x.shape
    return x.reshape(batch, sequence, heads, hidden // heads).transpose(1, 2)


def _bias(node: Node, scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The additive bias of the scores (float mask, −∞ where disallowed), or ``None``."""
    bias = None
    if mask is not None:
        if mask.dim() == 0 or mask.shape[-1] != scores.shape[-1]:
            raise ValueError(f"attn_mask of shape {tuple(mask.shape)} for {scores.shape[-1]} keys: "
                             "its last axis must be as long as the keys (ONNX Runtime refuses a "
                             "shorter one, which opset 24 pads with −∞, and a broadcast one)")
        if mask.dtype == torch.bool:
            bias = torch.zeros((), dtype=scores.dtype, device=scores.device).masked_fill(
                ~mask, float("-inf"))
        else:
            bias = mask.to(scores.dtype)
    if int(node.attr("is_causal", 0)):
        q_len, kv_len = scores.shape[-2:]
        allowed = torch.ones((q_len, kv_len), dtype=torch.bool, device=scores.device).tril()
        causal = torch.zeros((q_len, kv_len), dtype=scores.dtype, device=scores.device)
        causal = causal.masked_fill(~allowed, float("-inf"))
        bias = causal if bias is None else bias + causal
    return bias


@register("Attention", check=_check_attention)
def attention(node: Node, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    three_d = q.dim() == 3
    if three_d:
        q_heads, kv_heads = int(node.attr("q_num_heads", 0)), int(node.attr("kv_num_heads", 0))
        if not q_heads or not kv_heads:
            raise ValueError("3-D Attention inputs need the q_num_heads and kv_num_heads "
                             "attributes")
        q, k, v = _split_heads(q, q_heads), _split_heads(k, kv_heads), _split_heads(v, kv_heads)
    group, rest = divmod(q.shape[1], k.shape[1])
    if rest:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} key heads")
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = node.attr("scale")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    softcap = float(node.attr("softcap", 0.0))
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    bias = _bias(node, scores, mask)
    if bias is not None:
        scores = scores + bias
    # A row with every key masked gets weights 0, not NaN; its scores are zeroed before the
    # softmax so that no NaN reaches the backward pass either.
    dead = torch.isneginf(scores).all(-1, keepdim=True) if bias is not None else None
    if dead is not None:
        scores = scores.masked_fill(dead, 0.0)
    precision = node.attr("softmax_precision")
    compute = scores.dtype if precision is None else torch.promote_types(
        scores.dtype, _PRECISION[int(precision)])
    weights = torch.softmax(scores.to(compute), dim=-1).to(scores.dtype)
    if dead is not None:
        weights = weights.masked_fill(dead, 0.0)
    y = torch.matmul(weights, v)
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    return y
