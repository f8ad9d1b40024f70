# Run from the repository root, on a workspace prepared by benchmarks/audit_full.py --prepare:
#   PYTHONPATH=<old or new>/src .venv/bin/python benchmarks/duplicate_parts.py WORKSPACE TAG
"""CPU seconds of the duplicate check alone and of its parts (wrapped functions), and its findings written to
``dup_parts_TAG.json`` / ``.npz`` to compare two versions (issue 25 part 5)."""

from __future__ import annotations

import collections
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.duplicates import near, registration
from curato.checks.registry import registered_checks
from curato.commands.audit import run_audit
from curato.workspace import Workspace

PARTS = {registration: ("registered_similarity", "refined_similarity", "knn",
                        "fourier_descriptors"),
         near: ("second_look_distances", "better_direction_distance", "compare_neighbours", "residual_shares",
                "embedding_graph", "candidate_pairs")}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wrap(module: Any, name: str, spent: collections.Counter) -> None:
    function, label = getattr(module, name), f"{module.__name__.split('.')[-1]}.{name}"

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = _cpu()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += _cpu() - started
    setattr(module, name, timed)


def main() -> None:
    workspace, tag = Path(sys.argv[1]), sys.argv[2]
    spent: collections.Counter = collections.Counter()
    for module, names in PARTS.items():
        for name in names:
            if hasattr(module, name):  # old and new code name their grid functions differently
                _wrap(module, name, spent)
    spec = registered_checks()["duplicates"]
    check: dict[str, float] = {}

    def timed_check(data: Any, params: Any, _run: Any = spec.run) -> Any:
        started, wall = _cpu(), time.perf_counter()
        try:
            return _run(data, params)
        finally:
            check["cpu"], check["wall"] = _cpu() - started, time.perf_counter() - wall
    object.__setattr__(spec, "run", timed_check)
    result = run_audit(Workspace.open(workspace), ["duplicates"], embedder="efficientnet-lite0-112")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"TAG {tag} check cpu {check['cpu']:.2f} wall {check['wall']:.2f} load {load}")
    for label, seconds in spent.most_common():
        print(f"  {label:<40} {seconds:7.2f} s cpu")
    record = {}
    for finding in result.findings:
        groups: dict[Any, set[str]] = {}
        for sample, detail in finding.details.items():
            if isinstance(detail, dict) and "group" in detail:
                groups.setdefault(detail["group"], set()).add(str(sample))
        record[finding.check] = {
            "count": finding.count, "severity": finding.severity,
            "flagged": sorted(str(s) for s in finding.sample_ids[finding.flagged]),
            "groups": sorted(sorted(members) for members in groups.values()),
            **{name: json.loads(json.dumps(getattr(finding, name), default=str))
               for name in ("summary", "details", "evidence")}}
        print(finding.check, finding.severity, finding.count)
    Path(f"dup_parts_{tag}.json").write_text(json.dumps(record, sort_keys=True))
    np.savez(f"dup_parts_{tag}.npz", **{f.check: f.scores for f in result.findings})


if __name__ == "__main__":
    main()
