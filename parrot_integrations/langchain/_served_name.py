"""The model name LangSmith traces show (`ls_model_name`): the name the server serves the
model under, as its answers carry it, not the `default` alias a model without `model=` sends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parrot_integrations.client import ParrotClient
from parrot_integrations.errors import ParrotError
from parrot_integrations.protocol.openai import DEFAULT_MODEL_ALIAS

if TYPE_CHECKING:
    from ._base import ParrotBase

LOOKUP_TIMEOUT_SECONDS = 5.0


def ls_model_name(model: ParrotBase, kwargs: dict[str, Any]) -> str:
    """The requested name, or for none the server's own (`GET /v1/models`); the alias when
    the server cannot be asked (its error surfaces at the call itself)."""
    name = model._ls_model_name(kwargs)
    if name != DEFAULT_MODEL_ALIAS:
        return name
    if model._served_name is None:
        # One quick try, not the model's retries: a trace's label must not delay the call.
        quick = {"max_retries": 0, "timeout": LOOKUP_TIMEOUT_SECONDS}
        try:
            with ParrotClient(**model._client_args(model.http_client) | quick) as client:
                cards = client.list_models().data
        except ParrotError:
            return name
        if not cards:
            return name
        model._served_name = cards[0].id  # asked once per model object
    return model._served_name
