# Run from the repository root (1M rows on SQLite: about 5 minutes on 2 cores; 10M: about an hour):
#   .venv/bin/python benchmarks/catalog_scale.py build --n 1000000 --db sqlite --root /tmp/catalog-scale/sqlite-1m
#   .venv/bin/python benchmarks/catalog_scale.py query --root /tmp/catalog-scale/sqlite-1m --json /tmp/q.json
#   .venv/bin/python benchmarks/catalog_scale.py properties --root /tmp/catalog-scale/sqlite-1m   # the report's table
#   (--db postgresql+psycopg://postgres@127.0.0.1:55432/postgres creates a fresh database for the run)
"""The catalog at 1M and 10M rows (issue 25): batch writes, ``curato info`` and the per-request queries.

``build`` makes a workspace of ``--n`` synthetic-but-realistic samples through the catalog's own batch writers,
``--chunk`` samples per transaction: ``upsert_samples`` (ids ``<split>/<class>/<n>.<ext>``, splits 80/10/10,
two sources, PNG/JPEG, sizes, bytes, content hashes and perceptual hashes, 0.1 % unreadable with an error),
``sync_imported_labels`` (one imported label per sample, 1 % of them wrong, then a re-import correcting those),
``add_labels`` (human labels on 3 % of samples by one of 7 annotators, 0.5 % labelled by 2-3 annotators who
sometimes disagree; model labels a route rule accepted on 2 %, plus a routing run that is retracted again) and
review decisions on 0.2 % (``Catalog.record_decision``: a ``label_issues`` decision with its human label, a tenth
of them undone by ``Catalog.undo_decision``; code from before schema 5 writes them with the app's old
statements). It also queues a 10k-item labelling batch and adds an annotator, so the app's per-request queries
have something to answer. Rows/s per writer are printed (with ``--progress``: after every batch). ``kill -INT``
ends the build after the batch being written (no re-import, undo or queue then) and reports what was built.

``query`` times, each in its own forked process (wall time and that process's peak RSS from
``resource.getrusage``): ``Workspace.info()`` (= ``workspace_overview``, which ``curato info`` prints and the
report's overview shows), ``curated_labels()``, ``group_counts('split')``, ``sample_count()`` and the
labelling app's per-request work: ``next_item`` (an annotator's next assignment), ``app_status`` (``/api/status``),
``class_names`` (the class list each page loads) and ``remaining_items``; before them the opening of the
workspace (where an older catalog is migrated: schema 5 fills the curated-label table) and a first read of the
curated labels (where the multi-annotator aggregates are refitted when answers changed since the last fit, as
after ``build``); after them ``/api/status`` right after one new answer (the refit it then pays) and
``curated_label_problems`` (``curato check``'s comparison of the stored labels with the rule); also one routed
label written and read back, the report's read of every sample's uri, the report itself (``write_report`` of an
audit flagging 1,000 samples) and two of its parts alone (the examples per class; the per-class property means,
after ``properties`` wrote an image-properties set), ``count_problems`` (``curato check``'s recount of the
maintained counts) and the catalog's size on disk. ``--skip`` leaves
out named queries (e.g. the old ``curated_labels`` at 10M). The table is printed; ``--json`` appends the results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
SPLIT_OF_DIGIT = ["train"] * 8 + ["val", "test"]  # i % 10 -> split: 80/10/10
ANNOTATORS = tuple(f"annotator{k}" for k in range(7))


def class_names(count: int) -> list[str]:
    return [f"class{k:04d}" for k in range(count)]


def chunk_rows(start: int, stop: int, classes: list[str]) -> tuple[list[dict[str, Any]], dict[str, str],
                                                                      np.ndarray, list[str]]:
    """Sample rows of samples ``start..stop-1``, their imported labels, their true class index and their ids."""
    index = np.arange(start, stop, dtype=np.int64)
    truth = (index * 2654435761) % len(classes)
    wrong = index % 100 == 3  # 1 % imported wrong (the next class)
    imported = np.where(wrong, (truth + 1) % len(classes), truth)
    rows, given, ids = [], {}, []
    for i, klass, shown in zip(index.tolist(), truth.tolist(), imported.tolist(), strict=True):
        split = SPLIT_OF_DIGIT[i % 10]
        ext = "png" if i % 4 else "jpg"
        sid = f"{split}/{classes[klass]}/{i:08d}.{ext}"
        ok = i % 1000 != 7
        rows.append({"sample_id": sid, "kind": "image", "uri": f"/data/images/{sid}", "text": None, "split": split,
                     "source": "phone" if i % 3 == 0 else "web", "meta": None,
                     "content_hash": f"{(i * 0x9E3779B97F4A7C15) % (1 << 160):040x}", "readable": ok,
                     "error": None if ok else "cannot identify image file", "width": 32 + i % 993 if ok else None,
                     "height": 32 + (i * 7) % 991 if ok else None, "format": "png" if ext == "png" else "jpeg",
                     "bytes": 2000 + (i * 37) % 400_000, "phash": f"{(i * 0x5851F42D4C957F2D) % (1 << 64):016x}"
                     if ok else None})
        given[sid] = classes[shown]
        ids.append(sid)
    return rows, given, truth, ids


def _review(catalog: Any, conn: Any, chosen: dict[str, str]) -> list[int]:
    """One ``label_issues`` relabel decision per sample with its human label, as the app's review writes them:
    through ``Catalog.record_decision`` (schema 5), or by the statements the app used before it (older code)."""
    if not chosen:
        return []
    if hasattr(catalog, "record_decision"):
        return [catalog.record_decision(conn, queue="label_issues", item=sid, action="relabel", sample_ids=[sid],
                                        effects={"labels": {sid: label}}, user="reviewer")
                for sid, label in chosen.items()]
    from curato.catalog.catalog import utcnow
    from curato.catalog.schema import decisions, labels

    now = utcnow()
    made = conn.execute(decisions.insert().returning(decisions.c.id, sort_by_parameter_order=True), [
        {"queue": "label_issues", "item": sid, "action": "relabel", "sample_ids": [sid],
         "effects": {"labels": {sid: label}}, "user": "reviewer", "source_run": None,
         "created_at": now} for sid, label in chosen.items()]).scalars().all()
    conn.execute(labels.insert(), [{"sample_id": sid, "label": label, "origin": "human", "annotator": "reviewer",
                                    "decision_id": did, "created_at": now}
                                   for (sid, label), did in zip(chosen.items(), made, strict=True)])
    return list(made)


def _undo(catalog: Any, conn: Any, decision_ids: list[int]) -> None:
    """Undo these decisions as the app does: ``Catalog.undo_decision`` (schema 5) or the older statements."""
    if hasattr(catalog, "undo_decision"):
        for did in decision_ids:
            catalog.undo_decision(conn, did, undone_by="admin")
        return
    from sqlalchemy import update

    from curato.catalog.catalog import utcnow
    from curato.catalog.schema import decisions, labels

    now = utcnow()
    for chunk in range(0, len(decision_ids), 900):
        part = decision_ids[chunk:chunk + 900]
        conn.execute(update(decisions).where(decisions.c.id.in_(part)).values(undone_at=now, undone_by="admin"))
        conn.execute(update(labels).where(labels.c.decision_id.in_(part)).values(retracted_at=now))


def build(args: argparse.Namespace) -> dict[str, Any]:
    """The workspace of ``args.n`` samples, written chunk by chunk; returns seconds and rows per writer."""
    from curato.commands.labelling import add_user
    from curato.workspace import Workspace

    classes = class_names(args.classes)
    root = Path(args.root)
    if args.resume:  # a build stopped by kill -INT: continue after its last whole batch
        workspace = Workspace.open(root)
        first_batch = workspace.catalog.sample_count() // args.chunk * args.chunk
    else:
        if root.exists():
            sys.exit(f"{root} exists; remove it or choose another --root")
        db_url = None if args.db == "sqlite" else _fresh_database(args.db)
        workspace = Workspace.create(root, db_url=db_url)
        first_batch = 0
    catalog = workspace.catalog
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    rows_written: dict[str, int] = {}

    @contextmanager
    def timed(name: str, rows: int) -> Iterator[None]:
        started, cpu = time.perf_counter(), _cpu_seconds()
        yield
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        cpu_seconds[name] = cpu_seconds.get(name, 0.0) + _cpu_seconds() - cpu
        rows_written[name] = rows_written.get(name, 0) + rows

    def writers() -> dict[str, Any]:
        return {name: {"rows": rows_written[name], "seconds": seconds[name], "cpu_seconds": cpu_seconds[name],
                       "rows_per_s": rows_written[name] / seconds[name] if seconds[name] else None,
                       "rows_per_cpu_s": rows_written[name] / cpu_seconds[name] if cpu_seconds[name] else None}
                for name in seconds}

    started, started_cpu = time.perf_counter(), _cpu_seconds()
    undo_ids: list[int] = []
    stopped_at = None
    signal.signal(signal.SIGINT, _stop_requested)
    for start in range(first_batch, args.n, args.chunk):
        if _STOP:  # Ctrl-C / kill -INT: end after the last whole batch, report what was built
            stopped_at = start
            break
        stop = min(args.n, start + args.chunk)
        rows, given, truth, ids = chunk_rows(start, stop, classes)
        index = np.arange(start, stop)
        with catalog.transaction() as conn:
            with timed("upsert_samples", len(rows)):
                catalog.upsert_samples(conn, rows)
            with timed("sync_imported_labels", len(given)):
                catalog.sync_imported_labels(conn, given)
            # human labels: 3 % one annotator; 0.5 % two or three annotators, the third one often disagreeing
            by_annotator: dict[str, dict[str, str]] = {name: {} for name in ANNOTATORS}
            for k in np.flatnonzero(np.isin(index % 100, (5, 6, 7))).tolist():
                by_annotator[ANNOTATORS[int(index[k]) % 7]][ids[k]] = classes[int(truth[k])]
            for k in np.flatnonzero(index % 200 == 11).tolist():
                crowd = 3 if int(index[k]) % 400 == 11 else 2
                for a in range(crowd):
                    shown = int(truth[k]) if a < 2 or int(index[k]) % 3 else (int(truth[k]) + 2) % len(classes)
                    by_annotator[ANNOTATORS[a]][ids[k]] = classes[shown]
            for name, answers in by_annotator.items():
                with timed("add_labels human", len(answers)):
                    catalog.add_labels(conn, answers, origin="human", annotator=name)
            routed = {ids[k]: classes[int(truth[k])] for k in np.flatnonzero(index % 50 == 13).tolist()}
            with timed("add_labels model", len(routed)):
                catalog.add_labels(conn, routed, origin="model", annotator="route-run-2",
                                   confidence=dict.fromkeys(routed, 0.97))
            retracted = {ids[k]: classes[0] for k in np.flatnonzero(index % 50 == 29).tolist()}
            with timed("add_labels model", len(retracted)):
                catalog.add_labels(conn, retracted, origin="model", annotator="route-run-1",
                                   confidence=dict.fromkeys(retracted, 0.9))
            # review decisions (0.2 %): the decision row and its human label, as the app writes them
            reviewed = np.flatnonzero(index % 500 == 17).tolist()
            chosen = {ids[k]: classes[(int(truth[k]) + 3) % len(classes)] for k in reviewed}
            with timed("review decisions", len(chosen)):
                made = _review(catalog, conn, chosen)
            undo_ids.extend(did for k, did in zip(reviewed, made, strict=True) if int(index[k]) % 5000 == 17)
        if args.progress:
            rates = ", ".join(f"{name} {rows_written[name] / seconds[name]:,.0f}" for name in
                              ("upsert_samples", "sync_imported_labels", "add_labels human", "add_labels model",
                               "review decisions") if seconds.get(name))
            print(f"  {stop:,} samples, {time.perf_counter() - started:.0f} s, "
                  f"{_cpu_seconds() - started_cpu:.0f} s CPU, "
                  f"load {os.getloadavg()[0]:.1f} (rows/s: {rates})", flush=True)
    if stopped_at is not None:
        return {"n": stopped_at, "stopped_at": stopped_at, "db": catalog.engine.dialect.name, "root": str(root),
                "build_seconds": time.perf_counter() - started, "build_cpu_seconds": _cpu_seconds() - started_cpu,
                "writers": writers(), "peak_rss_mb": _peak_mb()}
    with catalog.transaction() as conn:  # undo a tenth of the reviews; retract one routing run
        with timed("undo decisions", len(undo_ids)):
            _undo(catalog, conn, undo_ids)
        with timed("retract_model_labels", 0):
            catalog.retract_model_labels(conn, "route-run-1")
    # re-import: the dataset's next release corrects the 1 % wrong labels
    for start in range(0, args.n, args.chunk):
        stop = min(args.n, start + args.chunk)
        _, given, truth, ids = chunk_rows(start, stop, classes)
        fixed = {sid: classes[int(t)] for sid, t, i in zip(ids, truth.tolist(), range(start, stop), strict=True)
                 if i % 100 == 3}
        with catalog.transaction() as conn, timed("sync_imported_labels re-import", len(fixed)):
            catalog.sync_imported_labels(conn, fixed)
    run_id = catalog.start_run("select", "benchmark", {})
    first = chunk_rows(0, min(args.n, 10_000), classes)[3]
    with catalog.transaction() as conn:
        catalog.queue_batch(conn, run_id, "margin", [{"sample_id": sid, "rank": r + 1, "score": 0.5}
                                                     for r, sid in enumerate(first)])
    catalog.finish_run(run_id, "done", {})
    add_user(workspace, "bench-annotator", "annotator")
    total = time.perf_counter() - started
    return {"n": args.n, "db": catalog.engine.dialect.name, "root": str(root), "build_seconds": total,
            "build_cpu_seconds": _cpu_seconds() - started_cpu, "writers": writers(), "peak_rss_mb": _peak_mb(),
            "load_average": os.getloadavg()}


_STOP = False


def _stop_requested(*_: Any) -> None:
    global _STOP
    _STOP = True


def _fresh_database(url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"scale{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _queries() -> dict[str, Callable[[Any], Any]]:
    """name -> work on an open Workspace (the app's calls as the server makes them)."""
    from curato.commands import labelling
    from curato.commands.info import workspace_overview

    def annotator(workspace: Any) -> Any:
        from sqlalchemy import select

        from curato.catalog.schema import users
        with workspace.catalog.engine.connect() as conn:
            row = conn.execute(select(users.c.id, users.c.name, users.c.role)
                               .where(users.c.name == "bench-annotator")).first()
        return labelling.User(int(row[0]), row[1], row[2])

    def next_item(workspace: Any) -> Any:
        user, settings = annotator(workspace), labelling.read_app_settings(workspace)
        first = labelling.next_item(workspace, user, settings)
        labelling.submit_label(workspace, user, first["assignment"], "skip", settings=settings)
        started = time.perf_counter()  # the one timed: a fresh item (no own unfinished one)
        labelling.next_item(workspace, user, settings)
        return time.perf_counter() - started

    def remaining(workspace: Any) -> Any:
        settings = labelling.read_app_settings(workspace)
        with workspace.catalog.engine.connect() as conn:
            return labelling.remaining_items(conn, settings)

    def status_after_answer(workspace: Any) -> Any:
        """/api/status right after a new answer: the multi-annotator aggregates are due for a refit."""
        catalog = workspace.catalog
        with catalog.transaction() as conn:  # sample 0: an imported label only
            catalog.add_labels(conn, {"train/class0000/00000000.jpg": "class0001"}, origin="human",
                               annotator="late-annotator")
        started = time.perf_counter()
        labelling.app_status(workspace)
        return time.perf_counter() - started

    def problems(workspace: Any) -> Any:
        check = getattr(workspace.catalog, "curated_label_problems", None)
        return None if check is None else len(check())

    def label_write_and_read(workspace: Any) -> Any:
        """One routed model label written (its own transaction, as `curato route` or the app writes one), then
        that sample's curated label read back: the per-write cost at this size."""
        catalog, sample = workspace.catalog, "train/class0000/00000000.jpg"
        started = time.perf_counter()
        with catalog.transaction() as conn:
            catalog.add_labels(conn, {sample: "class0002"}, origin="model", annotator="bench-route")
        found = catalog.curated_labels([sample])[sample]
        assert found.label == "class0002" or found.origin == "human", found
        return time.perf_counter() - started

    def count_problems(workspace: Any) -> Any:
        check = getattr(workspace.catalog, "count_problems", None)
        return None if check is None else len(check())

    def info_after_changes(workspace: Any) -> Any:
        """1,000 files changed (a re-ingest writes their new hashes), then ``info``: the stale count moves."""
        catalog = workspace.catalog
        columns = ("sample_id", "kind", "uri", "split", "source", "readable", "content_hash")
        rows = [dict(zip(columns, row, strict=True)) for row in next(catalog.samples_in_order(columns, batch=1000))]
        with catalog.transaction() as conn:
            catalog.upsert_samples(conn, [{**row, "readable": bool(row["readable"]), "content_hash":
                                           f"{uuid.uuid4().hex}{row['content_hash'][:8]}"} for row in rows])
        started = time.perf_counter()
        workspace_overview(workspace)
        return time.perf_counter() - started

    def property_table_after_relabels(workspace: Any) -> Any:
        """1,000 samples relabelled by a person, then the report's property table (after a first report stored
        its per-label sums, only the logged changes are read); timed: the table alone (the refit of the
        multi-annotator aggregates that new answers make due is paid first, by any read: "first read")."""
        catalog = workspace.catalog
        ids = [row[0] for row in next(catalog.samples_in_order(("sample_id",), batch=1000))]
        with catalog.transaction() as conn:
            # another class each run (a repeated run relabels the same samples: the same label would change nothing)
            label = f"class{int(time.time()) % 99 + 1:04d}"
            catalog.add_labels(conn, dict.fromkeys(ids, label), origin="human", annotator="bench-relabel")
        catalog.curated_label_counts(None)
        started = time.perf_counter()
        _report_part("_property_table")(workspace)
        return time.perf_counter() - started

    def report(workspace: Any) -> Any:
        """The HTML report of an audit document flagging 1,000 samples (their files do not exist here: no
        thumbnails are drawn, the catalog reads are what is measured)."""
        from curato.commands.info import write_report

        flagged = [{"sample_id": chunk_rows(i, i + 1, class_names(100))[3][0], "score": 0.5}
                   for i in range(17, 10_000_000, 9_973)][:1000]
        known = set(workspace.catalog.samples_of([row["sample_id"] for row in flagged], ("split",))) \
            if hasattr(workspace.catalog, "samples_of") else {row["sample_id"] for row in flagged}
        document = {"version": 1, "workspace": str(workspace.root), "checks": [
            {"check": "label_issues", "severity": "medium", "message": "benchmark", "summary": {},
             "issues": [row for row in flagged if row["sample_id"] in known]}]}
        path = write_report(workspace, [], Path(workspace.root) / "reports" / "bench.html", audit_document=document)
        return path.stat().st_size

    return {
        "first read (refit if due)": lambda ws: ws.catalog.curated_label_counts(None),
        "info (workspace_overview)": workspace_overview,
        "curated_labels": lambda ws: len(ws.catalog.curated_labels()),
        "group_counts(split)": lambda ws: ws.catalog.group_counts("split"),
        "sample_count": lambda ws: ws.catalog.sample_count(),
        "app: next_item": next_item,
        "app: app_status": lambda ws: labelling.app_status(ws),
        "app: class_names": lambda ws: len(labelling.class_names(ws)),
        "app: remaining_items": remaining,
        "app: app_status after a new answer": status_after_answer,
        "label write + curated read": label_write_and_read,
        "report: every sample uri": lambda ws: len(ws.catalog.samples(("sample_id", "uri"))["sample_id"]),
        "info with a feature set (first count)": workspace_overview,
        "info with a feature set (counted)": workspace_overview,
        "info after 1000 files changed": info_after_changes,
        "report (1000 flagged samples)": report,
        "report: examples per class": lambda ws: len(_report_part("_examples")(ws, 8)),
        "report: property table": lambda ws: len((_report_part("_property_table")(ws) or {}).get("rows", {})),
        "report: property table after 1000 relabels": property_table_after_relabels,
        "count_problems (curato check)": count_problems,
        "curated_label_problems (curato check)": problems,
    }


def _report_part(name: str) -> Callable[..., Any]:
    from curato.report import html

    return getattr(html, name)


def _measure(root: str, name: str, results: Any) -> None:
    from curato.workspace import Workspace

    workspace = Workspace.open(root)
    workspace.catalog.sample_count()  # open and migrate outside the timing
    cpu, started = _cpu_seconds(), time.perf_counter()
    value = _queries()[name](workspace)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    if name in ("app: next_item", "app: app_status after a new answer", "label write + curated read",
                "info after 1000 files changed", "report: property table after 1000 relabels"):
        seconds = float(value)
    results.put({"query": name, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _peak_mb(),
                 "value": value if isinstance(value, int) else None})


def _cpu_seconds() -> float:
    """CPU seconds of this process (user + system): on a loaded machine, steadier than wall time; a PostgreSQL
    server's own work is not in it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _open(root: str, results: Any) -> None:
    """Open the workspace (an older catalog is migrated here: schema 5 fills the curated-label table)."""
    from curato.workspace import Workspace

    started = time.perf_counter()
    Workspace.open(root).catalog.sample_count()
    results.put({"query": "open (migrations due)", "seconds": time.perf_counter() - started, "peak_rss_mb": _peak_mb()})


def database_bytes(root: str) -> int:
    """The catalog's size on disk: the SQLite file with its WAL, or the PostgreSQL database."""
    from sqlalchemy import func, select

    from curato.workspace import Workspace

    catalog = Workspace.open(root).catalog
    if catalog.path is not None:
        return sum(path.stat().st_size for path in catalog.path.parent.glob(catalog.path.name + "*"))
    with catalog.engine.connect() as conn:
        return int(conn.execute(select(func.pg_database_size(func.current_database()))).scalar())


FEATURE_SET = "bench-embedding"


def sorted_ids_and_hashes(catalog: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's id and content hash ("" where none), in id order, read 100k rows at a time."""
    count = catalog.sample_count()
    ids = np.empty(count, dtype="<U40")
    hashes = np.empty(count, dtype="<U40")
    at = 0
    for batch in catalog.samples_in_order(("sample_id", "content_hash"), batch=100_000):
        ids[at:at + len(batch)] = [sid for sid, _ in batch]
        hashes[at:at + len(batch)] = [digest or "" for _, digest in batch]
        at += len(batch)
    order = np.argsort(ids[:at], kind="stable")
    return ids[:at][order], hashes[:at][order]


def write_feature_set(root: str) -> dict[str, Any]:
    """A feature set over every sample, as `curato embed` leaves it (ids in order, each with the content hash it
    was computed from; 1 % of them computed from an older file, so stale), written straight in the store's layout
    (``curato.featurestore``): ``finalize`` would hold several copies of 10M ids. 1-d float16 vectors: the
    catalog's side of ``info`` is what is measured, not the vectors."""
    from curato.workspace import Workspace

    started = time.perf_counter()
    workspace = Workspace.open(root)
    ids, hashes = sorted_ids_and_hashes(workspace.catalog)
    at = len(ids)
    hashes[::100] = "0" * 40
    folder = workspace.features.folder(FEATURE_SET)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors-1.npy", np.zeros((at, 1), dtype=np.float16))
    np.save(folder / "hashes-1.npy", hashes)
    np.save(folder / "ids-1.npy", ids)
    (folder / "meta.json").write_text(json.dumps({"name": FEATURE_SET, "generation": 1, "dim": 1,
                                                  "dtype": "float16", "count": int(at), "modality": "image"}))
    return {"feature_set": FEATURE_SET, "vectors": int(at), "seconds": time.perf_counter() - started,
            "peak_rss_mb": _peak_mb()}


PROPERTY_COLUMNS = ("width", "height", "jpeg_quality", "brightness_mean", "contrast", "colourfulness", "sharpness",
                    "border_brightness", "edge_density")


def write_properties(root: str) -> dict[str, Any]:
    """An image-properties set over every sample, as ingest leaves it (ids sorted; float32 rows of the columns the
    report's per-class table shows, JPEG quality NaN for PNGs; values from the sample's index), written straight in
    the store's layout like :func:`write_feature_set`: the report's property table is then measured too."""
    from curato.featurestore import PROPERTIES
    from curato.workspace import Workspace

    started = time.perf_counter()
    workspace = Workspace.open(root)
    ids, hashes = sorted_ids_and_hashes(workspace.catalog)
    at = len(ids)
    index = np.array([int(sid.rsplit("/", 1)[1].split(".")[0]) for sid in ids.tolist()], dtype=np.int64)
    vectors = np.empty((at, len(PROPERTY_COLUMNS)), dtype=np.float32)
    for j in range(len(PROPERTY_COLUMNS)):
        vectors[:, j] = ((index * (2654435761 + 97 * j)) % 1000) / 1000.0
    vectors[:, 2] = np.where(np.char.endswith(ids, ".png"), np.nan, 50 + vectors[:, 2] * 50)
    folder = workspace.features.folder(PROPERTIES)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors-1.npy", vectors)
    np.save(folder / "hashes-1.npy", hashes)
    np.save(folder / "ids-1.npy", ids)
    (folder / "meta.json").write_text(json.dumps({"name": PROPERTIES, "generation": 1, "dim": len(PROPERTY_COLUMNS),
                                                  "dtype": "float32", "count": int(at), "modality": "image",
                                                  "columns": list(PROPERTY_COLUMNS)}))
    return {"feature_set": PROPERTIES, "vectors": int(at), "seconds": time.perf_counter() - started,
            "peak_rss_mb": _peak_mb()}


def query(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each query in its own forked process: wall time and peak RSS."""
    context = multiprocessing.get_context("fork")
    found = []
    skip = set(filter(None, (args.skip or "").split(",")))
    only = set(filter(None, (args.only or "").split(",")))
    for name in ["open (migrations due)", *_queries()]:
        if name in skip or (only and name not in only):
            continue
        results = context.Queue()
        process = context.Process(target=_open if name.startswith("open") else _measure,
                                  args=(args.root, results) if name.startswith("open") else (args.root, name, results))
        process.start()
        process.join()
        if process.exitcode != 0:
            found.append({"query": name, "seconds": None, "peak_rss_mb": None, "error": process.exitcode})
            continue
        entry = results.get()
        found.append(entry)
        cpu = f" {entry['cpu_seconds']:8.3f} s CPU" if entry.get("cpu_seconds") is not None else ""
        print(f"  {name:<28} {entry['seconds']:8.3f} s{cpu} {entry['peak_rss_mb']:8.0f} MB", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("build", "features", "properties", "query"))
    parser.add_argument("--root", required=True, help="workspace folder (build: must not exist)")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100, help="number of classes (10-1000)")
    parser.add_argument("--chunk", type=int, default=100_000, help="samples per write transaction")
    parser.add_argument("--db", default="sqlite", help="sqlite, or a PostgreSQL server URL (a fresh database)")
    parser.add_argument("--skip", default="", help="comma-separated query names to leave out")
    parser.add_argument("--only", default="", help="comma-separated query names to run (default: all)")
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    parser.add_argument("--json", help="append the results to this JSON-lines file")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--resume", action="store_true", help="build: continue a build stopped by kill -INT (the "
                        "decisions undone at the end are then only those of the resumed part)")
    args = parser.parse_args()
    if args.phase == "build":
        result = build(args)
        print(f"built {result['n']:,} samples ({result['db']}) in {result['build_seconds']:.0f} s "
              f"({result['build_cpu_seconds']:.0f} s CPU), peak {result['peak_rss_mb']:.0f} MB")
        for name, entry in result["writers"].items():
            rate = f"{entry['rows_per_s']:,.0f} rows/s" if entry["rows_per_s"] else "-"
            cpu_rate = f"{entry['rows_per_cpu_s']:,.0f} rows/CPU-s" if entry.get("rows_per_cpu_s") else "-"
            print(f"  {name:<32} {entry['rows']:>11,} rows {entry['seconds']:8.1f} s "
                  f"{entry['cpu_seconds']:8.1f} s CPU  "
                  f"{rate}  {cpu_rate}")
    elif args.phase in ("features", "properties"):
        result = (write_feature_set if args.phase == "features" else write_properties)(args.root)
        print(f"feature set {result['feature_set']}: {result['vectors']:,} vectors in {result['seconds']:.0f} s, "
              f"peak {result['peak_rss_mb']:.0f} MB")
    else:
        result = {"root": args.root, "queries": query(args), "database_bytes": database_bytes(args.root),
                  "load_average": os.getloadavg()}
        print(f"  catalog size {result['database_bytes'] / 1e9:.2f} GB")
    result["label"] = args.label
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"phase": args.phase, **result}) + "\n")


if __name__ == "__main__":
    main()
