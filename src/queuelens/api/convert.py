"""From the analytics' dataclasses to the API's models, one function per kind of answer.

    overview_out(analytics.overview(window))          # OverviewOut
    queue_detail_out(insights.queue_detail(window, "billing", "emails"), window)

The shapes are those of :mod:`queuelens.analytics.serialize`, which ``queuelens ... --json``
prints too; the models validate them (and turn infinities into null). Details flatten the
summary into the top level, as the contract says: "the summary plus ...".
"""

from __future__ import annotations

from queuelens.analytics.insights import JobDetail, QueueDetail
from queuelens.analytics.overview import Overview, QueueSummary, ServerSummary
from queuelens.analytics.query import Point
from queuelens.analytics.serialize import overview_dict, server_dict
from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.window import Window
from queuelens.api.schemas import (
    GaugePointOut,
    JobDetailOut,
    JobSummaryOut,
    OverviewOut,
    PointOut,
    QueueDetailOut,
    QueueSummaryOut,
    ServerOut,
    WindowOut,
)

__all__ = [
    "job_detail_out",
    "job_summary_out",
    "overview_out",
    "point_out",
    "queue_detail_out",
    "queue_summary_out",
    "server_out",
    "window_out",
]


def window_out(window: Window) -> WindowOut:
    return WindowOut.model_validate(window)


def queue_summary_out(summary: QueueSummary) -> QueueSummaryOut:
    return QueueSummaryOut.model_validate(summary.as_dict())


def job_summary_out(summary: JobSummary) -> JobSummaryOut:
    return JobSummaryOut.model_validate(summary.as_dict())


def point_out(point: Point) -> PointOut:
    return PointOut.model_validate(
        {"at": point.at, "step_s": point.step_s, **point.stats.as_dict()}
    )


def server_out(summary: ServerSummary) -> ServerOut:
    return ServerOut.model_validate(server_dict(summary))


def overview_out(overview: Overview) -> OverviewOut:
    return OverviewOut.model_validate(overview_dict(overview))


def queue_detail_out(detail: QueueDetail, window: Window) -> QueueDetailOut:
    return QueueDetailOut.model_validate(
        {
            **detail.summary.as_dict(),
            "window": window_out(window),
            "points": [point_out(p) for p in detail.points],
            "depth_points": [
                GaugePointOut.model_validate(
                    {
                        "at": p.at,
                        "step_s": p.step_s,
                        "fields": {
                            name: {
                                "last": stat.last,
                                "min": stat.min,
                                "max": stat.max,
                                "avg": stat.avg,
                                "count": stat.count,
                            }
                            for name, stat in p.fields.items()
                        },
                    }
                )
                for p in detail.depth_points
            ],
            "trends": detail.trends,
            "depth_forecast": detail.depth_forecast,
            "arrival_forecast": detail.arrival_forecast,
            "arrival_per_s": detail.arrival_per_s,
            "time_to_drain_s": detail.time_to_drain_s,
            "time_to_threshold_s": detail.time_to_threshold_s,
            "capacity": detail.capacity,
            "notes": detail.notes,
        }
    )


def job_detail_out(
    detail: JobDetail, window: Window, app: str, queue: str, job: str
) -> JobDetailOut:
    summary = detail.summary or JobSummary(app, queue, job, Stats())
    return JobDetailOut.model_validate(
        {
            **summary.as_dict(),
            "window": window_out(window),
            "points": [point_out(p) for p in detail.points],
            "trends": detail.trends,
            "baselines": detail.baselines,
            "bands": detail.bands,
            "anomalies": detail.anomalies,
        }
    )
