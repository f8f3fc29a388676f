"""What a remote engine says about itself: its info routes (under either of SGLang's 0.5.x
names) read into an `EngineInfo`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx

from ..engine.errors import EngineUnavailableError
from .engine_client import EngineInfo
from .remote_stream import EngineProtocolError, describe


async def get_json(http: httpx.AsyncClient, url: str, *paths: str) -> dict[str, Any]:
    """The first of `paths` the engine has (SGLang renamed its info routes within 0.5.x)."""
    for path in paths:
        try:
            r = await http.get(path)
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"engine {url}: GET {path}: {describe(exc)}") from exc
        if r.status_code == 404:
            continue
        with contextlib.suppress(ValueError):
            if r.status_code == 200 and isinstance(body := r.json(), dict):
                return body
        raise EngineProtocolError(
            f"engine {url}: GET {path}: HTTP {r.status_code} {r.text[:200]!r}"
        )
    raise EngineProtocolError(f"engine {url}: none of {', '.join(paths)}: not an SGLang runtime?")


async def engine_info(
    http: httpx.AsyncClient, url: str, model_info: dict[str, Any], server_info: dict[str, Any]
) -> EngineInfo:
    model_path = str(model_info.get("model_path") or server_info.get("model_path") or "")
    name = model_info.get("served_model_name") or server_info.get("served_model_name")
    # The context window: ours says it in /model_info; SGLang's `context_length` launch setting
    # is usually unset (the model's own then), which its /v1/models gives as `max_model_len`.
    context = model_info.get("max_context_len") or server_info.get("context_length")
    if not isinstance(context, int):
        with contextlib.suppress(httpx.HTTPError, ValueError, LookupError, TypeError):
            context = (await http.get("/v1/models")).json()["data"][0]["max_model_len"]
    running = server_info.get("max_running_requests")
    if not isinstance(running, int):  # SGLang's launch setting may be unset: the scheduler's
        with contextlib.suppress(LookupError, TypeError, AttributeError):
            running = server_info["internal_states"][0].get("max_running_requests")
    pool = server_info.get("max_total_num_tokens")
    for key, value in (("context window", context), ("max_total_num_tokens", pool)):
        if not isinstance(value, int) or value <= 0:
            raise EngineProtocolError(f"engine {url}: no usable {key} in its info ({value!r})")
    return EngineInfo(
        model=str(name or Path(model_path).name or url),
        model_path=model_path,
        max_context_len=context,
        kv_pool_tokens=pool,
        max_running_requests=running if isinstance(running, int) else 0,  # 0: not reported
    )
