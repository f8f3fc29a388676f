"""The names the served model answers to (`--served-model-name`, several allowed; else the
engine's own name) and its `/v1/models` cards, with what vLLM and SGLang put there; the cards of
models served beside it (the embedding model), which the chat routes do not answer to."""

from __future__ import annotations

import time

from parrot_integrations.protocol.openai import DEFAULT_MODEL_ALIAS, Model, ModelList

from .engine_client import EngineClient
from .errors import NotFoundError


class ModelNotFoundError(NotFoundError):
    """An unknown model name: a 404, as OpenAI answers."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist; GET /v1/models lists the served one")


class ServedModels:
    def __init__(self, engine: EngineClient, names: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.names = names
        self.created = int(time.time())  # stays put for the server's life
        self.other_cards: list[Model] = []  # listed and looked up only, never `resolve`d

    @property
    def primary(self) -> str:
        """The name responses carry when a request names none (or the default alias)."""
        return self.names[0] if self.names else self.engine.info.model

    def resolve(self, requested: str | None) -> str:
        """The name a response carries for a request's `model`; an unknown name raises
        `ModelNotFoundError`."""
        if requested in (None, "", DEFAULT_MODEL_ALIAS):
            return self.primary
        if requested in (self.names or (self.engine.info.model,)):
            return requested
        raise ModelNotFoundError(requested)

    def card(self, name: str) -> Model:
        info = self.engine.info
        return Model(
            id=name,
            created=self.created,
            root=info.model_path or info.model,
            max_model_len=info.max_context_len,
        )

    def list(self) -> ModelList:
        chat = [self.card(n) for n in self.names or (self.engine.info.model,)]
        return ModelList(data=chat + self.other_cards)

    def get(self, name: str) -> Model:
        other = next((c for c in self.other_cards if c.id == name), None)
        return other or self.card(self.resolve(name))
