"""Analytics results as plain dicts, in the shapes of the REST API (``/api/v1``).

    overview_dict(analytics.overview(window))        # GET /api/v1/overview
    [q.as_dict() for q in analytics.queue_summaries(window)]   # GET /api/v1/queues
    [worker_dict(w) for w in analytics.workers()]    # GET /api/v1/workers
    [server_dict(s) for s in analytics.server_summaries()]     # GET /api/v1/servers

The API, ``queuelens status --json`` and friends all build their JSON here (queues and jobs
have ``as_dict`` of their own), so a script written against one reads the other. Times are
unix seconds, durations ``_s`` or ``_ms``, rates fractions 0..1; a value nobody measured is
None, never 0.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from queuelens.analytics.overview import Overview, ServerSummary
from queuelens.analytics.state import WorkerView
from queuelens.analytics.window import Window

__all__ = ["overview_dict", "server_dict", "window_dict", "worker_dict"]


def window_dict(window: Window) -> dict[str, Any]:
    """``{label, start, end, duration_s}``: the window as read, after rounding to buckets."""
    return {
        "label": window.label,
        "start": window.start,
        "end": window.end,
        "duration_s": window.duration_s,
    }


def worker_dict(worker: WorkerView) -> dict[str, Any]:
    """One worker as ``GET /api/v1/workers`` lists it, state as derived when read."""
    out = asdict(worker)
    out["state"] = str(worker.state)
    return out


def server_dict(summary: ServerSummary) -> dict[str, Any]:
    """One host as ``GET /api/v1/servers`` lists it: newest resources, workers, health."""
    server = summary.server
    load_1, load_5, load_15 = server.load
    return {
        "hostname": server.hostname,
        "app": server.app,
        "sampled_at": server.sampled_at,
        "sample_age_s": server.sample_age_s,
        "cpu_percent": server.cpu_percent,
        "cpu_count": server.cpu_count,
        "load": {"avg_1m": load_1, "avg_5m": load_5, "avg_15m": load_15},
        "memory": {
            "total_mb": server.memory_total_mb,
            "used_mb": server.memory_used_mb,
            "percent": server.memory_percent,
        },
        "disks": [asdict(disk) for disk in server.disks],
        # live workers on the host
        "workers": summary.workers,
        "health": summary.health.as_dict(),
        "values": dict(server.values),
    }


def overview_dict(overview: Overview) -> dict[str, Any]:
    """``GET /api/v1/overview``: totals, queues, workers by state, servers and alerts.

    Alert rules are not evaluated by this version: ``alerts`` is ``{firing: 0, enabled:
    false}``, as the API answers.
    """
    return {
        "window": window_dict(overview.window),
        "generated_at": overview.generated_at,
        "totals": overview.totals.as_dict(),
        "queues": [queue.as_dict() for queue in overview.queues],
        "workers": dict(overview.workers),
        "workers_health": overview.fleet_health.as_dict(),
        "servers": [server_dict(server) for server in overview.servers],
        "alerts": {"firing": 0, "enabled": False},
        "dropped": dict(overview.dropped),
    }
