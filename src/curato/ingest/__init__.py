"""Ingest: read a dataset, scan its files once (hash, size, properties), record it in the catalog."""

from curato.ingest.pipeline import IngestSummary, ingest, read_source

__all__ = ["IngestSummary", "ingest", "read_source"]
