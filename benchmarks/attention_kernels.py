"""Shared-prefix attention vs per-request attention, decode and prefill, on CPU and CUDA.

    python benchmarks/attention_kernels.py --quick                  # CPU, decode B=16 P=2048; < 1 minute
    python benchmarks/attention_kernels.py --device cpu             # CPU decode grid (fp32)
    python benchmarks/attention_kernels.py --device cuda --dtype bfloat16 float16 --mode decode prefill

Decode: every request of a batch decodes one token against a shared prefix of P tokens plus its
own suffix of S tokens (the suffix includes the token being decoded). Prefill: every request
computes its T new tokens (its whole suffix, S = T) against the shared prefix, causally.
Baselines get their K/V already concatenated and laid out the way SDPA likes it
([B, Hkv, P+S, D], contiguous); that preparation is not timed, nor is any gather for the shared
paths: only attention is.

  sdpa-batch  one F.scaled_dot_product_attention over the whole batch (all suffixes have the
              same length here, so no padding mask is needed: the best case for a baseline;
              on CUDA this is flash attention, which splits long KV for decode)
  sdpa-req    one SDPA call per request over concat(prefix, suffix)
  shared      parrot_kernels.shared_prefix (torch: one GEMM per KV head for the prefix)
  shared-ext  parrot_kernels.cpu_shared_prefix (CPU decode: the same two fused-attention calls
              with the glue between them compiled; only where the extension builds)
  triton      parrot_kernels.triton_shared_prefix (CUDA only)
  pool-ext    decode, the engine's compiled paged decode attention (parrot_kernels
              .paged_attention) over every request's slots of the pool, prefix included; CPU
  chunk-ext   prefill, per request: parrot_kernels.prefill_attention over concat(prefix, suffix)
              (the engine's path for a chunk without a prefix shared in its step; CPU)
  pool-base   decode, as the engine's plain path: gather every request's K/V from a paged pool
              (index_select), one SDPA
  pool-shared decode, as the engine's shared path: the prefix, held in one run of pool slots,
              read as a view; the suffixes gathered; then the shared path (triton on CUDA,
              the CPU extension where it built, else torch)

Timing. The variants run interleaved, round after round, so that drifts in machine load hit
them alike; each figure is the median over the rounds, in ms per call. On CUDA every round
replays a CUDA graph of several calls (GPU time, without Python and launch overhead), and the
calls rotate over copies of the inputs (up to 32, until they span 256 MB, 5x an H100's L2), so
that large cases are read from HBM. The eager columns time the same calls launched from
Python, as the engine launches them today.

speedup = the faster baseline / the device's shared path (triton on CUDA; on CPU shared-ext
where it built, else shared).
bound = B*(P+S) / (P+B*S): the ratio of K/V bytes read, i.e. the speedup of a purely
memory-bound kernel (decode). GB/s = the K/V, q and output bytes each variant must move at
least, over its time (HBM: ~3.35 TB/s on an H100 SXM).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch
from attention_variants import Inputs, Variant, decode_variants, make_inputs, prefill_variants

from parrot_kernels import cpu_ops, cpu_shared_prefix

ROTATE_BYTES = 256 << 20  # CUDA: input copies to rotate over, 5x an H100's L2 (up to 32)


def _as_bthd(out, shape) -> torch.Tensor:
    """Any variant's output -> [B, T, Hq, D] fp32."""
    if isinstance(out, list):
        out = torch.cat(out)
    if out.dim() == 4 and out.shape[1] != shape[1]:  # SDPA layout [B, Hq, T, D]
        out = out.transpose(1, 2)
    return out.reshape(shape).float()


def check(variants: dict[str, Variant], x: Inputs, where: str) -> dict[str, Variant]:
    """A wrong kernel must not produce a figure: every variant against sdpa-batch. Returns the
    variants that agree; the others are reported and dropped (their columns print '-')."""
    want = _as_bthd(variants["sdpa-batch"](x), x["q"].shape)
    half = x["q"].dtype != torch.float32
    good = {}
    for name, fn in variants.items():
        try:
            got = _as_bthd(fn(x), want.shape)
        except Exception as exc:  # a GPU run is precious: report, and time the rest
            print(f"!! {name} failed at {where}: {type(exc).__name__}: {exc}", flush=True)
            continue
        if half:  # relative to the output's norm: rounding to bf16 alone costs ~2e-3
            err = ((got - want).norm() / want.norm()).item()
        else:
            err = (got - want).abs().max().item()
        if err <= (2e-2 if half else 1e-4):  # also rejects nan
            good[name] = fn
        else:
            print(f"!! {name} differs from SDPA by {err:.2e} at {where}", flush=True)
    return good


def time_cpu(variants: dict[str, Variant], x: Inputs, rounds: int) -> dict[str, float]:
    def once(fn):
        start = time.perf_counter()
        fn(x)
        return (time.perf_counter() - start) * 1e3

    for fn in variants.values():  # warm-up
        once(fn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(once(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def time_cuda(
    variants: dict[str, Variant], sets: list[Inputs], rounds: int, calls: int
) -> dict[str, float]:
    """Median ms per call: CUDA-graph replays (GPU time), and `eager:` launches from Python."""
    graphs, sequence = {}, [sets[i % len(sets)] for i in range(calls)]
    for name, fn in variants.items():
        for x in sets:  # warm-up outside the capture: compiles kernels, creates handles
            fn(x)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g):
                for x in sequence:
                    fn(x)
            graphs[name] = g
        except Exception as exc:  # then only its eager figure is reported
            print(f"!! {name}: no CUDA graph ({type(exc).__name__}: {exc})", flush=True)
            torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            if name in graphs:
                start.record()
                graphs[name].replay()
                end.record()
                end.synchronize()
                times.setdefault(name, []).append(start.elapsed_time(end) / calls)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for x in sequence:
                fn(x)
            torch.cuda.synchronize()
            times.setdefault(f"eager:{name}", []).append((time.perf_counter() - t0) * 1e3 / calls)
    del graphs
    return {name: statistics.median(t) for name, t in times.items()}


def bytes_moved(args, b: int, p: int, s: int, t: int, elt: int) -> dict[str, int]:
    """Fewest device-memory bytes each kind of variant must move: K/V once, q and out once."""
    kv_row = 2 * args.kv_heads * args.head_dim * elt  # K and V of one token
    qo = 2 * b * t * args.heads * args.head_dim * elt
    return dict(shared=p * kv_row + b * s * kv_row + qo, base=b * (p + s) * kv_row + qo)


def run_grid(args, mode: str, device: torch.device, dtype: torch.dtype, triton_mod) -> list:
    rows = []
    names = ["sdpa-batch", "sdpa-req", "shared", "shared-ext", "triton"]
    if mode == "decode":
        names += ["pool-base", "pool-ext", "pool-shared"]
    else:
        names += ["chunk-ext"]
    lengths = args.suffix if mode == "decode" else args.query
    cuda = device.type == "cuda"
    head = f"{'B':>3} {'P':>5} {'S':>4} " + " ".join(f"{n:>11}" for n in names)
    head += f" {'speedup':>8} {'bound':>6}"
    if mode == "decode":
        head += f" {'pool-speedup':>12}"
    if cuda:
        head += f" {'eager-sdpa':>10} {'eager-tri':>10} {'base GB/s':>9} {'tri GB/s':>9}"
    print(f"\n{device.type} {mode} {str(dtype)[6:]} (ms per call)\n{head}", flush=True)
    for s in lengths:
        for p in args.prefix:
            for b in args.batch if mode == "decode" else args.prefill_batch:
                t = 1 if mode == "decode" else s
                seed = b * 1_000_003 + p * 101 + s
                where = f"{mode} B={b} P={p} S={s} {dtype}"
                pick = decode_variants if mode == "decode" else prefill_variants
                x0 = make_inputs(args, device, dtype, b, p, s, t, seed)
                variants = check(pick(b, triton_mod, not cuda), x0, where)
                moved = bytes_moved(args, b, p, s, t, x0["q"].element_size())
                if cuda:
                    copies = min(32, math.ceil(ROTATE_BYTES / moved["base"]))
                    sets = [x0] + [
                        make_inputs(args, device, dtype, b, p, s, t, seed + i)
                        for i in range(1, copies)
                    ]
                    tm = time_cuda(variants, sets, args.rounds, max(copies, 8))
                    del sets
                else:
                    tm = time_cpu(variants, x0, args.rounds)
                del x0
                nan = math.nan
                base = min(tm.get("sdpa-batch", nan), tm.get("sdpa-req", nan))
                # The device's own shared path.
                best = tm.get("triton", tm.get("shared-ext", tm.get("shared", nan)))
                bound = b * (p + s) / (p + b * s) if mode == "decode" else nan
                line = f"{b:3d} {p:5d} {s:4d} " + " ".join(
                    f"{tm[n]:11.4f}" if n in tm else f"{'-':>11}" for n in names
                )
                line += f" {base / best:7.2f}x " + (
                    f"{bound:5.1f}x" if bound == bound else "     -"
                )
                if mode == "decode":
                    pool = tm.get("pool-base", nan) / tm.get("pool-shared", nan)
                    line += f" {pool:11.2f}x"
                if cuda:
                    eager = (tm.get("eager:sdpa-batch", nan), tm.get("eager:triton", nan))
                    line += f" {eager[0]:10.4f} {eager[1]:10.4f}"
                    # bytes / 1e6 / ms = GB/s
                    line += f" {moved['base'] / 1e6 / tm.get('sdpa-batch', nan):9.0f}"
                    line += f" {moved['shared'] / 1e6 / tm.get('triton', nan):9.0f}"
                print(line, flush=True)
                row = dict(mode=mode, device=device.type, dtype=str(dtype)[6:], B=b, P=p, S=s)
                # Named apart from the timing columns ("shared" is one).
                bytes_ = {f"bytes_{k}": v for k, v in moved.items()}
                speedups = {"speedup": base / best, "speedup_torch": base / tm.get("shared", nan)}
                rows.append({**row, **tm, **speedups, "bound": bound, **bytes_})
                if cuda:
                    torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU decode B=16, P=2048, S=16/256")
    ap.add_argument("--device", nargs="+", default=["auto"], choices=["auto", "cpu", "cuda"])
    ap.add_argument("--mode", nargs="+", default=["decode"], choices=["decode", "prefill"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--prefix", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--suffix", type=int, nargs="+", default=[16, 256], help="decode")
    ap.add_argument("--prefill-batch", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--query", type=int, nargs="+", default=[64, 256], help="prefill T (= S)")
    ap.add_argument("--heads", type=int, default=9, help="query heads (SmolLM2-135M: 9)")
    ap.add_argument("--kv-heads", type=int, default=3, help="KV heads (SmolLM2-135M: 3)")
    ap.add_argument("--head-dim", type=int, default=64, help="head_dim (SmolLM2-135M: 64)")
    ap.add_argument(
        "--dtype", nargs="+", default=None, choices=["float32", "bfloat16", "float16"],
        help="default: float32 on CPU, bfloat16 on CUDA",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (median reported)")
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.prefix, args.suffix = [16], [2048], [16, 256]
        args.mode = ["decode"]
        args.device = ["cpu"] if args.device == ["auto"] else args.device
    args.rounds = args.rounds or (25 if args.quick else 15)
    devices = []
    for name in args.device:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        devices.append(torch.device(name))

    if "cpu" in [d.type for d in devices]:
        built = cpu_shared_prefix.load()
        why = "" if built else f" ({cpu_shared_prefix.unavailable_reason()})"
        print(f"CPU extension (shared-ext): {'loaded' if built else 'not available'}{why}")
        ops = cpu_ops.load()
        why = "" if ops else f" ({cpu_ops.unavailable_reason()})"
        print(f"CPU operators (chunk-ext): {'loaded' if ops else 'not available'}{why}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}; heads {args.heads}/{args.kv_heads}, "
        f"head_dim {args.head_dim}; median of {args.rounds} rounds"
    )
    rows, headline = [], None
    for device in devices:
        triton_mod = None
        if device.type == "cuda":
            print(f"GPU: {torch.cuda.get_device_name(device)}")
            try:
                from parrot_kernels import triton_shared_prefix as triton_mod
            except ImportError:
                print("(triton not installed: no triton column)")
        for dtype_name in args.dtype or ["bfloat16" if device.type == "cuda" else "float32"]:
            for mode in args.mode:
                dtype = getattr(torch, dtype_name)
                got = run_grid(args, mode, device, dtype, triton_mod)
                rows += got
                for r in got:
                    if headline is None and (r["mode"], r["B"], r["P"], r["S"]) == (
                        "decode", 16, 2048, 16
                    ):  # fmt: skip
                        headline = r
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if headline is not None:  # the first device's decode figure, S=16
        pool = headline["pool-base"] / headline["pool-shared"]
        print(f"\nwith the gather from the paged pool, B=16 P=2048: {pool:.2f}x")
        if "shared-ext" in headline:
            print(f"torch path alone (shared), B=16 P=2048: {headline['speedup_torch']:.2f}x")
        print(f"speedup B=16 P=2048: {headline['speedup']:.2f}x")


if __name__ == "__main__":
    main()
