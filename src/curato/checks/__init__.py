"""Checks: pure functions over arrays that return Findings, and the runner that feeds them."""

from curato.checks.findings import SEVERITIES, Finding

__all__ = ["SEVERITIES", "Finding"]
