"""Alembic environment for the queuelens SQL schema.

    from queuelens.storage.sql import migrate
    migrate("postgresql://user@db/queuelens")     # what `queuelens migrate` does

The caller opens the connection (with the driver's connect timeouts and SQLite settings)
and hands it over in ``config.attributes["connection"]``; there is no ``alembic.ini`` and
no offline (``--sql``) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from queuelens.storage.sql_schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "queuelens migrations run on a connection passed in config.attributes['connection']; "
        "use `queuelens migrate` or queuelens.storage.sql.migrate(url)"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
