"""Shape checks and ragged-to-padded conversion shared by every shared-prefix backend.

The backends work on padded batches: per-request sequences [L_b, H, D] become one zero-padded
[B, max L_b, H, D] tensor plus lengths [B]. Lengths stay on the data's device so that building
masks from them never forces a host sync on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

Ragged = torch.Tensor | Sequence[torch.Tensor]
Lengths = torch.Tensor | Sequence[int] | None


def pad_ragged(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[x_b of shape [L_b, ...]] -> (zero-padded [B, max L_b, ...], lengths [B] int64)."""
    if not seqs:
        raise ValueError("need at least one sequence")
    first = seqs[0]
    longest = max(s.shape[0] for s in seqs)
    out = first.new_zeros((len(seqs), longest, *first.shape[1:]))
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    lens = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long, device=first.device)
    return out, lens


def as_padded(x: Ragged, lens: Lengths) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """A padded [B, L, ...] tensor (+ lengths, default all L) or a list -> (padded, lengths, full).

    lengths is None when none were given for a tensor (all L). full is True when every length is
    known, without a device sync, to equal L.
    """
    if not isinstance(x, torch.Tensor):
        if lens is not None:
            raise ValueError("lengths are implied by a list of sequences; pass None")
        padded, lens_t = pad_ragged(x)
        return padded, lens_t, all(s.shape[0] == padded.shape[1] for s in x)
    if lens is None:
        return x, None, True
    out = torch.as_tensor(lens, dtype=torch.long, device=x.device).contiguous()
    if out.shape != (x.shape[0],):
        raise ValueError(f"expected {x.shape[0]} lengths, got shape {tuple(out.shape)}")
    return x, out, False


def _lengths(given: torch.Tensor | None, padded: torch.Tensor) -> torch.Tensor:
    if given is not None:
        return given
    return torch.full((padded.shape[0],), padded.shape[1], dtype=torch.long, device=padded.device)


@dataclass(frozen=True)
class Problem:
    """A validated shared-prefix attention problem in padded form.

    q: [B, T, Hq, D]; q_lens: [B]. prefix_k/v: [P, Hkv, D]. suffix_k/v: [B, S, Hkv, D];
    suffix_lens: [B]. Query t of request b sits at suffix position suffix_lens[b] - q_lens[b] + t.
    full: every q_lens[b] == T and suffix_lens[b] == S (lets decode skip masking).
    given_q_lens / given_suffix_lens: the lengths as given, None for "all T" / "all S"; the
    q_lens / suffix_lens tensors are only built when asked for (a GPU kernel launch each).
    """

    q: torch.Tensor
    given_q_lens: torch.Tensor | None
    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    suffix_k: torch.Tensor
    suffix_v: torch.Tensor
    given_suffix_lens: torch.Tensor | None
    scale: float
    full: bool

    @cached_property
    def q_lens(self) -> torch.Tensor:
        return _lengths(self.given_q_lens, self.q)

    @cached_property
    def suffix_lens(self) -> torch.Tensor:
        return _lengths(self.given_suffix_lens, self.suffix_k)

    @property
    def group(self) -> int:
        return self.q.shape[2] // self.prefix_k.shape[1]


def make_problem(
    q: Ragged,
    q_lens: Lengths,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Ragged,
    suffix_v: Ragged,
    suffix_lens: Lengths,
    scale: float | None,
) -> Problem:
    qp, q_lens_t, q_full = as_padded(q, q_lens)
    sk, s_lens, s_full = as_padded(suffix_k, suffix_lens)
    sv, _, _ = as_padded(suffix_v, suffix_lens)
    b, _, hq, d = qp.shape
    _, hkv, dk = prefix_k.shape
    if dk != d:
        raise ValueError(f"query head_dim {d} != KV head_dim {dk}")
    if prefix_v.shape != prefix_k.shape:
        raise ValueError(f"prefix K {tuple(prefix_k.shape)} and V {tuple(prefix_v.shape)} differ")
    if sk.shape != sv.shape or sk.shape[0] != b or tuple(sk.shape[2:]) != (hkv, d):
        raise ValueError(f"suffix K/V {tuple(sk.shape)} do not fit {b} requests x [S, {hkv}, {d}]")
    if hkv == 0 or hq % hkv:
        raise ValueError(f"num_heads {hq} is not a multiple of num_kv_heads {hkv}")
    scale = d**-0.5 if scale is None else scale
    return Problem(qp, q_lens_t, prefix_k, prefix_v, sk, sv, s_lens, scale, q_full and s_full)


def run_prefill(
    attend: Callable[[Problem], torch.Tensor],
    q: Ragged,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Ragged,
    suffix_v: Ragged,
    suffix_lens: Lengths,
    q_lens: Lengths,
    scale: float | None,
) -> torch.Tensor | list[torch.Tensor]:
    """Normalise prefill inputs, call attend(Problem) -> [B, T, Hq, D] (or any view of it with
    the heads split, e.g. [B, T, Hkv, G, D]), restore the q layout."""
    prob = make_problem(q, q_lens, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, scale)
    out = attend(prob).reshape(prob.q.shape)
    if not isinstance(q, torch.Tensor):
        return [out[i, : x.shape[0]].to(x.dtype) for i, x in enumerate(q)]
    if not prob.full:  # zero the padded query rows
        t = torch.arange(out.shape[1], device=out.device)
        out = out.masked_fill((t[None, :] >= prob.q_lens[:, None])[:, :, None, None], 0.0)
    return out.to(q.dtype)


def run_decode(
    attend: Callable[[Problem], torch.Tensor],
    q: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    suffix_k: Ragged,
    suffix_v: Ragged,
    suffix_lens: Lengths,
    scale: float | None,
) -> torch.Tensor:
    """Decode is prefill with T = 1: q [B, Hq, D] -> attend -> [B, Hq, D]."""
    prob = make_problem(
        q.unsqueeze(1), None, prefix_k, prefix_v, suffix_k, suffix_v, suffix_lens, scale
    )
    return attend(prob).reshape(q.shape).to(q.dtype)
