"""`Embedder`: the sentence-transformers pipeline of a BERT-like encoder, synchronous, in
`transformers` (a server dependency): tokenize (cut at the model's window), forward, mean over
the attention mask, L2 normalisation. The one implementation: the server's `EmbeddingWorker`
runs it on its thread, `MiniLMEmbedding` in the caller's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.tokenizer import load_hf_tokenizer
from .model_dir import EmbeddingModelInfo

Input = str | Sequence[int]  # a text, or one text's token ids in the model's vocabulary


@dataclass
class Embedded:
    vectors: np.ndarray  # (inputs, dimensions) float32, unit length
    tokens: list[int]  # tokens embedded per input (after the cut, special tokens included)


class Embedder:
    def __init__(self, info: EmbeddingModelInfo, device: str = "cpu") -> None:
        from transformers import AutoModel

        self.info = info
        self.device = device
        self.tokenizer = load_hf_tokenizer(info.path)
        model = AutoModel.from_pretrained(str(info.path), local_files_only=True)
        self.model = model.to(device).eval()

    def embed(self, inputs: Sequence[Input]) -> Embedded:
        """One forward pass over `inputs` (the caller bounds how many). Token ids are decoded
        first (special tokens dropped: the tokenizer adds its own), so ids and their text give
        the same vector."""
        texts = [
            x if isinstance(x, str) else self.tokenizer.decode(x, skip_special_tokens=True)
            for x in inputs
        ]
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.info.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, dim=-1)
        tokens = batch["attention_mask"].sum(1).tolist()
        return Embedded(vectors.float().cpu().numpy(), tokens)
