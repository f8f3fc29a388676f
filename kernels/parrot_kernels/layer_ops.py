"""A decoder layer's elementwise work: RMSNorm (optionally after the residual add), RoPE on q
and k in place, SiLU(gate) * up.

On CPU with fp32 rows each is one call into the compiled extension (`cpu_ops`,
`csrc/layer_ops.cpp`): in a decode step every torch op runs with caches cold from streaming the
weights, so one call instead of five to fifteen is most of what this layer work costs.
Elsewhere (other devices and dtypes, or before the extension is loaded) the same math runs as
torch ops; both agree to float rounding.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_ops

__all__ = ["add_rms_norm", "rms_norm", "rope_", "silu_mul"]


def _compiled(*tensors: Tensor) -> ModuleType | None:
    """The extension when it can take these tensors (fp32, contiguous, 2-D rows, CPU)."""
    module = cpu_ops.module()
    if module is None:
        return None
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
            return None
    return module


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x [N, D] normalised by its RMS and scaled by weight [D]; statistics in fp32 whatever
    the model dtype, as the reference implementation does."""
    module = _compiled(x, weight)
    if module is not None and x.dim() == 2:
        return module.rms_norm(x, weight, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x + delta, rms_norm(x + delta)): the residual add and the next norm in one call."""
    module = _compiled(x, delta, weight)
    if module is not None and x.dim() == 2 and delta.shape == x.shape:
        return module.add_rms_norm(x, delta, weight, eps)
    total = x + delta
    return total, rms_norm(total, weight, eps)


def rope_(qkv: Tensor, table: Tensor, rotated_heads: int, head_dim: int) -> None:
    """Rotate the first `rotated_heads` heads of each row of qkv [N, *] in place (q's heads,
    then k's). table [N, 2, head_dim / 2]: each row's cos, then sin. Half-split ("rotate
    half") RoPE, as HF Llama."""
    module = _compiled(qkv, table)
    if module is not None and qkv.dim() == 2:
        module.rope_(qkv, table, rotated_heads, head_dim)
        return
    n = qkv.shape[0]
    heads = qkv[:, : rotated_heads * head_dim].view(n, rotated_heads, head_dim)
    cos, sin = table.unsqueeze(2).unbind(1)  # [N, 1, D/2] each
    x1, x2 = heads.chunk(2, dim=-1)
    heads.copy_(torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1))


def silu_mul(gate_up: Tensor) -> Tensor:
    """SiLU(gate) * up for gate_up [N, 2I] holding gate then up; [N, I]."""
    module = _compiled(gate_up)
    if module is not None and gate_up.dim() == 2:
        return module.silu_mul(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
