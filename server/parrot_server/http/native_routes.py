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
from .auth import Caller
from .openapi_doc import BODY, errors, event_stream
from .valid_text import reject_lone_surrogates

router = APIRouter(
    prefix=API_PREFIX, tags=["native"], dependencies=[Depends(reject_lone_surrogates)]
)

DEFAULT_WAIT_SECONDS = 30.0


def _service(request: Request) -> NativeService:
    return request.app.state.native_service


@router.post("/sessions", status_code=201, responses=errors(*BODY, 401, 429))
async def create_session(
    who: Caller, request: Request, body: SessionCreate | None = None
) -> SessionInfo:
    return _service(request).create_session(who.tenant, body.ttl_seconds if body else None)


@router.get("/sessions/{sid}", responses=errors(401, 404))
async def get_session(sid: str, request: Request, who: Caller) -> SessionInfo:
    return _service(request).session_info(who.tenant, sid)


@router.delete("/sessions/{sid}", status_code=204, responses=errors(401, 404))
async def delete_session(sid: str, request: Request, who: Caller) -> Response:
    _service(request).close_session(who.tenant, sid)
    return Response(status_code=204)


@router.post(
    "/sessions/{sid}/variables", status_code=201, responses=errors(*BODY, 401, 404, 409, 429)
)
async def create_variable(
    sid: str, body: VariableCreate, request: Request, who: Caller
) -> VariableState:
    return _service(request).create_variable(who.tenant, sid, body)


@router.put("/sessions/{sid}/variables/{var_id}", responses=errors(*BODY, 401, 404, 409))
async def set_variable(
    sid: str, var_id: str, body: VariableSet, request: Request, who: Caller
) -> VariableState:
    return _service(request).set_variable(who.tenant, sid, var_id, body.value)


@router.get("/sessions/{sid}/variables/{var_id}", responses=errors(400, 401, 404))
async def get_variable(
    sid: str,
    var_id: str,
    request: Request,
    who: Caller,
    criteria: Criteria | None = None,
    timeout: float = Query(DEFAULT_WAIT_SECONDS, ge=0, description="seconds to wait for a value"),
) -> VariableState:
    return await _service(request).get_variable(who.tenant, sid, var_id, criteria, timeout)


@router.get(
    "/sessions/{sid}/variables/{var_id}/stream",
    response_model=None,
    responses=event_stream() | errors(400, 401, 404),
)
async def stream_variable(
    sid: str, var_id: str, request: Request, who: Caller, criteria: Criteria | None = None
) -> StreamingResponse:
    chunks = await _service(request).stream_variable(who.tenant, sid, var_id, criteria)

    async def sse():
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.post(
    "/sessions/{sid}/calls", status_code=201, responses=errors(*BODY, 401, 404, 409, 429, 503)
)
async def submit_call(sid: str, body: CallSpec, request: Request, who: Caller) -> CallInfo:
    return await _service(request).submit_call(who.tenant, sid, body)


@router.post(
    "/sessions/{sid}/programs", status_code=201, responses=errors(*BODY, 401, 404, 409, 429, 503)
)
async def submit_program(sid: str, body: Program, request: Request, who: Caller) -> ProgramAccepted:
    return await _service(request).submit(who.tenant, sid, body)


@router.get("/sessions/{sid}/calls/{call_id}", responses=errors(401, 404))
async def get_call(sid: str, call_id: str, request: Request, who: Caller) -> CallInfo:
    return _service(request).call_info(who.tenant, sid, call_id)


@router.delete("/sessions/{sid}/calls/{call_id}", responses=errors(401, 404))
async def cancel_call(sid: str, call_id: str, request: Request, who: Caller) -> CallInfo:
    return await _service(request).cancel_call(who.tenant, sid, call_id)
