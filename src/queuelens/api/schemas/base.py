"""The base of every answer model, and errors.

JSON has no infinity or NaN, so a figure that is unbounded (utilisation with no workers)
or undefined (a trend through no points) is ``null``; :data:`Num` does that conversion.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["ErrorOut", "Model", "Num", "ValidationErrorOut", "ValidationIssueOut"]


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: a number that is null when unknown, unbounded or undefined
Num = Annotated[float | None, BeforeValidator(_finite_or_none)]


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(Model):
    """401, 403, 404, 429 and 503 answers."""

    detail: str = Field(examples=["this endpoint needs the operator role; the token has viewer"])


class ValidationIssueOut(Model):
    #: where the bad value was: ``["query", "window"]``
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(Model):
    """422: each issue names the parameter; ``message`` puts them in one line."""

    detail: list[ValidationIssueOut]
    message: str = Field(
        examples=["window: '2h' is not a window; accepted: 5m, 15m, 1h, 6h, 24h, 7d, 30d"]
    )
