"""`ParrotLLM`: a LangChain text-completion model served by Parrot's `/v1/completions`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM, LangSmithParams
from langchain_core.messages import BaseMessage, get_buffer_string
from langchain_core.outputs import GenerationChunk, LLMResult
from pydantic import AliasChoices, ConfigDict, Field, model_validator

from ..errors import InvalidRequestError
from ..protocol.openai import Completion, CompletionRequest
from . import _convert, _group, _hook
from ._base import ParrotBase, loop_running
from ._errors import mapped_errors
from ._served_name import ls_model_name


class ParrotLLM(ParrotBase, BaseLLM):
    """Completion model on a Parrot server (raw prompt, no chat template); a drop-in for
    langchain-openai's `OpenAI` LLM.

        from parrot_integrations.langchain import ParrotLLM
        ParrotLLM(max_tokens=16, temperature=0).invoke("The capital of France is")
    """

    # A misspelt or unsupported argument is an error, not silently dropped (LangChain's
    # models ignore extras by default). Other request fields go in `model_kwargs`.
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=256, ge=1)
    """Most tokens to generate (as langchain-openai's `OpenAI`, 256 by default)."""

    stop: list[str] | str | None = Field(
        default=None, validation_alias=AliasChoices("stop", "stop_sequences")
    )
    """Stop sequences (alias `stop_sequences`, at most 4); a call's `stop` replaces them."""

    n: int = Field(default=1, ge=1)
    """Completions per prompt: n generations per prompt in `generate`'s result. Not with
    streaming."""

    best_of: int | None = Field(default=None, ge=1)
    """Candidates generated per answer, the best n returned."""

    logprobs: int | None = Field(default=None, ge=0, le=5)
    """Log probabilities of each token and of this many alternatives, in the generation's
    `generation_info["logprobs"]` (OpenAI's `tokens`, `token_logprobs`, `top_logprobs`,
    `text_offset`)."""

    batch_size: int = Field(default=20, ge=1)
    """Accepted for `OpenAI` compatibility; no effect: Parrot takes one prompt per request
    and sends a batch's requests together."""

    allowed_special: Any = None
    """Accepted for `OpenAI` compatibility; no effect (tiktoken's setting)."""

    disallowed_special: Any = None
    """Accepted for `OpenAI` compatibility; no effect (tiktoken's setting)."""

    @model_validator(mode="after")
    def _one_answer_when_streaming(self) -> ParrotLLM:
        if self.streaming and (self.n > 1 or (self.best_of or 1) > 1):
            raise ValueError("n and best_of must be 1 when streaming")
        return self

    @property
    def _llm_type(self) -> str:
        return "parrot"

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """The prompt tokens of `messages` as this model sends them: one text prompt, LangChain's
        buffer string of the messages (`POST /tokenize`). A completion model takes no tools."""
        if tools:
            raise ValueError("ParrotLLM takes no tools: count the messages alone")
        return len(self.get_token_ids(get_buffer_string(messages))) if messages else 0

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, **self._default_params()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=_convert.PROVIDER,
            ls_model_name=ls_model_name(self, kwargs),
            ls_model_type="llm",
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        stop = stop or kwargs.get("stop") or self.stop
        if stop:
            params["ls_stop"] = [stop] if isinstance(stop, str) else list(stop)
        return params

    # -- request ------------------------------------------------------------------------------
    def _own_fields(self) -> dict[str, Any]:
        return {
            "n": self.n if self.n != 1 else None,
            "best_of": self.best_of,
            "logprobs": self.logprobs,
        }

    def _default_params(self) -> dict[str, Any]:
        params = {**self._sampling(), "max_tokens": self.max_tokens}
        if self.stop:
            params["stop"] = self.stop
        return params

    def _request(
        self, prompt: str, stop: list[str] | None, stream: bool, **kwargs: Any
    ) -> CompletionRequest:
        params = {**self._params(kwargs), "prompt": prompt}
        if stop is not None:
            params["stop"] = stop
        if stream:
            if (params.get("n") or 1) > 1 or (params.get("best_of") or 1) > 1:
                raise InvalidRequestError("n and best_of must be 1 when streaming", param="n")
            params.update(stream=True, stream_options={"include_usage": True})
        return self._build(CompletionRequest, params)

    @staticmethod
    def _result(responses: list[Completion]) -> LLMResult:
        """n generations per prompt; usage summed over the prompts, as OpenAI's LLM does."""
        answers = [
            (
                [
                    _convert.Completed(
                        c.text,
                        c.finish_reason,
                        c.logprobs.model_dump() if c.logprobs is not None else None,
                    )
                    for c in r.choices
                ],
                r.usage,
            )
            for r in responses
        ]
        return _convert.llm_result(answers, responses[0].model if responses else None)

    # -- generation ---------------------------------------------------------------------------
    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        hook = _hook.current(self)
        if hook is not None and (result := hook.complete(self, prompts, stop, kwargs)) is not None:
            return result
        with mapped_errors():
            if len(prompts) > 1:  # a batch: one program, one task group
                result = _group.complete(self, prompts, stop, kwargs)
                if result is not None:
                    return result
            requests = [self._request(p, stop, False, **kwargs) for p in prompts]
            if len(requests) > 1 and not loop_running():
                # Several prompts (LLM.batch/generate): sent together, as `_agenerate` does.
                return asyncio.run(self._complete_all(requests, close=True))
            return self._result([self.client.completion(r) for r in requests])

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        hook = _hook.current(self)
        if hook is not None:
            result = await hook.acomplete(self, prompts, stop, kwargs)
            if result is not None:
                return result
        with mapped_errors():
            if len(prompts) > 1:
                result = await _group.acomplete(self, prompts, stop, kwargs)
                if result is not None:
                    return result
            requests = [self._request(p, stop, False, **kwargs) for p in prompts]
            return await self._complete_all(requests)

    async def _complete_all(
        self, requests: list[CompletionRequest], close: bool = False
    ) -> LLMResult:
        """Every prompt at once on the loop's async client (the server takes one prompt per
        request and admits concurrent ones together)."""
        try:
            client = self.async_client
            return self._result(list(await asyncio.gather(*map(client.completion, requests))))
        finally:
            if close:
                await self._close_async_client()

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        hook = _hook.current(self)
        if hook is not None and (result := hook.complete(self, [prompt], stop, kwargs)) is not None:
            yield GenerationChunk(text=result.generations[0][0].text)  # exists already: one chunk
            return
        with mapped_errors():
            request = self._request(prompt, stop, True, **kwargs)
            for chunk in self.client.completion_stream(request):
                out = _chunk(chunk)
                if out is not None:
                    if run_manager and out.text:
                        run_manager.on_llm_new_token(out.text, chunk=out)
                    yield out

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        hook = _hook.current(self)
        if hook is not None:
            result = await hook.acomplete(self, [prompt], stop, kwargs)
            if result is not None:
                yield GenerationChunk(text=result.generations[0][0].text)
                return
        with mapped_errors():
            request = self._request(prompt, stop, True, **kwargs)
            async for chunk in self.async_client.completion_stream(request):
                out = _chunk(chunk)
                if out is not None:
                    if run_manager and out.text:
                        await run_manager.on_llm_new_token(out.text, chunk=out)
                    yield out


def _chunk(chunk: Completion) -> GenerationChunk | None:
    """Text chunks carry their text (and the finish reason on the last); the closing usage
    chunk carries usage and the model name in `generation_info`."""
    if chunk.usage is not None and not chunk.choices:
        info = {"usage": chunk.usage.model_dump(), "model_name": chunk.model}
        return GenerationChunk(text="", generation_info=info)
    if not chunk.choices:
        return None
    choice = chunk.choices[0]
    info: dict[str, Any] = {}
    if choice.finish_reason:
        info["finish_reason"] = choice.finish_reason
    if choice.logprobs is not None:
        info["logprobs"] = choice.logprobs.model_dump()
    return GenerationChunk(text=choice.text, generation_info=info or None)
