"""Maintenance, for admin tokens.

POST /api/v1/prune      delete what is past its retention now, as ``queuelens prune`` does
"""

from __future__ import annotations

from fastapi import APIRouter

from queuelens.api.deps import State
from queuelens.api.schemas import PruneOut

__all__ = ["router"]

router = APIRouter(tags=["admin"])


@router.post("/prune")
def prune(state: State) -> PruneOut:
    """Delete buckets, samples and workers past their retention; what was removed."""
    report = state.storage.prune()
    return PruneOut(removed=dict(report.removed), total=report.total)
