"""Shared-prefix decode attention vs per-request attention.

    python benchmarks/kernels.py --quick   # B=16, P=2048, S=16/256 on CPU; < 1 minute
    python benchmarks/kernels.py           # B 1/4/16/64 x P 512/2048/8192 x S 16/256, CPU (+CUDA)

Every request of a batch decodes one token against a shared prefix of P tokens plus its own
suffix of S tokens (the suffix includes the token being decoded). Baselines get their K/V
already concatenated and laid out the way SDPA likes it ([B, Hkv, P+S, D], contiguous), and
that preparation is not timed, nor is any gather for the shared path: only attention is.

  sdpa-batch  one F.scaled_dot_product_attention over the whole batch (all suffixes have the
              same length here, so no padding mask is needed: the best case for a baseline)
  sdpa-req    one SDPA call per request over concat(prefix, suffix)
  shared      parrot_kernels.shared_prefix_decode (torch: one GEMM per KV head for the prefix)
  triton      parrot_kernels.triton_shared_prefix.shared_prefix_decode (CUDA only)
  pool-base   engine-style: gather every request's K/V from a paged pool, then one SDPA
  pool-shared gather the prefix once and the suffixes, then shared_prefix_decode

The variants run interleaved, round after round, so that drifts in machine load hit them alike;
each figure is the median over the rounds. speedup = the faster baseline / the faster
shared path (shared, or triton where it runs).
bound = B*(P+S) / (P + B*S): the ratio of K/V bytes read, i.e. the speedup of a purely
memory-bound kernel.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from parrot_kernels import shared_prefix_decode


def _timer(device: torch.device, inner: int) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / inner * 1e3

    return run


def bench_case(args, device, b, p, s, triton_decode=None) -> dict[str, float]:
    gen = torch.Generator(device="cpu").manual_seed(b * 1_000_003 + p * 101 + s)
    dtype = getattr(torch, args.dtype)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    hq, hkv, d = args.heads, args.kv_heads, args.head_dim
    q, pk, pv = rnd(b, hq, d), rnd(p, hkv, d), rnd(p, hkv, d)
    sk, sv = rnd(b, s, hkv, d), rnd(b, s, hkv, d)
    # Baseline layout, built once and not timed.
    k_all = torch.cat([pk.expand(b, p, hkv, d), sk], dim=1).transpose(1, 2).contiguous()
    v_all = torch.cat([pv.expand(b, p, hkv, d), sv], dim=1).transpose(1, 2).contiguous()
    q4 = q.unsqueeze(2)  # [B, Hq, 1, D]

    def sdpa_batch():
        return F.scaled_dot_product_attention(q4, k_all, v_all, enable_gqa=True)

    per_req = [(q4[i : i + 1], k_all[i : i + 1], v_all[i : i + 1]) for i in range(b)]

    def sdpa_req():
        return [F.scaled_dot_product_attention(*x, enable_gqa=True) for x in per_req]

    # Engine-style: K/V live in a paged pool [slots, Hkv, D] and are gathered every step. The
    # prefix occupies slots [0, P), request i's suffix the next S slots after the previous one.
    k_pool = torch.cat([pk, sk.reshape(b * s, hkv, d)])
    v_pool = torch.cat([pv, sv.reshape(b * s, hkv, d)])
    suffix_slots = p + torch.arange(b * s, device=device).view(b, s)
    all_slots = torch.cat([torch.arange(p, device=device).expand(b, p), suffix_slots], dim=1)
    prefix_slots = torch.arange(p, device=device)

    def pool_base():  # what the engine's decode path does today: gather all, one padded SDPA
        k = k_pool[all_slots].transpose(1, 2)
        v = v_pool[all_slots].transpose(1, 2)
        return F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)

    def pool_shared():
        return shared_prefix_decode(
            q,
            k_pool[prefix_slots],
            v_pool[prefix_slots],
            k_pool[suffix_slots],
            v_pool[suffix_slots],
        )

    variants = {
        "sdpa-batch": sdpa_batch,
        "sdpa-req": sdpa_req,
        "shared": lambda: shared_prefix_decode(q, pk, pv, sk, sv),
        "pool-base": pool_base,
        "pool-shared": pool_shared,
    }
    if triton_decode is not None:
        variants["triton"] = lambda: triton_decode(q, pk, pv, sk, sv)

    want = sdpa_batch().squeeze(2).float()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for name, fn in variants.items():  # a wrong kernel must not produce a figure
        got = fn()
        got = (torch.cat(got) if isinstance(got, list) else got).reshape(want.shape)
        err = (got.float() - want).abs().max().item()
        if err > tol:
            raise AssertionError(f"{name} differs from SDPA by {err:.2e} at B={b} P={p} S={s}")

    timer = _timer(device, inner=1 if device.type == "cpu" else 10)
    for fn in variants.values():  # warm-up
        timer(fn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(timer(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="B=16, P=2048, S=16/256 on CPU only")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--prefix", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--suffix", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--heads", type=int, default=9, help="query heads (SmolLM2-135M: 9)")
    ap.add_argument("--kv-heads", type=int, default=3, help="KV heads (SmolLM2-135M: 3)")
    ap.add_argument("--head-dim", type=int, default=64, help="head_dim (SmolLM2-135M: 64)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (median reported)")
    ap.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.prefix, args.suffix = [16], [2048], [16, 256]
        args.devices = args.devices or ["cpu"]
    args.rounds = args.rounds or (25 if args.quick else 15)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}; heads {args.heads}/{args.kv_heads}, "
        f"head_dim {args.head_dim}, {args.dtype}, decode, median of {args.rounds} rounds"
    )
    header = f"{'device':6} {'B':>3} {'P':>5} {'S':>4} {'sdpa-batch':>10} {'sdpa-req':>9} "
    header += f"{'shared':>8} {'triton':>8} {'speedup':>8} {'bound':>6} "
    header += f"{'pool-base':>9} {'pool-shared':>11} {'pool-speedup':>12}   (ms)"
    print(header)
    headline = None
    for dev_name in devices:
        device = torch.device(dev_name)
        triton_decode = None
        if device.type == "cuda":
            try:
                from parrot_kernels.triton_shared_prefix import shared_prefix_decode as td

                triton_decode = td
            except ImportError:
                print("(triton not installed: no triton column)")
        for s in args.suffix:
            for p in args.prefix:
                for b in args.batch:
                    t = bench_case(args, device, b, p, s, triton_decode)
                    base = min(t["sdpa-batch"], t["sdpa-req"])
                    best = min(t["shared"], t.get("triton", float("inf")))
                    bound = b * (p + s) / (p + b * s)
                    tri = f"{t['triton']:8.3f}" if "triton" in t else f"{'-':>8}"
                    print(
                        f"{dev_name:6} {b:3d} {p:5d} {s:4d} {t['sdpa-batch']:10.3f} "
                        f"{t['sdpa-req']:9.3f} {t['shared']:8.3f} {tri} "
                        f"{base / best:7.2f}x {bound:5.1f}x {t['pool-base']:9.3f} "
                        f"{t['pool-shared']:11.3f} {t['pool-base'] / t['pool-shared']:11.2f}x",
                        flush=True,
                    )
                    if dev_name == "cpu" and (b, p, s) == (16, 2048, 16):
                        headline = base / t["shared"]
                        pool = t["pool-base"] / t["pool-shared"]
    if headline is not None:  # CPU, S=16, torch shared path
        print(f"with the gather from the paged pool, B=16 P=2048: {pool:.2f}x")
        print(f"speedup B=16 P=2048: {headline:.2f}x")


if __name__ == "__main__":
    main()
