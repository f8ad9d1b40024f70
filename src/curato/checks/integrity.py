"""Files that cannot be used at all: missing, truncated, corrupt or not images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curato.checks.findings import Finding


def unreadable_files(sample_ids: Sequence[str], readable: np.ndarray, errors: Sequence[str | None]) -> Finding:
    """Flag samples whose file could not be read or decoded; any such file is high severity."""
    readable = np.asarray(readable, dtype=bool)
    flagged = ~readable
    count = int(flagged.sum())
    details = {str(sid): {"error": err or ""} for sid, err, bad in zip(sample_ids, errors, flagged, strict=True) if bad}
    if count:
        message = (f"{count} file(s) cannot be read (missing, truncated or not an image); "
                   "they are excluded from every other check")
    else:
        message = "every file decodes"
    return Finding(check="unreadable", severity="high" if count else "none", message=message,
                   sample_ids=np.asarray(sample_ids, dtype=object), flagged=flagged,
                   scores=flagged.astype(float), summary={"unreadable": count}, details=details)
