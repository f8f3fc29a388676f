"""Embedded-engine benchmark: prefill and decode throughput, TTFT with a cached prefix, against
the machine's own fp32 GEMM rate, `transformers` generate and llama.cpp on the same GGUF (when
`llama-cpp-python` is installed; see docs/benchmarks.md for the build), all in one run. The
engine's goals are printed as same-run ratios before the headline.

    python benchmarks/engine.py --quick     # about a minute; headline figures on the last line
    python benchmarks/engine.py             # more repetitions, longer prompts
    python benchmarks/engine.py --dtype float32   # the expanded-weights path
    python benchmarks/engine.py --constrained     # decode with a JSON-schema constraint vs without
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Iterator

import torch

from parrot_kernels import cpu_shared_prefix
from parrot_server.engine.config import DTYPES, EngineConfig
from parrot_server.engine.engine import Engine
from parrot_server.engine.model import load_model
from parrot_server.engine.model.compact import QuantLinear
from parrot_server.engine.model.loader import gguf_cache_dir, weight_dtype
from parrot_server.engine.sampling_params import SamplingParams


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_gflops(reps: int) -> float:
    """fp32 GEMM rate at the shape of a prefill chunk through an MLP projection: the best of
    several runs, i.e. what the machine can do (a median moves with the neighbours' load on a
    shared VM, and a low rate would flatter every ratio against it)."""
    a, b = torch.randn(512, 576), torch.randn(576, 3072)
    a @ b
    best = min(median_time(lambda: [a @ b for _ in range(20)], 1) for _ in range(5 * reps)) / 20
    return 2 * 512 * 576 * 3072 / best / 1e9


def flops_per_token(cfg, context: int) -> float:
    """Matmul FLOPs of one token through every layer (attention over `context` tokens included)."""
    d, f, h, kv, hd = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
    )
    linear = d * (h + 2 * kv) * hd + h * hd * d + 3 * d * f
    attention = 2 * h * hd * context
    return cfg.num_layers * 2 * (linear + attention)


def prompt_ids(engine: Engine, n: int, salt: int = 0) -> list[int]:
    text = " ".join(
        f"Item {i + salt}: the value of {i} times {salt + 3} is {i * (salt + 3)}."
        for i in range(2000)
    )
    return engine.encode(text)[:n]


def bench_prefill(engine: Engine, n: int, reps: int) -> float:
    salt = iter(range(1000))

    def run():
        engine.flush_cache()
        engine.generate(
            [prompt_ids(engine, n, next(salt))], SamplingParams(max_new_tokens=1, temperature=0)
        )

    return n / median_time(run, reps)


@contextlib.contextmanager
def model_timer(model) -> Iterator[list[float]]:
    """Seconds spent in the model (embedding, layers, logits) per call, collected while
    inside (the final norm, a few microseconds, counts as outside)."""
    spent: list[float] = []

    def timed(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent.append(time.perf_counter() - t0)
            return out

        return run

    parts = ("embed", "run_layers", "compute_logits")
    for name in parts:
        setattr(model, name, timed(getattr(model, name)))
    try:
        yield spent
    finally:
        for name in parts:
            delattr(model, name)  # back to the class's methods


def decode_steps(engine: Engine, reqs: list) -> tuple[float, float]:
    """(median step seconds, median seconds of it in the model) once all requests have started."""
    while any(not r.output_ids for r in reqs):
        engine.step()
    steps, in_model = [], []
    with model_timer(engine.loaded.model) as spent:
        while engine.has_work():
            spent.clear()
            t0 = time.perf_counter()
            engine.step()
            steps.append(time.perf_counter() - t0)
            in_model.append(sum(spent))
    return statistics.median(steps), statistics.median(in_model)


# A JSON schema whose output cannot end within a benchmark's tokens (at least 64 records), so
# every row decodes as many tokens with it as without it.
RECORDS = {
    "type": "array",
    "minItems": 64,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "qty": {"type": "integer", "minimum": 0, "maximum": 99},
        },
        "required": ["name", "qty"],
    },
}


def bench_decode(
    engine: Engine, batch: int, new_tokens: int, reps: int, json_schema: str | None = None
) -> tuple[float, float]:
    """(aggregate decode tok/s, share of the step spent outside the model)."""

    def run() -> tuple[float, float]:
        engine.flush_cache()
        sp = SamplingParams(
            max_new_tokens=new_tokens, temperature=0, ignore_eos=True, json_schema=json_schema
        )
        return decode_steps(
            engine, [engine.submit(prompt_ids(engine, 32, i), sp) for i in range(batch)]
        )

    runs = [run() for _ in range(reps)]
    step = statistics.median(s for s, _ in runs)
    model = statistics.median(m for _, m in runs)
    return batch / step, max(0.0, step - model) / step


def bench_shared_prefix(
    loaded, batch: int, prefix_len: int, new_tokens: int, reps: int
) -> tuple[float, float]:
    """Decode tok/s of `batch` requests forked from one cached prefix: kernel on vs off."""
    rates = {}
    for min_tokens in (64, 0):
        engine = Engine(
            EngineConfig(
                kv_pool_tokens=16384, max_step_tokens=1024, shared_prefix_min_tokens=min_tokens
            ),
            loaded,
        )
        engine.submit(prompt_ids(engine, prefix_len, 11), context_id="doc", prefill_only=True)
        engine.run_until_idle()
        sp = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
        runs = []
        for _ in range(reps):
            reqs = [
                engine.submit(prompt_ids(engine, 16, 100 + i), sp, parent_context_id="doc")
                for i in range(batch)
            ]
            step, _ = decode_steps(engine, reqs)
            runs.append(batch / step)
        rates[min_tokens] = statistics.median(runs)
    return rates[64], rates[0]


def bench_arriving_together(
    loaded, batch: int, prefix_len: int, new_tokens: int, max_step_tokens: int, reps: int
) -> tuple[float, float]:
    """Seconds until `batch` requests sharing a `prefix_len`-token prefix, submitted at once
    to an empty cache, have all finished: as they are (the prefix computed once), and each in a
    cache namespace of its own (each computes it, as before in-flight sharing)."""
    engine = Engine(EngineConfig(kv_pool_tokens=16384, max_step_tokens=max_step_tokens), loaded)
    prefix = prompt_ids(engine, prefix_len, 11)
    sp = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)

    def run(isolated: bool) -> None:
        engine.flush_cache()
        for i in range(batch):
            ns = f"tenant-{i}" if isolated else None
            engine.submit(prefix + prompt_ids(engine, 24, 100 + i), sp, namespace=ns)
        engine.run_until_idle()

    return median_time(lambda: run(False), reps), median_time(lambda: run(True), reps)


def bench_shared_prefill(
    loaded, batch: int, prefix_len: int, question_len: int, reps: int
) -> tuple[float, float]:
    """Seconds to prefill `batch` questions forked from one cached prefix: kernel on vs off."""
    engines = {}
    for share in (True, False):
        engines[share] = Engine(
            EngineConfig(kv_pool_tokens=16384, max_step_tokens=1024, shared_prefix_prefill=share),
            loaded,
        )
        engines[share].submit(
            prompt_ids(engines[share], prefix_len, 11), context_id="doc", prefill_only=True
        )
        engines[share].run_until_idle()
    times: dict[bool, list[float]] = {True: [], False: []}
    sp = SamplingParams(max_new_tokens=1, temperature=0)
    for rep in range(reps):  # interleaved, so drift hits both alike
        for share, engine in engines.items():
            for i in range(batch):
                engine.submit(
                    prompt_ids(engine, question_len, 500 + 20 * rep + i),
                    sp,
                    parent_context_id="doc",
                )
            t0 = time.perf_counter()
            engine.run_until_idle()
            times[share].append(time.perf_counter() - t0)
    return statistics.median(times[True]), statistics.median(times[False])


def bench_ttft(engine: Engine, prefix_len: int, reps: int) -> tuple[float, float]:
    prefix = prompt_ids(engine, prefix_len, 7)
    sp = SamplingParams(max_new_tokens=1, temperature=0)

    def first_token(suffix: str) -> float:
        t0 = time.perf_counter()
        engine.generate([prefix + engine.encode(suffix)], sp)
        return time.perf_counter() - t0

    cold, warm = [], []
    for i in range(reps):
        engine.flush_cache()
        cold.append(first_token(f" Question {i}?"))
        warm.append(first_token(f" Another question {i}?"))
    return statistics.median(cold), statistics.median(warm)


def bench_transformers(loaded, batch: int, new_tokens: int, reps: int) -> float | None:
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    hf_dir = gguf_cache_dir(loaded.path) if loaded.path.suffix == ".gguf" else loaded.path
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    ids = torch.tensor([list(range(100, 132))] * batch)

    def run():
        with torch.inference_mode():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

    return batch * new_tokens / median_time(run, reps)


def bench_llama_cpp(
    path: str, new_tokens: int, prefill_len: int, reps: int
) -> tuple[float, float] | None:
    """llama.cpp on the same GGUF with as many threads as torch (llama-cpp-python, when
    installed): (single-stream decode tok/s, streamed, from the first token on; prefill tok/s of
    a `prefill_len`-token prompt)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    threads = torch.get_num_threads()
    llm = Llama(
        model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    llm("warm up", max_tokens=4)
    decode, prefill = [], []
    for i in range(reps):
        stream = llm(
            f"Once upon a time, story {i}:", max_tokens=new_tokens, temperature=0, stream=True
        )
        next(stream)
        t0, n = time.perf_counter(), 0
        for _ in stream:
            n += 1
        decode.append(n / (time.perf_counter() - t0))
        # A fresh prompt each time (no cache reuse); one token out: prompt processing only.
        prompt = [llm.token_bos()] + [100 + (i * 7 + j) % 5000 for j in range(prefill_len - 1)]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        prefill.append(prefill_len / (time.perf_counter() - t0))
    return statistics.median(decode), statistics.median(prefill)


def model_bytes(model) -> tuple[int, int]:
    """(the weights' bytes, of which dense copies kept for prompt GEMMs)."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return total, sum(m.dense_bytes for m in model.modules() if isinstance(m, QuantLinear))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument("--model", default=None, help="GGUF or HF dir (default: bundled SmolLM2-135M)")
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights as the engine's --dtype (auto: GGUF blocks kept on CPU)",
    )
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument(
        "--shared-prefill",
        action="store_true",
        help="only compare prefilling 16 forks of a 2K prefix with and without the kernel",
    )
    ap.add_argument(
        "--together",
        action="store_true",
        help="only time 8 requests sharing a 1.5K-token prefix submitted at once: the prefix "
        "computed once vs by each",
    )
    ap.add_argument(
        "--constrained",
        action="store_true",
        help="only compare decode at batch 1 and 32 with a JSON-schema constraint and without",
    )
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    new_tokens = 12 if args.quick else 64
    prefill_len = 512 if args.quick else 1024

    loaded = load_model(args.model, dtype=weight_dtype(args.dtype))
    # The engine builds the CPU extension in the background; have it ready before timing.
    print(f"CPU shared-prefix extension: {'loaded' if cpu_shared_prefix.load() else 'no'}")
    if args.shared_prefill:
        on, off = bench_shared_prefill(loaded, 16, 2048, 48, reps)
        print(
            f"prefill of 16 x 48-token questions on a shared 2K prefix: kernel {1000 * on:.0f} ms, "
            f"plain {1000 * off:.0f} ms ({off / on:.2f}x)"
        )
        return
    if args.together:
        for step in (512, 2048):
            once, each = bench_arriving_together(loaded, 8, 1536, 32, step, reps)
            print(
                f"8 requests sharing a 1.5K-token prefix, submitted together, 32 tokens each, "
                f"max_step_tokens {step}: prefix computed once {once:.2f} s, by each (a "
                f"namespace each) {each:.2f} s ({each / once:.2f}x)"
            )
        return
    # Drafts off: these figures are the engine's speed per token, against llama.cpp's plain
    # decoding, and a step is counted as one token per request (a step verifying a draft makes
    # more; drafts are measured in apps.py, against the peer's own).
    engine = Engine(
        EngineConfig(
            kv_pool_tokens=16384, max_step_tokens=1024, max_running_requests=64,
            speculative_tokens=0,
        ),
        loaded,
    )  # fmt: skip
    if args.constrained:
        schema = json.dumps(RECORDS)
        for b in (1, 32):
            free, _ = bench_decode(engine, b, 2 * new_tokens, reps)
            constrained, _ = bench_decode(engine, b, 2 * new_tokens, reps, schema)
            print(
                f"decode batch {b:>2}: free {free:.1f} tok/s, JSON schema {constrained:.1f} tok/s "
                f"({constrained / free:.2f}; goal >= 0.9)"
            )
        return
    cfg = loaded.config
    gflops = gemm_gflops(reps)
    prefill = bench_prefill(engine, prefill_len, reps)
    gemm_tok = gflops * 1e9 / flops_per_token(cfg, prefill_len // 2)  # prefill at the GEMM rate
    decode, overhead = {}, {}
    for b in (1, 8, 32):
        decode[b], overhead[b] = bench_decode(engine, b, new_tokens, reps)
    cold, warm = bench_ttft(engine, 1024, reps)
    shared_on, shared_off = bench_shared_prefix(
        loaded, 16, 2048, 6 if args.quick else 32, 1 if args.quick else 3
    )
    hf = (
        {}
        if args.no_transformers
        else {
            b: bench_transformers(loaded, b, new_tokens, 1 if b > 1 else reps) for b in (1, 8, 32)
        }
    )
    gguf = str(loaded.path).endswith(".gguf")
    lcpp = bench_llama_cpp(str(loaded.path), 64, prefill_len, 3) if gguf else None
    weights_mb, copies_mb = (b / 1e6 for b in model_bytes(loaded.model))
    weights_mb -= copies_mb
    file_mb = loaded.path.stat().st_size / 1e6 if gguf else None

    print(
        f"model {loaded.name} ({loaded.weights}); torch threads {torch.get_num_threads()}; "
        f"reps {reps} (medians)"
    )
    print(f"fp32 GEMM: {gflops:.1f} GFLOP/s")
    print(
        f"prefill ({prefill_len} tokens): {prefill:.0f} tok/s = {100 * prefill / gemm_tok:.0f}% "
        "of GEMM rate"
    )
    for b, v in decode.items():
        hf_v = hf.get(b)
        print(
            f"decode batch {b:>2}: parrot {v:7.1f} tok/s | transformers "
            + (f"{hf_v:7.1f} tok/s ({v / hf_v:.2f}x)" if hf_v else "n/a")
            + f" | outside the model {100 * overhead[b]:.0f}% of the step"
        )
    if lcpp:
        print(
            f"llama.cpp: single stream {lcpp[0]:.1f} tok/s, prefill ({prefill_len}) "
            f"{lcpp[1]:.0f} tok/s"
        )
    else:
        print("llama.cpp: not installed (pip install llama-cpp-python; see docs/benchmarks.md)")
    print(
        f"TTFT with a 1K-token prefix: cold {1000 * cold:.0f} ms, cached {1000 * warm:.0f} ms ({cold / warm:.1f}x)"
    )
    print(
        f"decode, 16 requests on a shared 2K prefix: shared-prefix kernel {shared_on:.1f} tok/s, "
        f"plain paged attention {shared_off:.1f} tok/s ({shared_on / shared_off:.2f}x)"
    )
    print("goals (same run):")
    if lcpp:
        print(f"  batch-1 decode / llama.cpp single stream: {decode[1] / lcpp[0]:.2f} (goal >= 1)")
        print(
            f"  batch-32 aggregate / llama.cpp single stream: {decode[32] / lcpp[0]:.2f} "
            "(goal >= 3)"
        )
    best_prefill = max(gemm_tok, lcpp[1] if lcpp else 0.0)
    print(
        f"  prefill / max(GEMM-rate prefill {gemm_tok:.0f}, llama.cpp prefill "
        + (f"{lcpp[1]:.0f}" if lcpp else "n/a")
        + f" tok/s): {prefill / best_prefill:.2f} "
        "(goal >= 0.8)"
    )
    print(f"  batch-1 step outside the model: {overhead[1]:.2f} (goal <= 0.10)")
    if file_mb:
        print(
            f"  model memory {weights_mb:.0f} MB / GGUF file {file_mb:.0f} MB: "
            f"{weights_mb / file_mb:.2f} (goal <= 1.5; besides, dense copies for prompt GEMMs "
            f"{copies_mb:.0f} MB, --dense-weights-mb)"
        )
    hf_txt = "/".join(f"{hf[b]:.0f}" if hf.get(b) else "n/a" for b in (1, 8, 32))
    print(
        f"headline: prefill {prefill:.0f} tok/s ({100 * prefill / gemm_tok:.0f}% of {gflops:.0f} GFLOP/s GEMM); "
        f"decode b1/b8/b32 {decode[1]:.0f}/{decode[8]:.0f}/{decode[32]:.0f} tok/s; "
        f"transformers b1/b8/b32 {hf_txt} tok/s; "
        + (
            f"llama.cpp b1 {lcpp[0]:.0f} tok/s (parrot b1 = {decode[1] / lcpp[0]:.2f}x, "
            f"b32 = {decode[32] / lcpp[0]:.2f}x); "
            if lcpp
            else ""
        )
        + f"TTFT 1K prefix cold/cached {1000 * cold:.0f}/{1000 * warm:.0f} ms; "
        f"16 x shared 2K prefix decode {shared_on / shared_off:.2f}x"
    )


if __name__ == "__main__":
    main()
