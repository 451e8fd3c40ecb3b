"""Alembic's entry: runs the migrations on the connection the gateway hands over
(gateway/gateway/db/engine.py), so migrations use the gateway's own URL and driver."""

from alembic import context

from gateway.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through the gateway: python -m gateway.admin migrate")

# render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
