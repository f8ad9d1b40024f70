"""The workspace catalog: samples, labels, annotations and runs in SQLite or PostgreSQL."""

from curato.catalog.catalog import Catalog, SampleRecord

__all__ = ["Catalog", "SampleRecord"]
