"""Every failure as a clear HTTP answer: 422 naming the parameter, 503 for storage.

    raise ParameterError("app", "queue 'emails' exists in apps a, b; pass app=")
    install_error_handlers(app)

A 422 has FastAPI's shape — ``detail`` is a list of ``{loc, msg, type}`` — plus ``message``,
the issues in one line (``window: '2h' is not a window; accepted: 5m, 15m, ...``), whether
FastAPI rejected a value against the schema or the analytics rejected it on meaning
(:class:`~queuelens.analytics.window.WindowError`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from queuelens.analytics.window import WindowError
from queuelens.api.schemas import ErrorOut, ValidationErrorOut
from queuelens.storage.base import StorageError, StorageUnavailable

__all__ = [
    "NOT_FOUND",
    "UNAVAILABLE",
    "VALIDATION",
    "ParameterError",
    "as_json",
    "install_error_handlers",
]

log = logging.getLogger("queuelens.api")

#: OpenAPI ``responses`` entries, shared by the routers
VALIDATION: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorOut, "description": "A parameter is invalid; it is named."}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such queue or job."}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "The storage did not answer, or failed."}
}


def as_json(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``responses`` with each model as JSON content, for a route whose own media type is
    something else (FastAPI would document its errors as that type). The models must be
    used by another route too, so that they are in the document's components."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, answer in responses.items():
        answer = dict(answer)
        model = answer.pop("model", None)
        if model is not None:
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            answer["content"] = {"application/json": {"schema": ref}}
        out[status] = answer
    return out


class ParameterError(ValueError):
    """A parameter's value is not usable; answered as 422 naming it."""

    def __init__(self, parameter: str, message: str, location: str = "query") -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.location = location
        self.message = message


def _validation_answer(issues: Sequence[tuple[list[str | int], str, str]]) -> JSONResponse:
    detail = [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in issues]
    message = "; ".join(f"{loc[-1]}: {msg}" if loc else msg for loc, msg, _ in issues)
    body = ValidationErrorOut.model_validate({"detail": detail, "message": message})
    return JSONResponse(body.model_dump(), status_code=422)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues = [
        ([str(p) if not isinstance(p, int) else p for p in e.get("loc", ())], e["msg"], e["type"])
        for e in exc.errors()
    ]
    return _validation_answer(issues)


async def _parameter_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, WindowError):
        message = str(exc).removeprefix(f"{exc.parameter}: ")
        return _validation_answer([(["query", exc.parameter], message, "value_error")])
    assert isinstance(exc, ParameterError)
    return _validation_answer([([exc.location, exc.parameter], exc.message, "value_error")])


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("queuelens: %s %s: storage error: %s", request.method, request.url.path, exc)
    what = "the storage did not answer" if isinstance(exc, StorageUnavailable) else "storage error"
    body = ErrorOut(detail=f"{what}: {exc}")
    return JSONResponse(body.model_dump(), status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(WindowError, _parameter_error)
    app.add_exception_handler(ParameterError, _parameter_error)
    app.add_exception_handler(StorageError, _storage_error)
