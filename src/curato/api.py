"""The public Python API: a ``Workspace`` with one method per command, and ``find_issues`` on arrays.

The CLI and the labelling server call exactly these functions; docs/api.md walks through them. Every method
records its run in the workspace's catalog and returns a typed result (``AuditResult``, ``BiasResult``, ...)
whose ``to_json()`` is the documented JSON and whose DataFrame views (``issues()``, ``batch()``, ...) are
what a notebook wants.

The methods that write to the workspace hold its writer lock while they run (``@_writes``: one writing
process at a time, WorkspaceBusyError otherwise); ``info``, ``check`` and ``export`` only read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from curato.checks.data import AuditData
from curato.checks.registry import (
    check_names,
    needs_of,
    params_record,
    registered_checks,
    resolve_params,
    run_checks,
)
from curato.commands.results import (
    AuditResult,
    BiasResult,
    ExportResult,
    RouteResult,
    SelectResult,
    SimulateResult,
    SizeResult,
    TransferResult,
)
from curato.errors import InputError
from curato.progress import SILENT, Progress
from curato.workspace import Workspace as WorkspaceStore

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _writes(method: _Method) -> _Method:
    """Run ``method`` holding the workspace's writer lock; the one place where commands take it."""

    @wraps(method)
    def locked(self: WorkspaceStore, *args: Any, **kwargs: Any) -> Any:
        with self.writing(method.__name__):
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


class Workspace(WorkspaceStore):
    """A dataset under study on disk: its catalog, feature store and reports, and every command as a method.

    ``Workspace.create(path)`` makes (or opens) one, ``Workspace.open(path)`` opens an existing one.
    """

    @_writes
    def ingest(self, source: str | Path, *, format: str | None = None, split: str | None = None,
               source_name: str | None = None, images: str | Path | None = None, root: str | Path | None = None,
               masks: str | Path | None = None, workers: int | None = None, progress: Progress = SILENT,
               engine: str = "local", address: str | None = None) -> Any:
        """Add a dataset (image folder, manifest, COCO, IDX, text): catalog rows, hashes, image properties.
        Every file must resolve inside ``root`` (default: the manifest's or COCO file's folder, or the image
        folder). ``masks``: a folder of indexed-PNG masks named by the images' file stems (0 = background, 1..K =
        classes, names in its classes.txt). ``engine="ray"`` hashes and scans the images on Ray (the cluster at
        ``address``, or a local Ray instance). Returns an ``IngestSummary`` (rows, samples, new, changed,
        unreadable, skipped with reasons, masks, ...)."""
        from curato.commands.ingest import ingest

        return ingest(self, source, format=format, split=split, source_name=source_name,
                      images_root=None if images is None else Path(images), root=root, masks=masks,
                      workers=workers, progress=progress, engine=engine, address=address)

    @_writes
    def embed(self, embedder: Any = None, *, batch_size: int | None = None, progress: Progress = SILENT,
              engine: str = "local", address: str | None = None) -> Any:
        """Compute (or reuse) embeddings with a registered embedder name, an embedder instance, or the default;
        ``engine="ray"`` runs the embedder on a Ray actor pool (the cluster at ``address``, or a local Ray
        instance). Returns an ``EmbedSummary`` (embedder, dim, computed, reused, failed)."""
        from curato.commands.embed import compute_embeddings

        options = {"batch_size": batch_size} if batch_size else {}
        return compute_embeddings(self, embedder, progress=progress, engine=engine, address=address, **options)[1]

    def info(self) -> dict[str, Any]:
        """Counts per kind, split, source, format and class; unreadable files; feature sets and staleness."""
        from curato.commands.info import workspace_overview

        return workspace_overview(self)

    def check(self) -> Any:
        """Do the catalog, feature store and latest reports agree, and are the sample files there? Returns a
        ``CheckResult``: ``problems`` (damage; ``consistent`` is False) and ``notes``, each saying what to re-run.
        Reads only."""
        from curato.commands.info import check_workspace

        return check_workspace(self)

    @_writes
    def audit(self, checks: Sequence[str] | None = None, *, params: Mapping[str, Any] | None = None,
              embedder: str | None = None, report: str | Path | None = None, json: str | Path | None = None,
              progress: Progress = SILENT) -> AuditResult:
        """Run the named checks (default: all registered) and keep the result as the workspace's latest audit.

        ``params``: per check, a mapping of field to value (``{"outliers": {"k": 15}}``) or a parameter
        instance; applied over the workspace's ``curato.toml``. ``report`` / ``json``: also write the HTML
        report / a JSON copy there.
        """
        from curato.commands.audit import run_audit
        from curato.commands.results import record_document

        def write(result: AuditResult) -> None:
            record_document(self, "audit", result.to_json(), json, report=report)

        return run_audit(self, checks, embedder=embedder, params=params, progress=progress, on_result=write)

    @_writes
    def bias(self, by: str = "source", *, embedder: str | None = None, json: str | Path | None = None,
             progress: Progress = SILENT, **options: Any) -> BiasResult:
        """Can a classifier tell the groups (``by``: source, split, format or any metadata column such as a
        manifest's ``camera``) apart? Does a model trained on one work on another? ``options``: alpha,
        min_effect, n_folds, seed, permutations."""
        from curato.commands.bias import run_bias

        return BiasResult(run_bias(self, by, embedder=embedder, progress=progress, json_path=json, **options))

    @_writes
    def transfer(self, embedders: Sequence[str], *, max_samples: int | None = None, seed: int = 0,
                 json: str | Path | None = None, progress: Progress = SILENT) -> TransferResult:
        """Rank pretrained backbones for this task: LogME, kNN and linear-probe accuracy per embedder."""
        from curato.commands.transfer import run_transfer

        return TransferResult(run_transfer(self, embedders, max_samples=max_samples, seed=seed, json_path=json,
                                           progress=progress))

    @_writes
    def size(self, target: float, *, metric: str = "accuracy", model: str | None = None,
             json: str | Path | None = None, progress: Progress = SILENT, **options: Any) -> SizeResult:
        """How many labels reach ``target``? ``model``: your own training recipe as ``"module:function"`` taking
        (train_ids, eval_ids) and returning the metric (or pass ``train_and_score=`` a function). ``options``:
        embedder, eval_split, seeds, n_sizes, run_backtest, augmentation, pseudo_labels, n_bootstrap."""
        from curato.commands.size import load_hook, run_size

        if model is not None:
            options["train_and_score"] = load_hook(model)
        return SizeResult(run_size(self, target=target, metric=metric, json_path=json, progress=progress,
                                   **options))

    @_writes
    def select(self, budget: int, *, strategy: str = "auto", embedder: str | None = None,
               out: str | Path | None = None, seed: int = 0, progress: Progress = SILENT) -> SelectResult:
        """Pick ``budget`` samples for people to label next and queue them for the labelling app."""
        from curato.commands.active import run_select

        return SelectResult(run_select(self, budget=budget, strategy=strategy, embedder=embedder,
                                       out=None if out is None else Path(out), seed=seed, progress=progress))

    @_writes
    def route(self, precision: float = 0.99, *, calibration: str = "temperature", embedder: str | None = None,
              json: str | Path | None = None, seed: int = 0, progress: Progress = SILENT) -> RouteResult:
        """Accept the model's labels where calibrated confidence reaches ``precision`` (origin ``model``)."""
        from curato.commands.active import run_route

        return RouteResult(run_route(self, precision=precision, calibration=calibration, embedder=embedder,
                                     json_path=None if json is None else Path(json), seed=seed, progress=progress))

    @_writes
    def undo_route(self, run_id: int) -> int:
        """Remove the model labels of routing run ``run_id``; returns how many."""
        from curato.commands.active import undo_route

        return undo_route(self, run_id)

    @_writes
    def simulate(self, strategies: Sequence[str], budget: int, rounds: int = 6, *, seeds: int = 3,
                 start: int | None = None, precisions: Sequence[float] = (0.98, 0.99), embedder: str | None = None,
                 json: str | Path | None = None, progress: Progress = SILENT) -> SimulateResult:
        """Accuracy-vs-labels curves per strategy with the known labels as oracle; label efficiency vs random."""
        from curato.commands.active import run_simulate

        if seeds < 1:
            raise InputError(f"--seeds {seeds}: run at least one seed")
        return SimulateResult(run_simulate(self, strategies=list(strategies), budget=budget, rounds=rounds,
                                           seeds=range(seeds), start=start, embedder=embedder,
                                           precisions=list(precisions), json_path=None if json is None else Path(json),
                                           progress=progress))

    def add_user(self, name: str, role: str = "annotator") -> str:
        """Create a user of the labelling app (role admin, reviewer or annotator); returns their token, which is
        shown only this once (the catalog keeps its SHA-256)."""
        from curato.commands.labelling import add_user

        return add_user(self, name, role)

    def users(self) -> list[dict[str, Any]]:
        """The labelling app's users: name, role, created_at, labels and decisions made."""
        from curato.commands.labelling import list_users

        return list_users(self)

    def export(self, out: str | Path, *, format: str = "csv", drop_duplicates: bool = False, relabel: bool = False,
               keep_unreadable: bool = False, relabel_test: bool = False) -> ExportResult:
        """Write a cleaned dataset (manifest CSV or image-folder copy) with the curated labels; sources untouched.

        ``relabel``: take the latest audit's suggested labels, except for labels people set and, unless
        ``relabel_test``, for evaluation splits (``EVALUATION_SPLITS``). ``changes`` counts every reason."""
        from curato.commands.export import EXPORT_INDEX, export_with_changes

        path, count, changes = export_with_changes(self, out, format=format, drop_duplicates=drop_duplicates,
                                                   relabel=relabel, drop_unreadable=not keep_unreadable,
                                                   relabel_test=relabel_test)
        index = Path(path) / EXPORT_INDEX if format == "imagefolder" else None
        return ExportResult(path=Path(path), count=count, format=format, index=index, changes=changes)


def demo(workspace: str | Path = "curato-demo", *, samples: int = 3000, progress: Progress = SILENT) -> Any:
    """Build the demo workspace from a real dataset (Fashion-MNIST, else scikit-learn digits), run every check,
    write the report. Returns a ``DemoResult`` (workspace, report_path, headlines, dataset)."""
    from curato.commands.demo import run_demo
    from curato.lock import WorkspaceLock

    with WorkspaceLock(workspace).hold("demo"):
        return run_demo(workspace, n_train=samples, progress=progress)


def find_issues(*, labels: Sequence[Any] | np.ndarray, features: np.ndarray | None = None,
                pred_probs: np.ndarray | None = None, images: Sequence[Any] | None = None,
                sample_ids: Sequence[str] | None = None, splits: Sequence[Any] | None = None,
                class_names: Sequence[str] | None = None, checks: Sequence[str] | None = None,
                params: Mapping[str, Any] | None = None, seed: int = 0,
                texts: Sequence[str | None] | None = None) -> AuditResult:
    """Audit in-memory data without a workspace (like cleanlab's ``Datalab.find_issues``).

    ``labels``: one per sample (None: unlabelled). ``features``: (n, d) embeddings. ``pred_probs``: (n, k)
    out-of-fold probabilities, columns in the order of ``class_names`` (default: the labels' distinct values
    sorted as strings); computed 5-fold from ``features`` when omitted. ``images``: HxWx3 uint8 arrays or file
    paths, for the image checks (quality, pixel shortcuts, exact duplicates). ``texts``: the samples' texts
    (None for a sample that is not a text), for the text duplicate rules. ``checks``: which to run
    (default: every registered check whose inputs are given). Returns an :class:`AuditResult`;
    ``result.issues()`` is the per-sample DataFrame.
    """
    from curato.arrays import as_matrix, as_probabilities, check_length, encode_labels

    label_array = np.asarray(labels, dtype=object)
    n = len(label_array)
    if n == 0:
        raise InputError("labels: empty; pass one label (or None) per sample")
    ids = np.array([str(i) for i in range(n)] if sample_ids is None else [str(s) for s in sample_ids], dtype=object)
    check_length("sample_ids", ids, n)
    if len(set(ids.tolist())) != n:
        raise InputError("sample_ids: ids must be unique")
    if splits is not None:
        check_length("splits", splits, n)
    data = AuditData(sample_ids=ids, labels=label_array,
                     splits=None if splits is None else np.asarray(splits, dtype=object))
    if features is not None:
        data.embeddings = as_matrix("features", features, rows=n, dtype=np.float32)
        data.has_embedding = np.ones(n, dtype=bool)
        data.embedder = "precomputed:features"
    if texts is not None:
        check_length("texts", texts, n)
        data.texts = np.array([t if isinstance(t, str) else None for t in texts], dtype=object)
        data.kinds = np.array(["text" if isinstance(t, str) else "image" for t in texts], dtype=object)
    if images is not None:
        check_length("images", images, n)
        _attach_images(data, images)
    if texts is not None and any(text is not None for text in data.texts):
        from curato.features.text_properties import text_property_table

        data.append_properties(*text_property_table(data.texts.tolist()))
    codes, names = encode_labels(label_array, classes=class_names)
    labelled = np.flatnonzero(codes >= 0)
    if pred_probs is not None:
        probs = as_probabilities("pred_probs", np.asarray(pred_probs, dtype=np.float64)[labelled], rows=len(labelled))
        if probs.shape[1] != len(names):
            raise InputError(f"pred_probs has {probs.shape[1]} columns but there are {len(names)} classes "
                             f"({', '.join(names)}); pass class_names= in the columns' order")
    elif (features is not None and len(names) >= 2 and len(labelled) >= 10
          and (not checks or "pred_probs" in needs_of(check_names(checks)))):  # only when a chosen check reads them
        from curato.models.oof import out_of_fold_probabilities

        probs = out_of_fold_probabilities(data.embeddings[labelled], codes[labelled], n_folds=5, seed=seed)
    else:
        probs = None
    if probs is not None:
        full = np.full((n, len(names)), np.nan)
        full[labelled] = probs
        data.pred_probs, data.class_names = full, list(names)
    chosen = check_names(checks) if checks else _runnable(data)
    timings: dict[str, float] = {}
    resolved = resolve_params(chosen, params)
    findings = run_checks(data, chosen, params=resolved, timings=timings)
    return AuditResult(findings=findings, embedder=data.embedder, checks=chosen, timings=timings,
                       params=params_record(resolved), data=data)


def _runnable(data: AuditData) -> list[str]:
    """The registered checks whose inputs ``data`` has."""
    have = {"labels"}
    if data.embeddings is not None:
        have.add("embeddings")
    if data.pred_probs is not None:
        have.add("pred_probs")
    if data.properties is not None:
        have.add("properties")
    if data.thumbnails is not None:
        have.add("thumbnails")
    return [name for name, spec in registered_checks().items() if spec.needs <= have]


def _attach_images(data: AuditData, images: Sequence[Any]) -> None:
    """Properties, hashes, thumbnails and sizes of in-memory images or image files."""
    from curato.commands.embed import DECODE_MIN_SIDE
    from curato.features.properties import PROPERTY_COLUMNS, image_features
    from curato.hashing import content_hash
    from curato.imageio import load_rgb

    paths = [isinstance(item, str | Path) for item in images]
    if all(paths):
        from curato.features.scan import scan_images

        uris = [str(item) for item in images]
        table = scan_images(uris, workers=1)
        data.uris = np.array(uris, dtype=object)
        data.readable, data.errors = table.readable, table.error
        data.content_hashes, data.phashes = table.content_hash, table.phash
        data.properties, data.thumbnails = table.properties.astype(np.float64), table.thumbnails
        data.formats, data.sizes = table.format.astype(object), np.stack([table.width, table.height], axis=1)
        data.load_image = lambda row: load_rgb(uris[row], min_side=DECODE_MIN_SIDE)
    elif not any(paths):
        arrays = [np.asarray(item) for item in images]
        properties, hashes, thumbnails = image_features(arrays)
        data.properties, data.phashes, data.thumbnails = properties.astype(np.float64), hashes, thumbnails
        data.content_hashes = np.array([content_hash(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
                                        for a in arrays], dtype=object)
        data.sizes = np.array([(a.shape[1], a.shape[0]) for a in arrays], dtype=np.int64).reshape(-1, 2)
        data.formats = np.full(len(arrays), "", dtype=object)
        data.load_image = lambda row: arrays[row]
    else:
        raise InputError("images: pass either image arrays or file paths, not a mix")
    data.property_columns = list(PROPERTY_COLUMNS)
