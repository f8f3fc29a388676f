"""Parrot's native API, version 1 (`/api/v1`). Thin: parsing here, logic in `NativeService`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from parrot_integrations.protocol.native import (
    API_PREFIX,
    CallInfo,
    CallSpec,
    Criteria,
    Program,
    ProgramAccepted,
    SessionCreate,
    SessionInfo,
    VariableCreate,
    VariableSet,
    VariableState,
)

from ..native_service import NativeService
from .openapi_doc import BODY, errors, event_stream
from .valid_text import reject_lone_surrogates

router = APIRouter(
    prefix=API_PREFIX, tags=["native"], dependencies=[Depends(reject_lone_surrogates)]
)

DEFAULT_WAIT_SECONDS = 30.0


def _service(request: Request) -> NativeService:
    return request.app.state.native_service


@router.post("/sessions", status_code=201, responses=errors(*BODY, 401, 429))
async def create_session(request: Request, body: SessionCreate | None = None) -> SessionInfo:
    return _service(request).create_session(body.ttl_seconds if body else None)


@router.get("/sessions/{sid}", responses=errors(401, 404))
async def get_session(sid: str, request: Request) -> SessionInfo:
    return _service(request).session_info(sid)


@router.delete("/sessions/{sid}", status_code=204, responses=errors(401, 404))
async def delete_session(sid: str, request: Request) -> Response:
    _service(request).close_session(sid)
    return Response(status_code=204)


@router.post(
    "/sessions/{sid}/variables", status_code=201, responses=errors(*BODY, 401, 404, 409, 429)
)
async def create_variable(sid: str, body: VariableCreate, request: Request) -> VariableState:
    return _service(request).create_variable(sid, body)


@router.put("/sessions/{sid}/variables/{var_id}", responses=errors(*BODY, 401, 404, 409))
async def set_variable(sid: str, var_id: str, body: VariableSet, request: Request) -> VariableState:
    return _service(request).set_variable(sid, var_id, body.value)


@router.get("/sessions/{sid}/variables/{var_id}", responses=errors(400, 401, 404))
async def get_variable(
    sid: str,
    var_id: str,
    request: Request,
    criteria: Criteria | None = None,
    timeout: float = Query(DEFAULT_WAIT_SECONDS, ge=0, description="seconds to wait for a value"),
) -> VariableState:
    return await _service(request).get_variable(sid, var_id, criteria, timeout)


@router.get(
    "/sessions/{sid}/variables/{var_id}/stream",
    response_model=None,
    responses=event_stream() | errors(400, 401, 404),
)
async def stream_variable(
    sid: str, var_id: str, request: Request, criteria: Criteria | None = None
) -> StreamingResponse:
    chunks = await _service(request).stream_variable(sid, var_id, criteria)

    async def sse():
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.post(
    "/sessions/{sid}/calls", status_code=201, responses=errors(*BODY, 401, 404, 409, 429, 503)
)
async def submit_call(sid: str, body: CallSpec, request: Request) -> CallInfo:
    return await _service(request).submit_call(sid, body)


@router.post(
    "/sessions/{sid}/programs", status_code=201, responses=errors(*BODY, 401, 404, 409, 429, 503)
)
async def submit_program(sid: str, body: Program, request: Request) -> ProgramAccepted:
    return await _service(request).submit(sid, body)


@router.get("/sessions/{sid}/calls/{call_id}", responses=errors(401, 404))
async def get_call(sid: str, call_id: str, request: Request) -> CallInfo:
    return _service(request).call_info(sid, call_id)


@router.delete("/sessions/{sid}/calls/{call_id}", responses=errors(401, 404))
async def cancel_call(sid: str, call_id: str, request: Request) -> CallInfo:
    return await _service(request).cancel_call(sid, call_id)
