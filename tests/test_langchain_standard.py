"""langchain-tests' standard suites for `ChatParrot`, the integration one against a real
`parrot serve` (`server_url`).

Features the server does not serve yet are declared unsupported through the suites' own
properties (each with its reason); nothing else is skipped.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from parrot_integrations.langchain import ChatParrot

# The model `parrot serve` loads by default (tests/conftest.py starts it with no --model).
SERVED_MODEL = "SmolLM2-135M-Instruct"


class _Unsupported:
    """What both suites should not exercise, and why."""

    @property
    def chat_model_class(self) -> type[ChatParrot]:
        return ChatParrot

    @property
    def supports_image_inputs(self) -> bool:
        return False  # text-only models: non-text content parts are a 400

    @property
    def supports_image_urls(self) -> bool:
        return False  # as above

    @property
    def supports_pdf_inputs(self) -> bool:
        return False  # as above

    @property
    def supports_audio_inputs(self) -> bool:
        return False  # as above

    @property
    def supports_video_inputs(self) -> bool:
        return False  # as above

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False  # Anthropic content blocks (tool_use, images) are not OpenAI messages

    @property
    def supports_image_tool_message(self) -> bool:
        return False  # text-only models: no images in tool results either

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False  # as above

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        # The server serves one model: a per-call `model=` naming it must reach the request.
        return SERVED_MODEL


class TestChatParrotUnit(_Unsupported, ChatModelUnitTests):
    # test_serdes skips itself: ChatParrot is not `is_lc_serializable`, because
    # langchain_core.load only revives classes in its own partner mapping, so a reloaded
    # out-of-tree model could never pass that test.

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {"PARROT_BASE_URL": "http://parrot.example:9000/v1", "PARROT_API_KEY": "k-123"}
        expected = {"base_url": "http://parrot.example:9000", "api_key": "k-123"}
        return env, {}, expected


@pytest.mark.slow
class TestChatParrotIntegration(_Unsupported, ChatModelIntegrationTests):
    url: str = ""

    @pytest.fixture(autouse=True)
    def _server(self, server_url: str) -> None:
        # Properties cannot take fixtures: the suite builds models from chat_model_params.
        type(self).url = server_url

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # The integration suite sets no sampling parameters, and a model without max_tokens
        # may write to the end of the context window (2048 tokens here: minutes on CPU at the
        # default temperature 1). Bounded and greedy keeps the suite fast and repeatable.
        return {"base_url": self.url, "max_tokens": 64, "temperature": 0}

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:
        # Prompt tokens served from the radix cache, in invoke and stream.
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    # The suite allows overriding a test only to mark it xfail: these two ask the model to
    # decide what a 135M model does not. Ours cover the same paths with prompts it follows
    # (tests/test_langchain_tools.py, tests/test_tool_calling.py).
    @pytest.mark.xfail(
        reason="json_mode constrains the answer to a JSON object, not to the keys the prompt "
        "describes, and a 135M model nests them ({'setup': {'setup': ...}})"
    )
    def test_json_mode(self, model: ChatParrot) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason="with tool_choice auto and no system prompt a 135M model answers the weather "
        "question itself instead of calling the tool"
    )
    def test_agent_loop(self, model: ChatParrot) -> None:
        super().test_agent_loop(model)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        model = ChatParrot(base_url=self.url, temperature=0, max_tokens=4)
        prompt = "Repeat after me: the quick brown fox jumps over the lazy dog."
        model.invoke(prompt)  # fills the cache
        if not stream:
            return model.invoke(prompt)
        full = None
        for chunk in model.stream(prompt):
            full = chunk if full is None else full + chunk
        return full
