"""Raw figures per series and step, streamed as CSV or JSON for windows of any size.

    GET /api/v1/export?format=csv&window=30d&step=1h&app=billing

Rows come from :func:`queuelens.export.iter_rows`, which reads a time chunk and a batch of
series at a time, so neither the server nor the client holds the whole window. Parameters
are checked and the first row read before the answer starts, so a bad step or an
unreachable storage is still a 422 or 503, not a truncated file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from queuelens.api.deps import State
from queuelens.api.params import (
    AppParam,
    JobParam,
    QueueParam,
    SelectedWindow,
    StepParam,
    step_seconds,
)
from queuelens.export import COLUMNS, iter_csv, iter_json, iter_rows

__all__ = ["router"]

router = APIRouter(tags=["export"])

#: bytes sent at once: one thread hop per chunk, not per row
CHUNK_BYTES = 64 * 1024
_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
_ROW_SCHEMA = {
    "type": "object",
    "properties": {
        name: {"type": "string"}
        if name in ("time", "app", "queue", "job")
        else {"type": ["number", "null"]}
        for name in COLUMNS
    },
    "required": list(COLUMNS),
}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One row per (app, queue, job, step) that had jobs; columns as in "
            "docs/api.md. CSV has a header line; JSON is one array.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": _ROW_SCHEMA}},
            },
        }
    },
)
def export(
    state: State,
    window: SelectedWindow,
    format: Annotated[Literal["csv", "json"], Query(description="csv or json.")] = "csv",
    app: AppParam = None,
    queue: QueueParam = None,
    job: JobParam = None,
    step: StepParam = None,
) -> StreamingResponse:
    """Job figures per series and step over the window, streamed."""
    step_s = step_seconds(state.analytics, step, window)
    rows = iter_rows(state.analytics, window, step_s=step_s, app=app, queue=queue, job=job)
    first = next(rows, None)  # here, so that errors are answers and not a cut-off file
    primed: Iterator[dict[str, Any]] = rows if first is None else itertools.chain([first], rows)
    text = iter_csv(primed) if format == "csv" else iter_json(primed)
    name = f"queuelens-{window.label}-{int(window.start)}-{int(window.end)}.{format}"
    return StreamingResponse(
        _batched(text),
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _batched(pieces: Iterator[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield "".join(buffer).encode("utf-8")
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8")
