"""The engines behind `parrot serve`: the embedded one (default), or a pool of engines on
SGLang's protocol: `--engines N` local `parrot engine` processes and/or `--engine-url URL`
running engines (SGLang workers included)."""

from __future__ import annotations

import argparse
from functools import partial

from .core.engine_pool import EnginePool, PoolConfig
from .core.placement import PlacementPolicy
from .core.remote_engine import RemoteEngineClient
from .engine_processes import EngineProcesses, engine_argv


def build_pool(args: argparse.Namespace) -> tuple[EnginePool, EngineProcesses | None]:
    """The pool, and the local engine processes it drives (None without `--engines N`): their
    `running()` context is entered before the ServeCore starts and left after it stops."""
    procs = (
        EngineProcesses(
            args.engines, engine_argv(args, args.engines), args.host, api_key=args.engine_api_key
        )
        if args.engines > 1
        else None
    )
    keyed = [(url, procs.api_key) for url in procs.urls] if procs else []
    keyed += [(u.rstrip("/"), args.engine_api_key) for u in args.engine_url]
    engines = [
        (
            url,
            partial(
                RemoteEngineClient.connect,
                url,
                tokenizer=args.tokenizer,
                model=args.model,
                chat_template=args.chat_template,
                api_key=key,
            ),
        )
        for url, key in keyed
    ]
    pool = EnginePool(
        engines,
        PlacementPolicy(args.placement).create(),
        PoolConfig(health_interval=args.health_interval, failover_wait=args.failover_wait),
    )
    return pool, procs
