"""Alembic migrations of the SQL storage schema; run them with ``queuelens migrate``.

The environment is configured in code by :func:`queuelens.storage.sql.migrate` (no
``alembic.ini``): it passes an open connection in ``config.attributes["connection"]``.
"""
