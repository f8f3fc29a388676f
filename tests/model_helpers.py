"""Helpers for tests that run the model: parity prompts, chat-template ids, greedy decoding and
logits by whole-sequence recomputation (no engine), and a test-sized engine."""

from __future__ import annotations

from typing import Any

import torch

from parrot_server.engine.config import EngineConfig
from parrot_server.engine.engine import Engine
from parrot_server.engine.model import DenseCausalAttention, LlamaModel, LoadedModel

# Chat questions the engine tests decode, alone and batched.
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
    "What is 2 + 2?",
]
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence why the sky is blue.",
]


def _forward(model: LlamaModel, ids: list[int]) -> torch.Tensor:
    device = next(model.parameters()).device
    positions = torch.arange(len(ids), device=device)
    return model(torch.tensor(ids, device=device), positions, DenseCausalAttention())


def logits_of(model: LlamaModel, ids: list[int]) -> torch.Tensor:
    """fp32 logits of every position, on the CPU whatever the model's device."""
    return model.compute_logits(_forward(model, ids)).float().cpu()


def greedy(model: LlamaModel, ids: list[int], n: int, eos: tuple[int, ...]) -> list[int]:
    """Recomputes the whole sequence each step: slow but obviously right."""
    seq = list(ids)
    for _ in range(n):
        seq.append(int(model.compute_logits(_forward(model, seq)[-1:]).argmax()))
        if seq[-1] in eos:
            break
    return seq[len(ids) :]


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    """One user turn through the model's chat template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )


def small_engine(loaded: LoadedModel, **overrides: Any) -> Engine:
    """An engine on `loaded` with test-sized limits; `overrides` are EngineConfig fields."""
    cfg: dict[str, Any] = dict(kv_pool_tokens=4096, max_step_tokens=256, max_running_requests=16)
    cfg.update(overrides)
    return Engine(EngineConfig(**cfg), loaded=loaded)
