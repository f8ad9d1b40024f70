"""The live loop behind ``curato serve``: after every ``refit_every`` new human labels the active-learning head is
refitted in a background thread, the queued items get the model's suggestion and a new order, the routing rule
(when set) accepts confident items, and the status shows the estimated accuracy and the labels still needed
for ``curato size``'s target. Requests never wait for it: they read the last finished refit.

Only the first :data:`RERANK_LIMIT` unassigned queued items (in their current order) are re-ranked per refit,
so a refit stays seconds long on a 100k-item queue; the rest keep their order until they move up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from sqlalchemy import select, update

from curato.catalog.catalog import utcnow
from curato.catalog.schema import LABELLING_QUEUE, decisions, queue
from curato.commands import labelling
from curato.errors import CuratoError
from curato.workspace import Workspace

RERANK_LIMIT = 5000
ACCURACY_SAMPLE = 5000
POLL_SECONDS = 1.0
EXPIRE_EVERY_SECONDS = 60.0
CLASSES_SECONDS = 10.0
log = logging.getLogger("curato.serve")


class BackgroundLoop:
    """A daemon thread that runs :meth:`_tick` when woken (:meth:`notify`) or every ``poll`` seconds (None: only
    when woken). A failing tick is logged and shown in ``state["error"]``; the thread goes on, and requests never
    wait for it."""

    thread_name = "curato-loop"
    poll: float | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: dict[str, Any] = {"running": False, "error": None}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.state)

    def notify(self) -> None:
        """Something the loop depends on changed: the thread checks whether work is due."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception as error:  # the loop must survive a failed step; the status shows why
                log.exception("%s failed", self.thread_name)
                with self._lock:
                    self.state.update(running=False, error=str(error).splitlines()[0] if str(error) else repr(error))

    def _tick(self) -> None:
        raise NotImplementedError


class LiveLoop(BackgroundLoop):
    """The background refit thread of one server, and the state requests read (settings, suggestions, classes)."""

    thread_name = "curato-live-loop"
    poll = POLL_SECONDS

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self._settings = labelling.read_app_settings(workspace)
        self._suggestions: dict[str, tuple[str, float]] = select_suggestions(workspace)
        self._classes: tuple[float, list[str]] = (0.0, [])
        self._labels_at_refit: int | None = None
        self._last_expiry = 0.0
        self.state: dict[str, Any] = {"running": False, "refits": 0, "last_refit": None, "estimated_accuracy": None,
                                      "labels_to_target": None, "target": None, "routed": 0, "reranked": 0,
                                      "error": None, "note": None}

    # ---- what requests read ----
    def settings(self) -> labelling.AppSettings:
        return self._settings

    def reload_settings(self) -> None:
        self._settings = labelling.read_app_settings(self.workspace)

    def suggestions(self) -> dict[str, tuple[str, float]]:
        return self._suggestions

    def classes(self) -> list[str]:
        stamp, names = self._classes
        if time.monotonic() - stamp > CLASSES_SECONDS or not names:
            names = labelling.class_names(self.workspace)
            self._classes = (time.monotonic(), names)
        return names

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_expiry > EXPIRE_EVERY_SECONDS:
            self._last_expiry = now
            labelling.expire_assignments(self.workspace, self._settings)
        count = _human_label_count(self.workspace)
        if self._labels_at_refit is not None and count - self._labels_at_refit < self._settings.refit_every:
            return
        self._labels_at_refit = count
        with self._lock:
            self.state.update(running=True, error=None)
        result = refit(self.workspace, self._settings)
        with self._lock:
            if result.get("suggestions") is not None:
                self._suggestions = result.pop("suggestions")
            self.state.update(running=False, refits=self.state["refits"] + 1,
                              last_refit=utcnow().isoformat(timespec="seconds"), **result)
        self._classes = (0.0, [])


def _human_label_count(workspace: Workspace) -> int:
    from sqlalchemy import func

    with workspace.catalog.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(decisions).where(
            decisions.c.queue == LABELLING_QUEUE, decisions.c.action == "label",
            decisions.c.undone_at.is_(None))).scalar() or 0)


def select_suggestions(workspace: Workspace) -> dict[str, tuple[str, float]]:
    """The model labels of the latest ``curato select`` batch, until the first refit replaces them."""
    document = workspace.read_latest("select") or {}
    return {str(row["sample_id"]): (str(row["predicted_label"]), float(row.get("confidence") or 0.0))
            for row in document.get("batch", []) if row.get("predicted_label") is not None}


def refit(workspace: Workspace, settings: labelling.AppSettings) -> dict[str, Any]:
    """One refit: suggestions for the queued items, their new order, routing, estimated accuracy and the
    labels still needed. Uses the embeddings of the latest ``select`` run; without them it only reports why."""
    from curato.active.heads import cross_fitted_probabilities, head_probabilities
    from curato.active.strategies import diversity_features, select_batch
    from curato.commands.rows import stored_rows

    selected = workspace.read_latest("select") or {}
    embedder = selected.get("embedder")
    if not embedder or not workspace.features.has(str(embedder)):
        return {"note": "no embeddings of a `curato select` run: the queue keeps its order",
                "labels_to_target": _labels_to_target(workspace, None)[0],
                "target": _labels_to_target(workspace, None)[1]}
    rows = stored_rows(workspace, str(embedder))
    labeled = rows.codes >= 0
    result: dict[str, Any] = {"note": None}
    if labeled.sum() < 2 or len(rows.classes) < 2:
        result["note"] = "needs labels of two classes before the model can suggest"
        return result
    k = len(rows.classes)
    probs = head_probabilities(rows.embeddings, rows.codes, labeled, n_classes=k, seed=0)
    position = {sid: i for i, sid in enumerate(rows.ids.tolist())}
    with workspace.catalog.engine.connect() as conn:
        waiting = conn.execute(select(queue.c.id, queue.c.sample_id, queue.c.strategy)
                               .where(queue.c.status == "queued", queue.c.assigned == 0)
                               .order_by(queue.c.run_id, queue.c.rank).limit(RERANK_LIMIT)).all()
    suggestions = {str(rows.ids[i]): (rows.classes[int(probs[i].argmax())], float(probs[i].max()))
                   for i in range(len(rows.ids)) if not labeled[i]}
    result["suggestions"] = suggestions
    pool = [(int(qid), position[sid], strategy) for qid, sid, strategy in waiting if sid in position]
    if len(pool) > 1:
        pool_rows = np.array([row for _, row, _ in pool])
        strategy = pool[0][2]
        taken = np.ones(len(rows.ids), dtype=bool)
        taken[pool_rows] = False
        try:
            picked = select_batch(strategy, budget=len(pool_rows), labeled=taken, pred_probs=probs,
                                  features=diversity_features(rows.embeddings, seed=0), n_classes=k, seed=0)
            order = {int(row): rank for rank, row in enumerate(picked.indices, start=1)}
        except CuratoError as error:  # e.g. a strategy that needs an ensemble: keep the order, say why
            order, result["note"] = {}, f"queue order kept: {error}"
        by_row = {row: qid for qid, row, _ in pool}
        with workspace.catalog.transaction() as conn:
            first_rank = conn.execute(select(queue.c.rank).where(queue.c.id == pool[0][0])).scalar() or 1
            for row, rank in order.items():
                conn.execute(update(queue).where(queue.c.id == by_row[row], queue.c.assigned == 0,
                                                 queue.c.status == "queued")
                             .values(rank=int(first_rank) - 1 + rank))
        result["reranked"] = len(order)
    if settings.route_precision is not None:
        result["routed"] = _route(workspace, settings.route_precision, str(embedder))
    sample = np.flatnonzero(labeled)
    if len(sample) > ACCURACY_SAMPLE:
        sample = np.sort(np.random.default_rng(0).choice(sample, ACCURACY_SAMPLE, replace=False))
    codes = rows.codes[sample]
    if len(np.unique(codes)) >= 2 and np.bincount(codes).max() < len(codes):
        mask = np.ones(len(sample), dtype=bool)
        oof = cross_fitted_probabilities(rows.embeddings[sample], codes, mask, n_classes=k, seed=0)
        result["estimated_accuracy"] = round(float((oof.argmax(1) == codes).mean()), 4)
    training = labeled & np.isin(rows.splits, ["train", None])
    result["labels_to_target"], result["target"] = _labels_to_target(workspace, int(training.sum()))
    return result


def _route(workspace: Workspace, precision: float, embedder: str) -> int:
    """Accept confident model labels with ``curato route``'s rule; their queue entries need no person."""
    from curato.commands.active import run_route

    try:
        document = run_route(workspace, precision=precision, embedder=embedder)
    except CuratoError:  # nothing left to route, or too few classes yet
        return 0
    routed = [row["sample_id"] for row in document["labels"]]
    with workspace.catalog.transaction() as conn:
        for start in range(0, len(routed), 900):
            conn.execute(update(queue).where(queue.c.sample_id.in_(routed[start:start + 900]),
                                             queue.c.status == "queued", queue.c.assigned == 0)
                         .values(status="routed"))
    return len(routed)


def _labels_to_target(workspace: Workspace, labelled_now: int | None) -> tuple[int | None, float | None]:
    """(labels still needed, target) from the latest ``curato size`` forecast (training samples it needs minus
    the labelled training samples now), or (None, target) where it states no number (not reached, "cannot be
    pinned down"); 0 where the target is already reached."""
    document = workspace.read_latest("size") or {}
    answer = document.get("samples_needed") or {}
    target = document.get("target")
    if answer.get("status") == "reached":
        return 0, target
    needed = answer.get("total") if answer.get("status") == "estimated" else None
    if needed is None:
        return None, target
    have = max(int(document.get("n_train") or 0), labelled_now or 0)
    return max(0, int(needed) - have), target
