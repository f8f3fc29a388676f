"""Parrot client SDK and framework adapters.

    from parrot_integrations import ParrotClient, semantic_function

Light to import: pydantic and httpx only (no torch, nothing of the server). Guide: docs/sdk.md.
"""

from .async_client import AsyncParrotClient
from .client import ParrotClient
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    GetTimeoutError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ParrotError,
    ServerError,
    VariableFailedError,
)
from .semantic import (
    Criteria,
    SamplingOptions,
    SemanticFunction,
    SemanticVariable,
    semantic_function,
)
from .session import AsyncProgramBuilder, AsyncSession, ProgramBuilder, Session

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncParrotClient",
    "AsyncProgramBuilder",
    "AsyncSession",
    "AuthenticationError",
    "ConflictError",
    "Criteria",
    "GetTimeoutError",
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "ParrotClient",
    "ParrotError",
    "ProgramBuilder",
    "SamplingOptions",
    "SemanticFunction",
    "SemanticVariable",
    "ServerError",
    "Session",
    "VariableFailedError",
    "semantic_function",
]
