"""What `attention_kernels.py` times: each variant's inputs (built once, not timed) and the
decode and prefill variants, by the names of its columns (its docstring says what each is)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from parrot_kernels import cpu_ops, cpu_shared_prefix, shared_prefix_decode, shared_prefix_prefill
from parrot_kernels.paged_attention import paged_decode_attention
from parrot_kernels.prefill_attention import prefill_attention

Inputs = dict[str, torch.Tensor]
Variant = Callable[[Inputs], object]


def make_inputs(args, device, dtype, b, p, s, t, seed) -> Inputs:
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    hq, hkv, d = args.heads, args.kv_heads, args.head_dim
    x = dict(q=rnd(b, t, hq, d), pk=rnd(p, hkv, d), pv=rnd(p, hkv, d))
    x["sk"], x["sv"] = rnd(b, s, hkv, d), rnd(b, s, hkv, d)
    # Baseline layout, built once and not timed.
    for n, pre, suf in (("k_all", x["pk"], x["sk"]), ("v_all", x["pv"], x["sv"])):
        x[n] = torch.cat([pre.expand(b, p, hkv, d), suf], dim=1).transpose(1, 2).contiguous()
    x["q4"] = x["q"].transpose(1, 2)  # [B, Hq, T, D]
    if t > 1:  # the engine's rows: [B, P+S, Hkv, D]
        x["k_rows"], x["v_rows"] = (x[n].transpose(1, 2).contiguous() for n in ("k_all", "v_all"))
    if t == 1:  # engine-style paged pool: the prefix in slots [0, P), then each suffix
        x["k_pool"] = torch.cat([x["pk"], x["sk"].reshape(b * s, hkv, d)])
        x["v_pool"] = torch.cat([x["pv"], x["sv"].reshape(b * s, hkv, d)])
        suffix_slots = p + torch.arange(b * s, device=device).view(b, s)
        prefix_slots = torch.arange(p, device=device).expand(b, p)
        x["suffix_index"] = suffix_slots.flatten()  # flat: index_select, as the engine
        x["all_slots"] = torch.cat([prefix_slots, suffix_slots], dim=1).contiguous()
        x["all_index"] = x["all_slots"].flatten()
        x["all_lengths"] = torch.full((b,), p + s, dtype=torch.long, device=device)
    return x


def decode_variants(b: int, triton_mod, cpu: bool) -> dict[str, Variant]:
    def sdpa_batch(x):
        return F.scaled_dot_product_attention(x["q4"], x["k_all"], x["v_all"], enable_gqa=True)

    def sdpa_req(x):
        q4, ka, va = x["q4"], x["k_all"], x["v_all"]
        return [
            F.scaled_dot_product_attention(
                q4[i : i + 1], ka[i : i + 1], va[i : i + 1], enable_gqa=True
            )
            for i in range(b)
        ]

    def pool_base(x):  # what the engine's plain decode path does: gather all, one SDPA
        shape = (b, -1, *x["k_pool"].shape[1:])
        k = x["k_pool"].index_select(0, x["all_index"]).view(shape).transpose(1, 2)
        v = x["v_pool"].index_select(0, x["all_index"]).view(shape).transpose(1, 2)
        return F.scaled_dot_product_attention(x["q4"], k, v, enable_gqa=True)

    ext = cpu_shared_prefix.loaded() and not triton_mod
    if triton_mod:
        shared_fn = triton_mod.shared_prefix_decode
    else:
        shared_fn = cpu_shared_prefix.shared_prefix_decode if ext else shared_prefix_decode

    def pool_shared(x):
        kp, vp, p, suf = x["k_pool"], x["v_pool"], x["pk"].shape[0], x["suffix_index"]
        shape = (b, -1, *kp.shape[1:])
        sk, sv = kp.index_select(0, suf).view(shape), vp.index_select(0, suf).view(shape)
        return shared_fn(x["q"][:, 0], kp[:p], vp[:p], sk, sv)

    out = {
        "sdpa-batch": sdpa_batch,
        "sdpa-req": sdpa_req,
        "shared": lambda x: shared_prefix_decode(x["q"][:, 0], x["pk"], x["pv"], x["sk"], x["sv"]),
        "pool-base": pool_base,
        "pool-shared": pool_shared,
    }
    if cpu and cpu_ops.loaded():
        out["pool-ext"] = lambda x: paged_decode_attention(
            x["q"][:, 0], x["k_pool"], x["v_pool"], x["all_slots"], x["all_lengths"]
        )
    if ext:
        out["shared-ext"] = lambda x: cpu_shared_prefix.shared_prefix_decode(
            x["q"][:, 0], x["pk"], x["pv"], x["sk"], x["sv"]
        )
    if triton_mod:
        out["triton"] = lambda x: triton_mod.shared_prefix_decode(
            x["q"][:, 0], x["pk"], x["pv"], x["sk"], x["sv"]
        )
    return out


def prefill_variants(b: int, triton_mod, cpu: bool) -> dict[str, Variant]:
    def sdpa_batch(x):
        t, length = x["q4"].shape[2], x["k_all"].shape[2]
        mask = causal_lower_right(t, length)  # query i sees the prefix and suffix keys <= i
        return F.scaled_dot_product_attention(
            x["q4"], x["k_all"], x["v_all"], attn_mask=mask, enable_gqa=True
        )

    def sdpa_req(x):
        q4, ka, va = x["q4"], x["k_all"], x["v_all"]
        mask = causal_lower_right(q4.shape[2], ka.shape[2])
        return [
            F.scaled_dot_product_attention(
                q4[i : i + 1], ka[i : i + 1], va[i : i + 1], attn_mask=mask, enable_gqa=True
            )
            for i in range(b)
        ]

    out = {
        "sdpa-batch": sdpa_batch,
        "sdpa-req": sdpa_req,
        "shared": lambda x: shared_prefix_prefill(x["q"], x["pk"], x["pv"], x["sk"], x["sv"]),
    }
    if triton_mod:
        out["triton"] = lambda x: triton_mod.shared_prefix_prefill(
            x["q"], x["pk"], x["pv"], x["sk"], x["sv"]
        )
    elif cpu and cpu_ops.loaded():
        out["chunk-ext"] = lambda x: [
            prefill_attention(x["q"][i], x["k_rows"][i], x["v_rows"][i]) for i in range(b)
        ]
    return out
