"""Framework integrations: each module imports its framework; nothing else here does.

from queuelens.integrations.celery import instrument     # Celery
from queuelens.integrations.rq import Worker              # RQ
from queuelens.integrations.dramatiq import QueueLens     # Dramatiq
from queuelens.integrations.huey import instrument        # Huey
from queuelens.integrations.arq import instrument         # arq
from queuelens.integrations.taskiq import QueueLensMiddleware  # Taskiq
"""
