"""queuelens: queue, job, worker and server metrics for Python task queues.

from queuelens import JobOutcome, JobStatus, Recorder, open_storage

recorder = Recorder(open_storage("sqlite:///queuelens.db"), app="billing")
recorder.record(JobOutcome(queue="emails", job="send_mail",
                           status=JobStatus.succeeded, duration_s=0.12, wait_s=0.8))
"""

from __future__ import annotations

from queuelens.config import ConfigError, Settings, load_settings
from queuelens.model import JobOutcome, JobStatus, SeriesKey, WorkerState
from queuelens.recorder import Recorder
from queuelens.sketch import Sketch
from queuelens.storage import Storage, StorageError, open_storage

__all__ = [
    "ConfigError",
    "JobOutcome",
    "JobStatus",
    "Recorder",
    "SeriesKey",
    "Settings",
    "Sketch",
    "Storage",
    "StorageError",
    "WorkerState",
    "load_settings",
    "open_storage",
]

__version__ = "0.1.0"
