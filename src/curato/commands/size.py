"""``curato size`` = ``run_size``: measure the workspace's learning curve (resumably), forecast, write JSON.

Every (curve, size, seed) result is stored in the catalog's ``curve_points`` table, keyed by a digest of
everything that determines it (model, embedder, labels, evaluation rows), as soon as it finishes; a re-run
with the same settings skips what is stored.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from curato.arrays import encode_labels
from curato.commands.results import record_document
from curato.commands.rows import load_samples
from curato.errors import InputError
from curato.models.oof import OOF_SETTINGS_VERSION
from curato.progress import SILENT, Progress
from curato.sizing.forecast import BOOTSTRAP, METHODS, backtest, forecast, labels_worth, per_class_answers
from curato.sizing.measure import (
    METRICS,
    curve_components,
    curve_plan,
    curve_values,
    head_scorer,
    hook_scorer,
    measure_curve,
)
from curato.sizing.subsets import CROSS_FIT_FOLDS, DEFAULT_SEEDS, DEFAULT_SIZES, CurveFolds, curve_sizes, nested_subset
from curato.version import __version__
from curato.workspace import Workspace

SIZING_VERSION = 3  # bump when a stored curve point would come out different for the same settings
EVAL_SPLITS = ("test", "val", "validation", "valid", "t10k")
STRATEGY_SIZES = 3  # strategies are measured at this many of the largest allowed curve sizes
AUGMENT_MAX_SIZE = 2000
AUGMENT_CHUNK = 256
TrainAndScore = Callable[[list[str], list[str]], float]


def load_hook(path: str) -> TrainAndScore:
    """Import ``module:function`` (e.g. ``my_training:train_and_score``) for ``--model``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--model {path!r}: write it as module:function, e.g. my_training:train_and_score")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"--model {path!r}: cannot import {module_name!r} ({error}); put it on PYTHONPATH") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise InputError(f"--model {path!r}: {module_name} has no function {attribute!r}")
    return function


def run_size(workspace: Workspace, *, target: float, metric: str = "accuracy", embedder: str | None = None,
             eval_split: str | None = None, seeds: int = DEFAULT_SEEDS, n_sizes: int = DEFAULT_SIZES,
             run_backtest: bool = False, augmentation: bool = False, pseudo_labels: bool = False,
             augment_max_size: int = AUGMENT_MAX_SIZE,
             train_and_score: TrainAndScore | None = None, n_bootstrap: int = BOOTSTRAP,
             method: str = "meta", json_path: Path | None = None,
             progress: Progress = SILENT) -> dict[str, Any]:
    """How many labels reach ``target``? Returns the ``size --json`` document (``schemas/size.schema.json``).

    The model is the softmax head on the workspace's embeddings (``embedder``, computed and cached when
    missing) unless ``train_and_score(train_ids, eval_ids) -> float`` is given: then that function trains
    the user's own model on the sample ids and returns its metric on the evaluation ids. The evaluation
    rows are the labelled samples of ``eval_split`` (default: a split named test/val/validation/valid/t10k
    when one holds labelled samples); without one the curve is cross-fitted: the labelled samples are cut into
    ``CROSS_FIT_FOLDS`` stratified folds and seed ``s`` trains on subsets of the other folds and is scored on fold
    ``s mod CROSS_FIT_FOLDS``, so the default five seeds score every labelled sample once per size.
    ``method``: the forecast, "meta" (the LCDB meta-model, ``curato.sizing.meta``; the default), "families"
    (weighted curve families) or "prior" (the LCDB slope prior, ``curato.sizing.prior``).
    """

    if not 0.0 < target <= 1.0:
        raise InputError(f"--target {target}: must lie in (0, 1], e.g. 0.95")
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    if seeds < 1:
        raise InputError(f"--seeds {seeds}: use at least 1 (3 or more give intervals)")
    if method not in METHODS:
        raise InputError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if n_bootstrap < 0:
        raise InputError(f"--bootstrap {n_bootstrap}: use 0 (no intervals) or more replicates, e.g. 100")
    if train_and_score is not None and (augmentation or pseudo_labels):
        raise InputError("--augmentation / --pseudo-labels use the built-in head; drop them or drop --model")
    if train_and_score is None and embedder is None:
        from curato.commands.embed import choose_embedder_name

        embedder = choose_embedder_name(workspace)
    data = _labelled_data(workspace, embedder=embedder if train_and_score is None else None, eval_split=eval_split,
                          progress=progress)
    folds, codes, classes = data["folds"], data["codes"], data["classes"]
    k = len(classes)
    today = folds.pool_size
    sizes = curve_sizes(today, k, n_sizes=n_sizes)
    if run_backtest and today // 4 >= 2 * sizes[0]:
        # The backtest fits on sizes up to 25% only: give it as many sizes there as the curve has in all.
        sizes = np.union1d(sizes, curve_sizes(today // 4, k, n_sizes=max(4, n_sizes - 2)))
    hook_name = None if train_and_score is None else f"{train_and_score.__module__}.{train_and_score.__qualname__}"
    width = curve_components(today)
    settings = {"sizing_version": SIZING_VERSION,
                "model": hook_name or f"softmax-head-v{OOF_SETTINGS_VERSION}-pca{width}",
                "embedder": data["embedder"], "labels": data["labels_digest"], "evaluation": data["eval_digest"]}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    options = {"target": target, "metric": metric, "method": method, "seeds": seeds, "sizes": n_sizes,
               "backtest": run_backtest,
               "augmentation": augmentation, "pseudo_labels": pseudo_labels, "model": settings["model"]}
    with workspace.catalog.recorded_run("size", metric, options) as run:
        stored = _stored_points(workspace, digest)
        ids = data["ids"]
        if train_and_score is None:
            scorer = head_scorer(data["embeddings"], codes, folds, n_classes=k, components=width)
        else:
            scorer = hook_scorer(train_and_score, ids, folds)
        points = _measure(workspace, digest, "baseline", codes, folds, sizes, list(range(seeds)), scorer, stored,
                          progress, "learning curve")
        key = "score" if train_and_score is not None else metric
        measured_sizes, values = curve_values(points, key)
        chance = 1.0 - 1.0 / k
        progress.stage("fitting curves", 1)
        # Evaluation rows per class (all the seeds' folds): the intervals carry the sampling noise of the mean
        # curve scored on them.
        eval_counts = np.bincount(codes[folds.evaluated(range(seeds))], minlength=k)
        noise_metric = metric if train_and_score is None else "custom"
        answers = forecast(measured_sizes, values, target=target, chance=chance, today=today,
                           n_bootstrap=n_bootstrap, per_class_multiple=k, eval_class_counts=eval_counts,
                           metric=noise_metric, method=method)
        progress.advance(1)
        shares = np.bincount(codes[folds.pools[0]], minlength=k) / len(folds.pools[0])
        needed = answers["samples_needed"]
        needed["per_class"] = None if not needed["stated"] else {
            name: math.ceil(needed["total"] * share) for name, share in zip(classes, shares, strict=True)}
        document: dict[str, Any] = {
            "version": __version__, "workspace": str(workspace.root), "target": target,
            "metric": metric if train_and_score is None else "custom",
            "model": settings["model"], "embedder": data["embedder"], "n_train": today,
            "n_classes": k, "classes": classes, "settings": options,
            # n: the rows the seeds are scored on (cross-fitted with fewer seeds than folds: not every row).
            "evaluation": {**data["evaluation"], "n": int(eval_counts.sum())},
            "curve": [_curve_entry(size, vals) for size, vals in zip(measured_sizes, values, strict=True)],
            **answers,
        }
        if train_and_score is None:
            from curato.sizing.curves import FamilyFit, FittedCurve

            fits = [FamilyFit(f["family"], None if f["params"] is None else
                              FittedCurve(f["family"], np.array(f["params"]), max(chance, 1e-3), 0.0, 0.0),
                              f["backtest_rmse"] or math.inf, f["drop_first"], f["weight"]) for f in answers["fits"]]
            recalls = [np.array([[np.nan if r is None else r for r in points[(int(s), seed)]["recall"]]
                                 for seed in range(seeds) if (int(s), seed) in points]) for s in measured_sizes]
            document["per_class"] = per_class_answers(measured_sizes, recalls, shares, fits, target=target,
                                                      chance=chance, today=today, class_names=classes)
        else:
            document["per_class"] = None
        if run_backtest:
            document["backtest"] = backtest(measured_sizes, values, chance=chance, n_bootstrap=n_bootstrap,
                                            eval_class_counts=eval_counts, metric=noise_metric, method=method)
        if augmentation or pseudo_labels:
            document["strategies"] = _strategies(workspace, data, digest, sizes, seeds, metric, stored, measured_sizes,
                                                 values, answers, augmentation=augmentation,
                                                 pseudo_labels=pseudo_labels, augment_max_size=augment_max_size,
                                                 progress=progress)
        record_document(workspace, "size", document, json_path)
        stated = document["samples_needed"]["stated"]
        run.summary = {"samples_needed": document["samples_needed"]["total"] if stated else None,
                       "status": document["samples_needed"]["status"], "points": len(points)}
    return document


def _curve_entry(size: int, values: np.ndarray) -> dict[str, Any]:
    return {"size": int(size), "mean": float(np.mean(values)), "std": float(np.std(values)),
            "min": float(np.min(values)), "max": float(np.max(values)), "values": [float(v) for v in values]}


def _stored_points(workspace: Workspace, digest: str) -> dict[str, dict[tuple[int, int], dict[str, Any]]]:
    stored: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
    for row in workspace.catalog.curve_points(digest):
        stored.setdefault(row["curve"], {})[(row["size"], row["seed"])] = row["scores"]
    return stored


def _measure(workspace: Workspace, digest: str, curve: str, labels: np.ndarray, folds: CurveFolds, sizes: Any,
             seeds: list[int], scorer: Any, stored: dict[str, dict[tuple[int, int], dict[str, Any]]],
             progress: Progress, description: str) -> dict[tuple[int, int], dict[str, Any]]:
    plan = curve_plan(folds, sizes, seeds)
    known = {key: value for key, value in stored.get(curve, {}).items() if key in set(plan)}
    progress.stage(description, len(plan))
    progress.advance(len(known))

    def store(size: int, seed: int, scores: dict[str, Any]) -> None:
        workspace.catalog.add_curve_point(digest, curve, size, seed, scores)
        progress.advance(1)

    return measure_curve(labels, folds, [s for s, _ in plan], seeds, scorer, known=known, on_point=store)


def _labelled_data(workspace: Workspace, *, embedder: str | None, eval_split: str | None,
                   progress: Progress) -> dict[str, Any]:
    """Labelled rows as ``CurveFolds`` (an evaluation split, else cross-fitting), with codes and (for the head)
    embeddings; also the unlabelled embedded rows (pseudo-labels)."""
    features = None
    if embedder is not None:
        from curato.commands.embed import compute_embeddings

        features, _ = compute_embeddings(workspace, embedder, progress=progress)
    samples = load_samples(workspace, features, pixels=False)
    ids = samples.sample_ids.astype(str)
    usable = samples.readable.copy()
    data: dict[str, Any] = {"ids": ids, "uris": samples.uris, "hashes": samples.content_hashes, "kinds": samples.kinds}
    labels = samples.labels
    labelled = usable & np.array([label is not None for label in labels], dtype=bool)
    data["embedder"] = None
    if features is not None:
        usable &= samples.has_embedding
        labelled &= samples.has_embedding
        data["embeddings"], data["embedder"] = samples.embeddings, features.name
    _, classes = encode_labels(labels[labelled])
    if len(classes) < 2:
        raise InputError(f"{workspace.root}: sizing needs labelled samples of at least two classes, found "
                         f"{len(classes)}; ingest labelled data first")
    # every row whose label is one of the classes gets its code, also rows left out for want of an embedding
    of_a_class = np.isin(np.array([str(label) for label in labels], dtype=object), classes) & (labels != None)  # noqa: E711
    codes = np.full(len(ids), -1, dtype=np.int64)
    codes[of_a_class] = encode_labels(labels[of_a_class], classes=classes)[0]
    splits = np.array([str(s) if s is not None else "" for s in samples.splits.tolist()], dtype=object)
    chosen_split = eval_split
    if chosen_split is None:
        present = set(splits[labelled].tolist())
        chosen_split = next((s for s in EVAL_SPLITS if s in present), None)
    if chosen_split is not None:
        evaluation = np.flatnonzero(labelled & (splits == chosen_split))
        if evaluation.size == 0:
            raise InputError(f"--eval-split {chosen_split!r}: no labelled samples in that split; "
                             f"splits with labels: {', '.join(sorted(set(splits[labelled].tolist())))}")
        pool = np.flatnonzero(labelled & (splits != chosen_split))
        data["evaluation"] = {"kind": "split", "split": chosen_split, "n": int(evaluation.size)}
        folds = CurveFolds.fixed(pool, evaluation)
        fold_names = np.full(len(ids), "evaluation", dtype=object)  # what each evaluated row belongs to
    else:
        rows = np.flatnonzero(labelled)
        if len(rows) < 2 * CROSS_FIT_FOLDS:
            raise InputError(f"{workspace.root}: {len(rows)} labelled samples and no evaluation split; sizing needs "
                             f"at least {2 * CROSS_FIT_FOLDS} (or name a split with --eval-split)")
        folds = CurveFolds.cross_fitted(rows, codes, seed=0)
        fold_names = np.empty(len(ids), dtype=object)
        for number, held in enumerate(folds.evaluations):
            fold_names[held] = f"fold {number}"
        evaluation = rows
        data["evaluation"] = {"kind": "cross-fitted", "split": None, "n": int(rows.size), "folds": CROSS_FIT_FOLDS,
                              "note": f"no test split: the labelled samples are cut into {CROSS_FIT_FOLDS} stratified "
                                      f"folds; seed s trains on subsets of the other folds and is scored on fold "
                                      f"s mod {CROSS_FIT_FOLDS}, never on rows it trained on"}
    rows = np.flatnonzero(labelled)
    data.update(folds=folds, codes=codes, classes=classes,
                unlabelled=np.flatnonzero(usable & ~labelled & (splits != (chosen_split or ""))),
                labels_digest=_digest(ids[rows], np.array(classes, dtype=object)[codes[rows]]),
                eval_digest=_digest(ids[evaluation], fold_names[evaluation]))
    return data


def _digest(ids: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for sid, label in zip(ids.tolist(), labels.tolist(), strict=True):
        digest.update(f"{sid}\t{label}\n".encode())
    return digest.hexdigest()[:32]


def _strategies(workspace: Workspace, data: dict[str, Any], digest: str, sizes: np.ndarray, seeds: int, metric: str,
                stored: dict[str, dict[tuple[int, int], dict[str, Any]]], measured_sizes: np.ndarray,
                values: list[np.ndarray], answers: dict[str, Any], *, augmentation: bool, pseudo_labels: bool,
                augment_max_size: int, progress: Progress) -> list[dict[str, Any]]:
    """Measure augmentation and/or pseudo-labels at the largest few allowed curve sizes and price them in labels."""
    from curato.sizing.curves import FamilyFit, FittedCurve
    from curato.sizing.strategies import augmentation_scores, pseudo_label_scores

    folds, codes, k = data["folds"], data["codes"], len(data["classes"])
    embeddings = data["embeddings"]
    chance = 1.0 - 1.0 / k
    today = folds.pool_size
    width = curve_components(today)  # the baseline curve's head width
    fits = [FamilyFit(f["family"], None if f["params"] is None else
                      FittedCurve(f["family"], np.array(f["params"]), max(chance, 1e-3), 0.0, 0.0),
                      f["backtest_rmse"] or math.inf, f["drop_first"], f["weight"]) for f in answers["fits"]]
    means = np.array([np.mean(v) for v in values])
    seed_list = list(range(seeds))
    results = []
    plans: list[tuple[str, np.ndarray]] = []
    if augmentation:
        allowed = sizes[sizes <= augment_max_size]
        if allowed.size == 0:
            raise InputError(f"--augment-max-size {augment_max_size}: smaller than the smallest curve size "
                             f"{int(sizes[0])}; raise it")
        plans.append(("augmentation", allowed[-STRATEGY_SIZES:]))
    if pseudo_labels:
        truly_unlabelled = data["unlabelled"]
        allowed = sizes if truly_unlabelled.size else sizes[sizes <= today // 2]
        plans.append(("pseudo-labels", allowed[-STRATEGY_SIZES:]))
    for curve, chosen in plans:
        if curve == "augmentation":
            augmented = _augmented_embeddings(workspace, data, chosen, seed_list, progress)

            def score(subset: np.ndarray, seed: int, augmented: dict[str, np.ndarray] = augmented) -> dict[str, Any]:
                rows = folds.pool(seed)[subset]
                copies = np.stack([augmented[sid] for sid in data["ids"][rows].tolist()])
                return augmentation_scores(embeddings, codes, rows, folds.evaluation(seed), copies, n_classes=k,
                                           seed=seed, components=width)
        else:
            def score(subset: np.ndarray, seed: int) -> dict[str, Any]:
                pool = folds.pool(seed)
                rows = pool[subset]
                # Without unlabelled samples, the pool rows this subset leaves out (never the evaluation fold).
                unlabelled = data["unlabelled"] if data["unlabelled"].size else np.setdiff1d(pool, rows)
                return pseudo_label_scores(embeddings, codes, rows, unlabelled, folds.evaluation(seed), n_classes=k,
                                           seed=seed, components=width)
        points = _measure(workspace, digest, curve, codes, folds, chosen, seed_list, score, stored, progress, curve)
        strategy_sizes, strategy_values = curve_values(points, metric)
        entries = []
        for size, vals in zip(strategy_sizes, strategy_values, strict=True):
            value = float(np.mean(vals))
            worth = labels_worth(measured_sizes, means, fits, size=int(size), value=value)
            baseline = float(means[list(measured_sizes).index(size)]) if size in measured_sizes else None
            entries.append({**_curve_entry(int(size), vals), "baseline": baseline,
                            "worth_labels": None if not math.isfinite(worth) else round(worth),
                            "worth_ratio": None if not math.isfinite(worth) else float((size + worth) / size)})
        last = entries[-1]
        results.append({"strategy": curve, "points": entries, "at_size": last["size"],
                        "at_today": last["size"] == today, "worth_labels": last["worth_labels"],
                        "worth_ratio": last["worth_ratio"]})
    return results


def _augmented_embeddings(workspace: Workspace, data: dict[str, Any], sizes: np.ndarray, seeds: list[int],
                          progress: Progress) -> dict[str, np.ndarray]:
    """One augmented copy per training image of the chosen subsets, embedded with the workspace's embedder and
    cached in the feature store as ``augment-<embedder>`` (resumable, chunk by chunk)."""
    from curato.features.embedders import get_embedder
    from curato.imageio import load_rgb
    from curato.sizing.strategies import augmented_images

    name = data["embedder"]
    if name is None or name.startswith("precomputed"):
        raise InputError("--augmentation re-embeds augmented images: use an image embedder (--embedder), "
                         "not precomputed vectors")
    folds, codes = data["folds"], data["codes"]
    rows = np.unique(np.concatenate([folds.pool(seed)[nested_subset(codes[folds.pool(seed)], int(sizes.max()),
                                                                    seed=seed)] for seed in seeds]))
    if any(kind != "image" for kind in data["kinds"][rows].tolist()):
        raise InputError("--augmentation works on images; this workspace's training samples are not all images")
    store, feature_name = workspace.features, f"augment-{name}"
    embedder = get_embedder(name)
    meta = {"settings": {"embedder": embedder.settings(), "augmentation": "flip+crop(0.8-1)+jitter(0.2) v1"},
            "embedder": name}
    done = store.done_hashes(feature_name, meta=meta)
    ids, hashes = data["ids"], data["hashes"]
    todo = [row for row in rows.tolist() if done.get(ids[row]) != hashes[row]]
    progress.stage("augmenting and embedding", len(todo))
    for start in range(0, len(todo), AUGMENT_CHUNK):
        chunk = todo[start:start + AUGMENT_CHUNK]
        images = [augmented_images([load_rgb(str(data["uris"][row]))], seed=zlib.crc32(ids[row].encode()))[0]
                  for row in chunk]
        vectors = np.asarray(embedder.embed(images), dtype=np.float32)
        store.write_part(feature_name, [ids[row] for row in chunk], [hashes[row] for row in chunk], vectors)
        progress.advance(len(chunk))
    if store.pending_parts(feature_name) or not store.has(feature_name):
        store.finalize(feature_name, meta)
    features = store.load(feature_name)
    vectors, found = features.align(ids[rows].tolist())
    return {sid: vectors[i] for i, sid in enumerate(ids[rows].tolist()) if found[i]}
