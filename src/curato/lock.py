"""The workspace lock: one writing process at a time; readers never wait.

A writer holds an exclusive ``fcntl.flock`` on ``<workspace>/curato.lock`` for as long as it writes. The
kernel releases the lock when the process ends, however it ends (crash, kill -9, power loss of a local disk),
so a lock left by a dead process is simply taken by the next writer. The file also holds who locked it
(pid, host, command, since), only to say so in the "workspace busy" message and in ``curato check``.

The lock is re-entrant within a process: ``curato demo`` holds it while its ingest and audit take it again.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from curato.errors import WorkspaceBusyError, storage_error

LOCK_FILE = "curato.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}

_held: dict[str, tuple[IO[str], int]] = {}  # resolved lock path -> (open lock file, depth)
_guard = threading.Lock()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie or another user's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def this_host() -> str:
    """The machine's name, as recorded with a run or a lock."""
    return socket.gethostname()


class WorkspaceLock:
    """The writer lock of the workspace folder ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.path = self.root / LOCK_FILE

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held) the lock, as written in the lock file; None when unknown."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def is_held_here(self) -> bool:
        """Whether this process holds the lock."""
        with _guard:
            return str(self.path) in _held

    def active_holder(self) -> dict[str, Any] | None:
        """The holder's record while a live process on this machine holds the lock; None otherwise.

        Told from the record alone (a holder clears it on release; a dead holder's pid is gone), so asking
        never takes the lock and never makes a writer fail.
        """
        record = self.holder()
        if record is None or not isinstance(record.get("pid"), int):
            return None
        if record.get("host") not in (None, this_host()):
            return record  # another machine's process: cannot be told dead from here
        return record if pid_alive(record["pid"]) else None

    @contextmanager
    def hold(self, command: str) -> Iterator[bool]:
        """Hold the lock inside the ``with`` block; yields True when this call took it (False: re-entered).

        Raises WorkspaceBusyError (exit 3) at once when another process holds it.
        """
        first = self._acquire(command)
        try:
            yield first
        finally:
            self._release()

    def _acquire(self, command: str) -> bool:
        key = str(self.path)
        with _guard:
            if key in _held:
                handle, depth = _held[key]
                _held[key] = (handle, depth + 1)
                return False
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                handle = open(self.path, "a+")  # noqa: SIM115 - held until _release
            except OSError as error:
                raise storage_error(error, "cannot take the workspace lock") from error
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise WorkspaceBusyError(self.busy_message()) from None
            except OSError as error:
                if error.errno not in _UNSUPPORTED:
                    handle.close()
                    raise storage_error(error, "cannot take the workspace lock") from error
                # A file system without locks (some network mounts): go on unlocked, as curato always did.
            record = {"pid": os.getpid(), "host": this_host(), "command": command,
                      "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(record))
                handle.flush()
            except OSError:
                pass  # the lock holds without its note (e.g. the disk is full); the busy message says less
            _held[key] = (handle, 1)
            return True

    def _release(self) -> None:
        key = str(self.path)
        with _guard:
            handle, depth = _held[key]
            if depth > 1:
                _held[key] = (handle, depth - 1)
                return
            del _held[key]
            try:
                handle.seek(0)
                handle.truncate()  # an empty note: nobody holds it
            except OSError:
                pass
            handle.close()  # closing the only descriptor releases the flock

    def busy_message(self) -> str:
        """The one line saying who writes to the workspace now."""
        record = self.holder() or {}
        if "pid" in record:
            host = record.get("host")
            where = f" on {host}" if host and host != this_host() else ""
            who = f"PID {record['pid']}{where} ({record.get('command', '?')}) since {record.get('since', '?')}"
        else:
            who = "another curato process"
        return (f"workspace busy: {who} is writing to {self.root}; wait for it to finish (or stop it), then run "
                "the command again. Reading commands (info, check, export) work meanwhile")
