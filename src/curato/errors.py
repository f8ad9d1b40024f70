"""Errors that reach the user as one clear line, and the exit codes of the ``curato`` command.

Every error curato raises on bad input names the file or field at fault and what to do about it;
the CLI prints ``str(error)`` and exits with the error's ``exit_code``. The exit codes (docs/reliability.md,
"Error policy", and ``curato --help``):

- 0 success
- 1 a ``--fail-on`` gate: the command worked and found something at least that severe
- 2 bad input or usage: a wrong path, option, file format or value; a step to run first
- 3 the workspace cannot be used as it is: damaged, locked by another writer, read-only or out of space
- 4 an internal error (a bug): one line, and the traceback in a log file
- 130 interrupted (Ctrl-C); finished work is kept
"""

from __future__ import annotations

import errno
import os
import shutil

EXIT_OK = 0
EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_WORKSPACE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class CuratoError(Exception):
    """Base class: a problem the user can fix, explained in one line."""

    exit_code = EXIT_USAGE


class InputError(CuratoError):
    """The data handed to curato is missing, malformed or inconsistent."""


class UnknownEmbedderError(CuratoError):
    """No embedder of that name is registered."""


class UnreadableImageError(CuratoError):
    """An image file cannot be decoded (corrupt, truncated or not an image)."""


class WorkspaceError(CuratoError):
    """The workspace cannot be used as it is: damaged, locked, read-only, out of space, or from a newer curato."""

    exit_code = EXIT_WORKSPACE


class WorkspaceBusyError(WorkspaceError):
    """Another process is writing to the workspace (it holds the workspace lock)."""


class WorkspaceNotReadyError(WorkspaceError):
    """Not a workspace yet, or a step's output is missing (no samples, no embeddings, no audit): a usage error,
    fixed by running the step the message names."""

    exit_code = EXIT_USAGE


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def describe_os_error(error: OSError, doing: str = "", near: str | os.PathLike[str] | None = None) -> str:
    """One line for a failed file operation: the path, what the system said, and what to do.

    ``doing``: what curato was doing (``"writing the feature store"``), said before the reason. ``near``: a folder
    on the disk written to; a short write without an errno (numpy says "N requested and M written") there, with
    less than 1 MiB free, is a full disk.
    """
    where = f"{error.filename}: " if error.filename else ""
    reason = error.strerror or str(error) or type(error).__name__
    context = f"{doing}: " if doing else ""
    if error.errno is None and near is not None and _free_bytes(near) < _LOW_SPACE:
        reason = f"{reason} (No space left on device)"
        error = OSError(errno.ENOSPC, reason)
    if error.errno in _NO_SPACE:
        hint = "free some space (or raise the quota) and run the same command again; finished work is kept"
    elif error.errno in _READ_ONLY:
        hint = "make it writable by this user, or copy the workspace somewhere writable"
    elif error.errno == errno.ENOENT:
        hint = "check that the path exists"
    else:
        hint = "check the path, the disk and the permissions"
    return f"{where}{context}{reason}; {hint}"


def storage_error(error: OSError, doing: str, near: str | os.PathLike[str] | None = None) -> WorkspaceError:
    """A WorkspaceError (exit 3) for an OSError met while writing or reading the workspace's own files."""
    return WorkspaceError(describe_os_error(error, doing, near))


_LOW_SPACE = 1 << 20


def _free_bytes(path: str | os.PathLike[str]) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return _LOW_SPACE
