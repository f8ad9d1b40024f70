"""Workspace shells: ``curato select`` (= ``run_select``), ``curato route`` (``run_route`` / ``undo_route``) and
``curato simulate`` (``run_simulate``). They read the catalog and the feature store, call the pure core in
``curato.active`` and write the catalog, the batch file and ``reports/<name>-latest.json``."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.active.heads import ensemble_probabilities, head_probabilities
from curato.active.routing import CALIBRATION_METHODS, route_auto_labels
from curato.active.simulate import label_schedule, simulate_active_learning, simulate_routing, summarize_curves
from curato.active.strategies import (
    STRATEGIES_VERSION,
    available_strategies,
    diversity_features,
    select_batch,
    strategy_spec,
)
from curato.arrays import encode_labels, stratified_subsample
from curato.commands.results import record_document
from curato.commands.rows import embedded_rows
from curato.errors import InputError
from curato.progress import SILENT, Progress
from curato.version import __version__
from curato.workspace import Workspace, write_json

SIMULATE_CHECKPOINT = "simulate-progress.jsonl"
ROUTE_ANNOTATOR = "curato-route:{run_id}"
HELD_OUT_SHARE = 0.2
HELD_OUT_MAX = 10_000


# -- select ------------------------------------------------------------------------------------------


def run_select(workspace: Workspace, *, budget: int, strategy: str = "auto", embedder: str | None = None,
               out: Path | None = None, seed: int = 0, progress: Progress = SILENT) -> dict[str, Any]:
    """Pick ``budget`` unlabelled samples with ``strategy``, queue them in the catalog (one transaction) and
    write them to ``out`` (CSV, or JSON when it ends in ``.json``) and ``reports/select-latest.json``. Each batch
    row names the sample's file (``path``; None for a text sample) so that a labeller can find it.

    Unlabelled = no current label and not already queued. The head (for strategies that need one, and for the
    batch's ``predicted_label`` and ``confidence``) is the active-learning head on the labelled samples'
    embeddings (:func:`~curato.active.heads.head_probabilities`). The files are written inside the queue's
    transaction: when a write fails, nothing is queued.
    """

    spec = strategy_spec(strategy)
    if out is not None and Path(out).suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--out {out}: write the batch to a .csv or .json file")
    rows = embedded_rows(workspace, embedder, progress=progress)
    classes, codes = rows.classes, rows.codes
    queued = {entry["sample_id"] for entry in workspace.catalog.queued("queued")}
    labeled = codes >= 0
    taken = labeled | np.isin(rows.ids, list(queued))
    probs = None
    if labeled.sum() >= 2 and len(classes) >= 2:
        probs = head_probabilities(rows.embeddings, codes, labeled, n_classes=len(classes), seed=seed)
    extra: dict[str, Any] = {}
    if spec.ensemble is not None:
        if probs is None:
            raise InputError(f"--strategy {strategy}: needs labelled samples of at least two classes; start with "
                             "--strategy typiclust")
        extra["ensemble_probs"] = ensemble_probabilities(spec.ensemble, rows.embeddings, codes, labeled,
                                                         n_classes=len(classes), seed=seed)
    progress.stage(f"select ({strategy})", 1)
    selection = select_batch(strategy, budget=budget, labeled=taken, pred_probs=probs,
                             features=diversity_features(rows.embeddings, seed=seed),
                             n_classes=len(classes) if probs is not None else None, seed=seed, **extra)
    progress.advance(1)
    paths = dict(zip(*workspace.catalog.samples(("sample_id", "uri")).values(), strict=True))
    batch = []
    for rank, (index, score, reason) in enumerate(zip(selection.indices, selection.scores, selection.reasons,
                                                      strict=True), start=1):
        predicted = None if probs is None else classes[int(probs[index].argmax())]
        confidence = None if probs is None else round(float(probs[index].max()), 6)
        batch.append({"sample_id": str(rows.ids[index]), "path": paths.get(str(rows.ids[index])), "rank": rank,
                      "score": round(float(score), 6),
                      "reason": reason, "predicted_label": predicted, "confidence": confidence})
    settings = {"budget": budget, "strategy": strategy, "embedder": rows.embedder, "seed": seed}
    with workspace.catalog.recorded_run("select", strategy, settings) as run:
        document = {"version": __version__, "workspace": str(workspace.root), "run_id": run.id, "strategy": strategy,
                    "embedder": rows.embedder, "n_labeled": int(labeled.sum()),
                    "n_unlabeled": int((~taken).sum()), "n_already_queued": int((taken & ~labeled).sum()),
                    "batch": batch}
        # The files are written before the queue commits: a batch nobody received is never queued.
        with workspace.catalog.transaction() as conn:
            workspace.catalog.queue_batch(conn, run.id, strategy, batch)
            record_document(workspace, "select", document)
            if out is not None:
                _write_batch(Path(out), document)
        run.summary = {"queued": len(batch)}
    return document


def _write_batch(path: Path, document: dict[str, Any]) -> None:

    if path.suffix.lower() == ".json":
        write_json(path, document)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(document["batch"][0]) if document["batch"] else ["sample_id"])
        writer.writeheader()
        writer.writerows(document["batch"])
    os.replace(tmp, path)


# -- route -------------------------------------------------------------------------------------------


def run_route(workspace: Workspace, *, precision: float = 0.99, calibration: str = "temperature",
              embedder: str | None = None, json_path: Path | None = None, seed: int = 0,
              progress: Progress = SILENT) -> dict[str, Any]:
    """Auto-label the unlabelled samples whose calibrated confidence reaches their predicted class's threshold
    for ``precision`` (see :mod:`curato.active.routing`); the labels are stored with origin ``model`` and
    annotator ``curato-route:<run id>`` (undo with :func:`undo_route`). Calibration uses the human and
    imported labels only."""
    from curato.active.heads import cross_fitted_probabilities

    if calibration not in CALIBRATION_METHODS:
        raise InputError(f"--calibration {calibration!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}")
    if not 0.5 <= precision < 1.0:
        raise InputError(f"--precision {precision}: ask for a precision in [0.5, 1), e.g. 0.99")
    rows = embedded_rows(workspace, embedder, progress=progress)
    trusted = workspace.catalog.labeled_sample_ids(("human", "imported"))
    people = np.isin(rows.ids, list(trusted))
    codes, classes = encode_labels(np.where(people, rows.labels, None))
    unlabeled = rows.labels == None  # noqa: E711
    if len(classes) < 2:
        raise InputError(f"{workspace.root}: routing needs human or imported labels of at least two classes")
    if not unlabeled.any():
        raise InputError(f"{workspace.root}: every embedded sample has a label already; nothing to route")
    progress.stage("route: calibrate and threshold", 1)
    probs = cross_fitted_probabilities(rows.embeddings, codes, people, n_classes=len(classes), seed=seed)
    targets = np.flatnonzero(unlabeled)
    routing = route_auto_labels(probs[people], codes[people], probs[targets], precision=precision, method=calibration)
    progress.advance(1)
    settings = {"precision": precision, "calibration": calibration, "embedder": rows.embedder, "seed": seed}
    with workspace.catalog.recorded_run("route", calibration, settings) as run:
        annotator = ROUTE_ANNOTATOR.format(run_id=run.id)
        accepted_rows = targets[routing.accepted]
        new_labels = {str(rows.ids[i]): classes[int(routing.predicted[j])]
                      for i, j in zip(accepted_rows, routing.accepted, strict=True)}
        confidences = {str(rows.ids[i]): float(routing.confidence[j])
                       for i, j in zip(accepted_rows, routing.accepted, strict=True)}
        thresholds = [{**entry, "class": classes[entry["class"]]} for entry in routing.thresholds]
        document = {
            "version": __version__, "workspace": str(workspace.root), "run_id": run.id, "annotator": annotator,
            "embedder": rows.embedder, "requested_precision": precision,
            "calibration": {"method": calibration, "temperature": routing.calibration.temperature,
                            "labels": int(people.sum())},
            "n_unlabeled": len(targets), "auto_labelled": len(new_labels),
            "share_auto_labelled": len(new_labels) / len(targets),
            "expected_wrong": round(routing.expected_wrong, 3),
            "expected_wrong_bound": round(routing.expected_wrong_bound, 3),
            "thresholds": thresholds, "undone": False,
            "labels": [{"sample_id": sid, "label": label, "confidence": round(confidences[sid], 6)}
                       for sid, label in new_labels.items()],
        }
        # The record (what was accepted, and how to undo it) is written before the labels commit.
        with workspace.catalog.transaction() as conn:
            workspace.catalog.add_labels(conn, new_labels, origin="model", annotator=annotator, confidence=confidences)
            record_document(workspace, "route", document, json_path)
        run.summary = {"auto_labelled": len(new_labels), "expected_wrong": document["expected_wrong"]}
    return document


def undo_route(workspace: Workspace, run_id: int) -> int:
    """Retract the model labels routing run ``run_id`` stored (kept as history, no longer counted); returns how
    many. Raises when the run is unknown."""

    known = {run["id"] for run in workspace.catalog.runs("route")}
    if run_id not in known:
        raise InputError(f"--undo {run_id}: no routing run with that id; routing runs: "
                         f"{', '.join(map(str, sorted(known))) or 'none'}")
    with workspace.catalog.transaction() as conn:
        removed = workspace.catalog.retract_model_labels(conn, ROUTE_ANNOTATOR.format(run_id=run_id))
    latest = workspace.read_latest("route")
    if latest is not None:  # the labels changed: the report is rebuilt either way
        record_document(workspace, "route", {**latest, "undone": True} if latest.get("run_id") == run_id else latest)
    return removed


# -- simulate ----------------------------------------------------------------------------------------


def run_simulate(workspace: Workspace, *, strategies: Sequence[str], budget: int, rounds: int,
                 seeds: Sequence[int] = (0,), start: int | None = None, embedder: str | None = None,
                 precisions: Sequence[float] = (0.98, 0.99), calibration: str = "temperature",
                 json_path: Path | None = None, progress: Progress = SILENT) -> dict[str, Any]:
    """Simulate active learning on the labelled samples (their labels are the oracle); returns the
    ``simulate --json`` document (schema ``curato/schemas/simulate.schema.json``).

    Accuracy is measured on the labelled ``test`` split when it has samples of at least two classes, else on a
    fixed stratified 20% of the labelled samples (at most 10,000). Every finished (strategy, seed, round) is
    appended to ``reports/simulate-progress.jsonl`` under a digest of the settings, so running the same
    command again after an interruption resumes.
    """

    names = [name.strip() for name in strategies if name.strip()]
    known_strategies = available_strategies()
    unknown = [name for name in names if name not in known_strategies]
    if not names or unknown:
        raise InputError(f"--strategies: {', '.join(unknown) or 'none given'}; choose from "
                         f"{', '.join(known_strategies)}")
    if len(set(names)) != len(names):
        raise InputError("--strategies: name each strategy once")
    if calibration not in CALIBRATION_METHODS:
        raise InputError(f"--calibration {calibration!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}")
    schedule = label_schedule(budget, rounds, start=start)
    rows = embedded_rows(workspace, embedder, progress=progress)
    known = rows.labeled
    classes, codes = rows.classes, rows.codes[known]
    x, splits = rows.embeddings[known], rows.splits[known]
    if len(classes) < 2:
        raise InputError(f"{workspace.root}: simulation needs labelled samples of at least two classes")
    test = splits == "test"
    if len(np.unique(codes[test])) >= 2:
        test_set = f"split 'test' ({int(test.sum())} samples)"
    else:
        size = min(HELD_OUT_MAX, max(len(classes), round(HELD_OUT_SHARE * len(codes))))
        test = np.zeros(len(codes), dtype=bool)
        test[stratified_subsample(codes, size, seed=0)] = True
        test_set = f"stratified held-out {int(test.sum())} of the labelled samples (no labelled 'test' split)"
    settings = {"strategies": names, "budget": budget, "rounds": rounds, "schedule": schedule,
                "seeds": [int(s) for s in seeds], "embedder": rows.embedder, "precisions": list(precisions),
                "calibration": calibration}
    digest = _settings_digest(settings, rows.ids[known], codes, test)
    checkpoint = workspace.reports_dir / SIMULATE_CHECKPOINT
    completed = _read_checkpoint(checkpoint, digest)
    with workspace.catalog.recorded_run("simulate", ",".join(names), settings) as run:
        features = diversity_features(x)
        records = simulate_active_learning(
            x, codes, test=test, strategies=names, schedule=schedule, seeds=seeds, features=features,
            n_classes=len(classes), completed=completed,
            on_result=lambda record: _append_checkpoint(checkpoint, digest, record), progress=progress)
        curves = summarize_curves(records, strategies=names, schedule=schedule, seeds=seeds)
        routed_by = "random" if "random" in names else names[0]
        routing = []
        if precisions:
            progress.stage("simulate routing", len(seeds))
            for seed in seeds:
                labeled = np.zeros(len(codes), dtype=bool)
                for record in records:
                    if record["strategy"] == routed_by and record["seed"] == seed:
                        labeled[np.asarray(record["picked"], dtype=np.int64)] = True
                routing += simulate_routing(x, codes, labeled, ~test, precisions=precisions, method=calibration,
                                            n_classes=len(classes), seed=int(seed))
                progress.advance(1)
        others = [name for name in names if name != "random"]
        best = max(others, key=lambda name: curves[name]["auc"]) if others else None
        document = {
            "version": __version__, "workspace": str(workspace.root), "embedder": rows.embedder,
            "n_samples": len(codes), "n_pool": int((~test).sum()), "n_test": int(test.sum()), "test_set": test_set,
            "classes": classes, "settings": settings, "best_strategy": best,
            "strategies": {name: _rounded_curve(curve) for name, curve in curves.items()},
            "seconds": {name: round(sum(r["select_seconds"] for r in records if r["strategy"] == name), 3)
                        for name in names},
            "routing": {"labelled_by": routed_by, "results": routing},
        }
        record_document(workspace, "simulate", document, json_path)
        run.summary = {"best_strategy": best}
    return document


def _rounded_curve(curve: dict[str, Any]) -> dict[str, Any]:
    def r(values: list[float]) -> list[float]:
        return [round(float(v), 5) for v in values]

    return {**curve, "accuracy": r(curve["accuracy"]), "low": r(curve["low"]), "high": r(curve["high"]),
            "per_seed": {seed: r(values) for seed, values in curve["per_seed"].items()},
            "auc": round(curve["auc"], 5)}


def _settings_digest(settings: dict[str, Any], ids: np.ndarray, codes: np.ndarray, test: np.ndarray) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    # A resumed simulation must not mix rounds picked under older selection rules with newer ones.
    digest.update(f"rules {STRATEGIES_VERSION}".encode())
    digest.update("\n".join(map(str, ids.tolist())).encode())
    digest.update(codes.tobytes())
    digest.update(test.tobytes())
    return digest.hexdigest()[:16]


def _read_checkpoint(path: Path, digest: str) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Finished rounds of an earlier run with the same settings; a torn last line (crash mid-write) is ignored."""
    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("digest") == digest:
            record = entry["record"]
            done[(record["strategy"], int(record["seed"]), int(record["round"]))] = record
    return done


def _append_checkpoint(path: Path, digest: str, record: dict[str, Any]) -> None:
    """One JSON line per finished round, flushed to disk before the next round starts."""
    with path.open("a+b") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":  # a torn line from a crash: end it, so this record starts its own line
                handle.write(b"\n")
        handle.write((json.dumps({"digest": digest, "record": record}) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())
