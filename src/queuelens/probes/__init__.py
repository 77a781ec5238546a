"""Queue depth probes: read broker state, never broadcast to workers.

    probe = build_probe(ProbeConfig(framework="rq", broker_url="redis://localhost:6379/0",
                                    app="billing", queues=["default"]))
    samples = probe.sample()          # one GaugeSample(kind="queue") per queue

Every probe returns, per queue, a :class:`~queuelens.model.GaugeSample` of kind ``queue``
whose ``values`` use the field names below (only those the broker has); reads are
pipelined, one round trip per broker where it can be done.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from queuelens.model import GaugeSample

__all__ = [
    "FAILED",
    "OLDEST_PENDING_AGE_S",
    "PENDING",
    "RESERVED",
    "SCHEDULED",
    "ProbeConfig",
    "ProbeError",
    "QueueProbe",
    "build_probe",
]

#: jobs waiting to be picked up
PENDING = "pending"
#: jobs waiting for their eta / delay (scheduled, delayed, deferred)
SCHEDULED = "scheduled"
#: jobs taken by a worker and not finished (reserved, started, unacked)
RESERVED = "reserved"
#: jobs in a failed or dead-letter store
FAILED = "failed"
#: seconds since the oldest pending job was enqueued
OLDEST_PENDING_AGE_S = "oldest_pending_age_s"

#: framework -> module under queuelens.probes that has ``from_config``
FRAMEWORKS = ("celery", "rq", "dramatiq", "huey", "arq", "taskiq")


class ProbeError(Exception):
    """A probe is misconfigured or its broker cannot be read; the message says which."""


@dataclass(frozen=True)
class ProbeConfig:
    """Where and what to probe. ``queues`` empty means: discover them where the broker can."""

    framework: str
    broker_url: str
    app: str = "default"
    queues: list[str] = field(default_factory=list)
    #: framework-specific options (for example ``global_keyprefix`` or ``namespace``)
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class QueueProbe(Protocol):
    """Reads queue depths of one broker for one app."""

    config: ProbeConfig

    def sample(self) -> list[GaugeSample]:
        """One ``GaugeSample(kind="queue")`` per queue; raises ProbeError on failure."""
        ...

    def close(self) -> None: ...


def build_probe(config: ProbeConfig) -> QueueProbe:
    """The probe for ``config.framework``; ProbeError names the accepted frameworks."""
    if config.framework not in FRAMEWORKS:
        raise ProbeError(
            f"unknown probe framework {config.framework!r}; use one of {', '.join(FRAMEWORKS)}"
        )
    module = importlib.import_module(f"queuelens.probes.{config.framework}")
    probe: QueueProbe = module.from_config(config)
    return probe
