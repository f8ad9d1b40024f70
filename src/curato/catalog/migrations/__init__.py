"""Alembic migrations of the catalog schema (run by :mod:`curato.catalog.migrate`, never by an alembic.ini)."""
