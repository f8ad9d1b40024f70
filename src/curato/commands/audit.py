"""``curato audit`` against a workspace: load the samples' arrays once, compute what the chosen checks need
(embeddings, out-of-fold probabilities: both cached in the feature store), run the checks from the registry
with their resolved parameters, record the run, write the outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.data import AuditData
from curato.checks.registry import check_names, needs_of, params_record, resolve_params, run_checks
from curato.commands.results import AuditResult, record_document
from curato.commands.rows import load_samples
from curato.errors import InputError
from curato.featurestore import OOF_PREFIX
from curato.progress import SILENT, Progress
from curato.system import available_cpus
from curato.workspace import Workspace


def workspace_params(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """Check parameters from the workspace's ``curato.toml`` (``[duplicates]`` / ``max_distance = 0.05``), if any."""
    path = workspace.settings_path
    if not path.exists():
        return {}
    try:
        settings = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"{path}: unreadable settings ({error}); fix the TOML or remove the file") from None
    checks = settings.get("checks", settings)
    if not isinstance(checks, dict) or not all(isinstance(v, dict) for v in checks.values()):
        raise InputError(f"{path}: write one table per check, e.g. [checks.outliers] then k = 15")
    return checks


def _labels_digest(ids: np.ndarray, labels: np.ndarray) -> str:
    payload = "\n".join(f"{sid}\t{label}" for sid, label in zip(ids.tolist(), labels.tolist(), strict=True))
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def attach_pred_probs(workspace: Workspace, data: AuditData, *, n_folds: int = 5, seed: int = 0,
                      progress: Progress = SILENT) -> None:
    """Out-of-fold probabilities for labeled rows, from the feature store or computed and cached there."""
    from curato.models.oof import oof_settings, out_of_fold_probabilities

    rows = data.labeled_rows()
    labels, class_names = data.class_codes(rows)
    if len(class_names) < 2 or len(rows) < 2 * n_folds:
        return
    settings = {**oof_settings(n_folds=n_folds, seed=seed), "embedder": data.embedder,
                "labels": _labels_digest(data.sample_ids[rows], labels), "classes": class_names}
    name = f"{OOF_PREFIX}-{data.embedder}"
    meta = {"settings": settings, "columns": class_names, "modality": "any"}
    store = workspace.features
    probs: np.ndarray | None = None
    if store.has(name):
        cached = store.load(name)
        if cached.meta.get("settings") == settings:
            vectors, found = cached.align(data.sample_ids[rows].tolist())
            probs = np.asarray(vectors, dtype=np.float64) if found.all() else None
            if probs is not None and not np.isfinite(probs).all():
                probs = None  # NaN rows an older curato wrote for identical embeddings: compute them again
    if probs is None:
        progress.stage("out-of-fold probabilities", n_folds)
        probs = out_of_fold_probabilities(data.embeddings[rows], labels, n_folds=n_folds, seed=seed,
                                          progress=progress.advance)
        store.discard_parts(name)
        store.save(name, data.sample_ids[rows].tolist(), data.content_hashes[rows].tolist(), probs, meta)
    full = np.full((len(data.sample_ids), len(class_names)), np.nan)
    full[rows] = probs
    data.pred_probs, data.class_names = full, class_names


# Up to this many rows checks run two at a time where two CPUs are free: the audit of 70k Fashion-MNIST images
# takes ~110 CPU seconds, one check at a time keeps ~1.4 of two cores busy (docs/benchmarks.md "Full audit of
# Fashion-MNIST: time back"). Above it they run one at a time, so each check's memory bound (curato.system.
# require_memory) sees the whole machine's room.
SIDE_BY_SIDE_ROWS = 300_000


def check_workers(rows: int) -> int:
    """How many checks an audit of ``rows`` samples runs at once."""
    return 2 if rows <= SIDE_BY_SIDE_ROWS and available_cpus() >= 2 else 1


def run_audit(workspace: Workspace, checks: Sequence[str] | None = None, *, embedder: str | None = None,
              params: Mapping[str, Any] | None = None, progress: Progress = SILENT,
              on_result: Callable[[AuditResult], Any] | None = None) -> AuditResult:
    """Run an audit over the workspace, computing embeddings and out-of-fold probabilities if missing.

    ``params``: per check, a mapping of field to value (or a parameter instance), applied over the workspace's
    ``curato.toml``. ``on_result(result)`` runs inside the recorded run, e.g. to write the reports: when it
    fails, the run is recorded as failed, not done.
    """
    from curato.commands.embed import choose_embedder_name, compute_embeddings

    chosen = check_names(checks)
    resolved = resolve_params(chosen, workspace_params(workspace), params)
    needs = needs_of(chosen)
    timings: dict[str, float] = {}
    settings = {"embedder": embedder, "params": params_record(resolved)}
    with workspace.catalog.recorded_run("audit", ",".join(chosen), settings) as run:
        features = None
        started = time.perf_counter()
        if "embeddings" in needs or "pred_probs" in needs:
            name = embedder or choose_embedder_name(workspace)
            features, _ = compute_embeddings(workspace, name, progress=progress)
        timings["embeddings"] = time.perf_counter() - started
        started = time.perf_counter()
        data = load_samples(workspace, features)
        timings["load"] = time.perf_counter() - started
        before = None
        if "pred_probs" in needs and features is not None:
            def before(lane: Progress) -> None:
                attach_pred_probs(workspace, data, progress=lane)
        findings = run_checks(data, chosen, params=resolved, timings=timings, progress=progress,
                              workers=check_workers(data.size), before=before)
        result = AuditResult(findings=findings, embedder=features.name if features is not None else None,
                             checks=chosen, timings=timings, params=params_record(resolved), workspace=workspace,
                             data=data, run_id=run.id,
                             # full precision: a label written in the second the checks finished is not newer
                             finished_at=dt.datetime.now(dt.UTC).isoformat())
        if on_result is not None:
            on_result(result)
        run.summary = {f.check: f.count for f in findings}
    return result


def write_audit_outputs(workspace: Workspace, result: AuditResult, *, report: str | Path | None = None,
                        json_path: str | Path | None = None, title: str | None = None) -> dict[str, Path]:
    """Record the audit (merged into the workspace's latest, this run's own document at ``json_path``), rebuild
    the workspace report (and copy it to ``report``); returns what was written, by kind."""
    record_document(workspace, "audit", result.to_json(), json_path, report=report, title=title)
    written: dict[str, Path] = {} if json_path is None else {"json": Path(json_path)}
    written["report"] = Path(report) if report is not None else workspace.reports_dir / "report.html"
    return written
