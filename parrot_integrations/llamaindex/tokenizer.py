"""`ParrotTokenizer`: LlamaIndex's tokenizer (a callable text -> token ids, with an `encode`
method) counting with the server's model (`POST /tokenize`), so prompt packing, text splitting and
memory buffers count the tokens the server will see. One round trip per text."""

from __future__ import annotations

from typing import Protocol

from ..client import ParrotClient


class ServerModel(Protocol):
    """What the tokenizer reads of its LLM (`Parrot`): the client, the model, the server."""

    @property
    def client(self) -> ParrotClient: ...
    @property
    def model(self) -> str: ...
    @property
    def api_base(self) -> str: ...


class ParrotTokenizer:
    """`Settings.tokenizer = llm.tokenizer`, or `tokenizer=` / `tokenizer_fn=` of one component.
    Uses the LLM's client, so its server, key, timeout and retries."""

    def __init__(self, llm: ServerModel) -> None:
        self.llm = llm

    def encode(self, text: str) -> list[int]:
        # No special tokens: the server adds none to a text prompt either.
        return self.llm.client.tokenize(text, add_special_tokens=False, model=self.llm.model).tokens

    __call__ = encode

    def __repr__(self) -> str:
        return f"ParrotTokenizer({self.llm.api_base!r})"
