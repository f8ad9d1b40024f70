"""Errors that reach the user as one clear line.

Every error curato raises on bad input names the file or field at fault and what to do about it;
the CLI prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations


class CuratoError(Exception):
    """Base class: a problem the user can fix, explained in one line."""

    exit_code = 2


class InputError(CuratoError):
    """The data handed to curato is missing, malformed or inconsistent."""


class UnknownEmbedderError(CuratoError):
    """No embedder of that name is registered."""


class WorkspaceError(CuratoError):
    """The workspace is missing, from a newer version, or lacks something a step needs."""


class UnreadableImageError(CuratoError):
    """An image file cannot be decoded (corrupt, truncated or not an image)."""
