"""The catalog's fast label queries give exactly what the row-by-row rule gave (issue 25, the catalog at 10M rows).

A catalog with every kind of label history -- imported and re-imported labels, one and several annotators (through
the labelling app's own calls, with an undo), an annotator answering twice, routed and retracted model labels,
review decisions and undone ones -- on Real Fashion-MNIST labels, on SQLite and PostgreSQL
(``CURATO_TEST_POSTGRES_URL``). ``reference_curated_labels`` is the rule as it was written before: every label row
read into Python in id order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, update

from curato.catalog.catalog import Catalog, CuratedLabel, utcnow
from curato.catalog.schema import LABELLING_QUEUE, decisions, labels, samples
from curato.commands import labelling
from curato.commands.info import workspace_overview
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.workspace import Workspace
from tests.test_label_server import _fresh_postgres

CLASSES = [name.replace("/", "-") for name in FASHION_MNIST_CLASSES]
SPLITS = ("train", "train", "train", "val", "test")


def reference_curated_labels(catalog: Catalog) -> dict[str, CuratedLabel]:
    """The label rule read row by row (curato before issue 25): the answer the fast queries must keep."""
    from curato.crowd import aggregate_labels

    with catalog.engine.connect() as conn:
        rows = conn.execute(select(labels.c.sample_id, labels.c.label, labels.c.origin, labels.c.annotator,
                                   labels.c.decision_id)
                            .where(labels.c.retracted_at.is_(None)).order_by(labels.c.id)).all()
        review_decisions = {row[0] for row in conn.execute(
            select(decisions.c.id).where(decisions.c.queue != LABELLING_QUEUE))}
    reviewed: dict[str, str] = {}
    answers: dict[tuple[str, str], str] = {}
    routed: dict[str, str] = {}
    imported: dict[str, str] = {}
    for sample_id, label, origin, annotator, decision_id in rows:
        if origin == "human":
            if decision_id is not None and decision_id in review_decisions:
                reviewed[sample_id] = label
            else:
                answers.pop((sample_id, annotator or ""), None)
                answers[sample_id, annotator or ""] = label
        elif origin == "model":
            routed[sample_id] = label
        else:
            imported[sample_id] = label
    result = {sid: CuratedLabel(label, "imported", "imported") for sid, label in imported.items()}
    result.update({sid: CuratedLabel(label, "model", "routed") for sid, label in routed.items()})
    if answers:
        keys = list(answers)
        per_sample = Counter(sid for sid, _ in keys)
        aggregated = aggregate_labels([sid for sid, _ in keys], [who for _, who in keys], list(answers.values()))
        result.update({sid: CuratedLabel(label, "human", "aggregated" if per_sample[sid] > 1 else "annotator")
                       for sid, label in aggregated.items()})
    result.update({sid: CuratedLabel(label, "human", "review") for sid, label in reviewed.items()})
    return result


def _review(conn, sample_id: str, label: str) -> int:
    """A review decision with its human label, written as the app's review writes them."""
    decision = int(conn.execute(decisions.insert().values(
        queue="label_issues", item=sample_id, action="relabel", sample_ids=[sample_id],
        effects={"labels": {sample_id: label}}, user="reviewer", created_at=utcnow())).inserted_primary_key[0])
    conn.execute(labels.insert().values(sample_id=sample_id, label=label, origin="human", annotator="reviewer",
                                        decision_id=decision, created_at=utcnow()))
    return decision


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path: Path, postgres_url, fashion_mnist) -> Workspace:
    """A workspace of 600 Fashion-MNIST labels with every kind of label history."""
    if request.param == "postgresql" and not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    db_url = _fresh_postgres(postgres_url) if request.param == "postgresql" else None
    workspace = Workspace.create(tmp_path / "ws", db_url=db_url)
    catalog = workspace.catalog
    truth = [CLASSES[int(k)] for k in fashion_mnist[1][:600]]
    ids = [f"{SPLITS[i % 5]}/{truth[i]}/{i:05d}.png" for i in range(600)]
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [{"sample_id": sid, "kind": "image", "uri": None, "split": SPLITS[i % 5],
                                       "source": "phone" if i % 3 else "web", "readable": i % 97 != 5}
                                      for i, sid in enumerate(ids)])
    given = {sid: truth[i] if i % 20 else CLASSES[(CLASSES.index(truth[i]) + 1) % 10]
             for i, sid in enumerate(ids) if i % 50 != 49}  # every 50th sample comes without a label
    for start in range(0, 600, 128):  # imported in batches, as ingest writes at scale
        with catalog.transaction() as conn:
            catalog.sync_imported_labels(conn, {sid: given[sid] for sid in ids[start:start + 128] if sid in given})
    with catalog.transaction() as conn:  # re-import: the wrong labels corrected, 3 more changed
        assert catalog.sync_imported_labels(conn, {**{sid: truth[i] for i, sid in enumerate(ids) if i % 20 == 0},
                                                   **{ids[i]: CLASSES[(CLASSES.index(truth[i]) + 2) % 10]
                                                      for i in (1, 2, 3)}, ids[4]: given[ids[4]]}) == 33
        for name in ("ann-a", "ann-b", None):  # single annotators, one without a name
            catalog.add_labels(conn, {ids[i]: truth[i] for i in range(5, 600, 31)[hash(name) % 2::2]},
                               origin="human", annotator=name)
        catalog.add_labels(conn, {ids[i]: CLASSES[(i * 7) % 10] for i in range(6, 600, 40)}, origin="human",
                           annotator="ann-c")  # a careless annotator overlapping ann-a/ann-b/None
        catalog.add_labels(conn, {ids[i]: truth[i] for i in range(6, 600, 80)}, origin="human",
                           annotator="ann-c")  # ... who corrects some answers later: the latest answer counts
        catalog.add_labels(conn, {ids[i]: CLASSES[(i * 3) % 10] for i in range(6, 600, 40)}, origin="human",
                           annotator="ann-d")
        catalog.add_labels(conn, {ids[i]: truth[i] for i in range(7, 600, 23)}, origin="model",
                           annotator="route-1", confidence={ids[i]: 0.97 for i in range(7, 600, 23)})
        catalog.add_labels(conn, {ids[i]: CLASSES[0] for i in range(8, 600, 29)}, origin="model",
                           annotator="route-2")
        catalog.retract_model_labels(conn, "route-2")
        catalog.add_labels(conn, {ids[49]: CLASSES[4]}, origin="model", annotator="route-1")  # no imported label
        undone = [_review(conn, ids[i], CLASSES[(i + 5) % 10]) for i in range(9, 600, 37)][::3]
        _review(conn, ids[9], CLASSES[1])  # a later review of the same sample wins
        now = utcnow()
        conn.execute(update(decisions).where(decisions.c.id.in_(undone)).values(undone_at=now, undone_by="admin"))
        conn.execute(update(labels).where(labels.c.decision_id.in_(undone)).values(retracted_at=now))
    run_id = catalog.start_run("select", "test", {})
    with catalog.transaction() as conn:
        catalog.queue_batch(conn, run_id, "margin", [{"sample_id": ids[i], "rank": r + 1}
                                                     for r, i in enumerate(range(10, 600, 41))])
    # the labelling app itself: two annotators per item, one answer undone
    labelling.write_app_settings(workspace, {"overlap": 2})
    settings = labelling.read_app_settings(workspace)
    for name in ("app-x", "app-y"):
        labelling.add_user(workspace, name, "annotator")
    with catalog.engine.connect() as conn:
        from curato.catalog.schema import users
        people = [labelling.User(int(row[0]), row[1], row[2]) for row in conn.execute(
            select(users.c.id, users.c.name, users.c.role).order_by(users.c.id))]
    submitted = []
    for person in people:
        for _ in range(6):
            item = labelling.next_item(workspace, person, settings)
            label = CLASSES[(ids.index(item["sample_id"]) + (person.name == "app-y")) % 10]
            submitted.append(labelling.submit_label(workspace, person, item["assignment"], "label", label=label,
                                                    settings=settings, classes=CLASSES))
    labelling.undo_decision(workspace, people[0], submitted[0]["decision"])
    return workspace


def test_fast_label_queries_equal_the_row_by_row_rule(history: Workspace) -> None:
    catalog = history.catalog
    expected = reference_curated_labels(catalog)
    hows = Counter(value.how for value in expected.values())
    assert {"imported", "routed", "annotator", "aggregated", "review"} <= set(hows)  # every branch is exercised
    found = catalog.curated_labels()
    assert list(found.items()) == list(expected.items())  # same labels, same origins, same order
    with catalog.engine.connect() as conn:
        table = dict(iter(conn.execute(select(samples.c.sample_id, samples.c.split))))
        sources = dict(iter(conn.execute(select(samples.c.sample_id, samples.c.source))))
    by_split = Counter((value.label, value.origin, table[sid]) for sid, value in expected.items())
    assert catalog.curated_label_counts("split") == dict(by_split)
    assert catalog.curated_label_counts("source") == dict(
        Counter((value.label, value.origin, sources[sid]) for sid, value in expected.items()))
    assert catalog.curated_label_counts(None) == dict(
        Counter((value.label, value.origin, None) for value in expected.values()))
    overview = workspace_overview(history)
    rows: dict[str, Counter] = {}
    for (label, _, split), count in by_split.items():
        rows.setdefault(label, Counter())[split] += count
    assert overview["class_split"] == {"splits": ["test", "train", "val"],
                                       "rows": {label: dict(rows[label]) for label in sorted(rows)}}
    assert overview["unlabeled"] == 600 - len(expected) > 0
    assert overview["samples"] == 600 and overview["splits"] == {"test": 120, "train": 360, "val": 120}
    assert overview["unreadable"] == sorted((sid, None) for sid in table if int(sid[-9:-4]) % 97 == 5)


def test_sync_imported_labels_in_batches_writes_only_changes(history: Workspace) -> None:
    catalog = history.catalog
    with catalog.engine.connect() as conn:
        before = conn.execute(select(labels.c.sample_id, labels.c.label).where(labels.c.origin == "imported")
                              .order_by(labels.c.id)).all()
    latest = dict(before)
    with catalog.transaction() as conn:  # the same labels again, then one change
        assert catalog.sync_imported_labels(conn, latest) == 0
        changed = next(iter(latest))
        assert catalog.sync_imported_labels(conn, {changed: "Bag" if latest[changed] != "Bag" else "Coat"}) == 1
