"""Alembic's entry point, run on the connection serve.ab.database.migrate hands over (never from an ini file):
that connection already holds the transaction and, on PostgreSQL, the advisory lock."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
