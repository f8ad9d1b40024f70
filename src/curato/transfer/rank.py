"""Rank candidate backbones for one labelled task: LogME next to the probes it stands in for.

Every embedder is scored on the same samples and labels with LogME (seconds, no training), a
leave-one-out kNN probe and a cross-validated linear probe; the ranking is by LogME, and the agreement
between the LogME ranking and the linear-probe ranking (Kendall's tau) says how far the cheap score can
be trusted on this data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.stats import kendalltau, rankdata

from curato.errors import InputError
from curato.models.probes import KNN_NEIGHBOURS, knn_accuracy, linear_probe_accuracy
from curato.transfer.logme import logme_score


def rank_embedders(feature_sets: Mapping[str, np.ndarray], labels: np.ndarray, *, knn_k: int = KNN_NEIGHBOURS,
                   n_folds: int = 5, seed: int = 0,
                   on_scored: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Score each feature set (name -> (n, d) array, rows aligned with ``labels``), best LogME first.

    Each entry: ``name``, ``dim``, ``logme``, ``knn_accuracy``, ``knn_balanced_accuracy``,
    ``linear_probe_accuracy``, ``linear_probe_balanced_accuracy``, ``seconds`` (``logme``, ``knn``,
    ``linear_probe``: wall-clock of each score), and ``rank`` (by LogME), ``rank_knn``,
    ``rank_linear_probe`` (1 = best; ties share the better rank). ``on_scored(name)`` is called after
    each feature set.
    """
    y = np.asarray(labels)
    if not feature_sets:
        raise InputError("rank embedders: no feature sets given; name at least one embedder")
    entries = []
    for name, features in feature_sets.items():
        array = np.asarray(features)
        if array.ndim != 2 or array.shape[0] != y.shape[0]:
            raise InputError(f"rank embedders: features {name!r} have shape {array.shape}; "
                             f"expected ({y.shape[0]}, d), one row per label")
        seconds = {}
        started = time.perf_counter()
        logme = logme_score(array, y)
        seconds["logme"] = time.perf_counter() - started
        started = time.perf_counter()
        knn = knn_accuracy(array, y, k=knn_k)
        seconds["knn"] = time.perf_counter() - started
        started = time.perf_counter()
        linear = linear_probe_accuracy(array, y, n_folds=n_folds, seed=seed)
        seconds["linear_probe"] = time.perf_counter() - started
        entries.append({
            "name": name, "dim": int(array.shape[1]), "logme": logme,
            "knn_accuracy": knn.accuracy, "knn_balanced_accuracy": knn.balanced_accuracy,
            "linear_probe_accuracy": linear.accuracy, "linear_probe_balanced_accuracy": linear.balanced_accuracy,
            "seconds": seconds,
        })
        if on_scored is not None:
            on_scored(name)
    for key, rank_key in (("logme", "rank"), ("knn_accuracy", "rank_knn"),
                          ("linear_probe_accuracy", "rank_linear_probe")):
        ranks = rankdata([-entry[key] for entry in entries], method="min")
        for entry, rank in zip(entries, ranks, strict=True):
            entry[rank_key] = int(rank)
    return sorted(entries, key=lambda entry: (entry["rank"], entry["name"]))


def rank_agreement(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """How the LogME ranking of ``rank_embedders``' entries compares with the linear-probe ranking.

    ``kendall_tau`` (tau-b over the two scores; None with fewer than two embedders or when either score
    is constant), ``same_order`` (both rankings identical), ``same_best`` (LogME's best is also the
    probe's best), ``linear_probe_ranking`` (names, best first) and ``time_ratio``: total linear-probe
    seconds over total LogME seconds.
    """
    logme = [entry["logme"] for entry in entries]
    probe = [entry["linear_probe_accuracy"] for entry in entries]
    tau = None
    if len(entries) >= 2:
        statistic = float(kendalltau(logme, probe).statistic)
        tau = None if math.isnan(statistic) else statistic
    by_probe = sorted(entries, key=lambda entry: (entry["rank_linear_probe"], entry["name"]))
    logme_seconds = sum(entry["seconds"]["logme"] for entry in entries)
    probe_seconds = sum(entry["seconds"]["linear_probe"] for entry in entries)
    return {
        "kendall_tau": tau,
        "same_order": all(entry["rank"] == entry["rank_linear_probe"] for entry in entries),
        "same_best": bool(entries) and {e["name"] for e in entries if e["rank"] == 1}
        == {e["name"] for e in entries if e["rank_linear_probe"] == 1},
        "linear_probe_ranking": [entry["name"] for entry in by_probe],
        "time_ratio": probe_seconds / logme_seconds if logme_seconds > 0 else None,
    }
