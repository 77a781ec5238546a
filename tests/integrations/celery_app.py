"""The app test workers run: ``celery -A tests.integrations.celery_app worker ...``.

Configured by the environment the tests start the worker with: ``QL_CELERY_BROKER``,
``QL_CELERY_QUEUE``, ``QL_CELERY_KEYPREFIX`` and the usual ``QUEUELENS_*`` settings.
"""

from __future__ import annotations

import os

from queuelens.integrations.celery import instrument
from tests.integrations.celery_tasks import make_app

app = make_app(
    os.environ.get("QL_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
    queue=os.environ.get("QL_CELERY_QUEUE", "celery"),
    keyprefix=os.environ.get("QL_CELERY_KEYPREFIX", ""),
)
instrument(app)
