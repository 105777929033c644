"""Alembic migrations of the FORGE database (run with ``anvil-forge db upgrade``)."""
