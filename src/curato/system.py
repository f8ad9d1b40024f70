"""What this machine lets curato use: CPUs (affinity mask capped by a container's CPU quota)."""

from __future__ import annotations

import os
from pathlib import Path


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
    return max(1, min(count, quota) if quota else count)


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
