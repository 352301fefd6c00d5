"""Alembic migrations of the feedback store's schema; serve.ab.database runs them at store start."""
