"""What this machine lets curato use: CPUs (affinity mask capped by a container's CPU quota) and memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from curato.errors import InputError

GIB = 1024**3

# Set by cpu_share(): the CPUs one piece of work running beside others may size its threads to.
_CPU_SHARE: ContextVar[int | None] = ContextVar("curato_cpu_share", default=None)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    Containers limited with ``--cpus`` still see every host CPU in the affinity mask; starting
    one worker per host CPU there would oversubscribe the quota many times over.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    share = _CPU_SHARE.get()
    return max(1, min(count, quota or count, share or count))


@contextmanager
def cpu_share(cpus: int) -> Iterator[None]:
    """Within the block (in this thread), :func:`available_cpus` answers at most ``cpus``: work that runs beside
    other work (an audit's checks side by side) sizes its thread pools and faiss threads to its share instead of
    every lane starting one thread per CPU."""
    token = _CPU_SHARE.set(max(1, int(cpus)))
    try:
        yield
    finally:
        _CPU_SHARE.reset(token)


def cgroup_cpu_quota() -> int | None:
    """The CPU quota (rounded up) from cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None if unlimited."""
    try:
        fields = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return -(-int(fields[0]) // int(fields[1]))
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return -(-quota // period)
    except (OSError, ValueError):
        pass
    return None


def available_memory(cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes this process can still allocate without swapping or being killed: the kernel's ``MemAvailable``,
    capped by the room left under a cgroup limit (v2 ``memory.max``, or v1 ``memory/memory.limit_in_bytes``);
    None where none of them can be read (not Linux)."""
    room = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    cgroup_room = _cgroup_room(cgroup_root, "memory.max", "memory.current", "inactive_file")
    if cgroup_room is None:  # not "or": a full cgroup has room 0, which is an answer
        cgroup_room = _cgroup_room(cgroup_root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                   "total_inactive_file")
    if cgroup_room is not None:
        room.append(cgroup_room)
    return min(room) if room else None


# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number (or larger than the host).
_V1_NO_LIMIT = 1 << 60


def _cgroup_room(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """Room under one cgroup hierarchy's memory limit, or None where it has no limit or cannot be read.

    The usage counts the page cache too (files read, the memory-mapped features): the kernel reclaims its
    inactive part before it kills anything, so that part is room.
    """
    try:
        limit = (folder / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= _V1_NO_LIMIT:
            return None
        used = int((folder / usage_file).read_text())
        for line in (folder / "memory.stat").read_text().splitlines():
            if line.startswith(inactive_key + " "):
                used -= int(line.split()[1])
        return max(0, int(limit) - used)
    except (OSError, ValueError, IndexError):
        return None


def require_memory(needed: int, what: str, advice: str) -> None:
    """Raise a one-line ``InputError`` before ``what`` allocates ``needed`` bytes that this machine does not
    have, instead of being killed part-way; ``advice`` says what to do (fewer rows, a bigger machine, ...)."""
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(f"{what} needs about {needed / GIB:.1f} GB of memory but {available / GIB:.1f} GB is "
                         f"available; {advice}")
