"""The stored curated labels equal the row-by-row rule after every kind of label write (issue 25, the catalog at
10M rows).

A catalog with every kind of label history -- imported and re-imported labels, one and several annotators (through
the labelling app's own calls, with an undo), an annotator answering twice, routed and retracted model labels,
review decisions and undone ones, samples moved between splits by a decision, its undo and a re-ingest -- on real
Fashion-MNIST labels, on SQLite and PostgreSQL (``CURATO_TEST_POSTGRES_URL``). ``reference_curated_labels`` is
the rule as it was written before: every label row read into Python in id order. After each kind of write the
``curated_labels`` table (what ``info``, the report and the app's status count) must equal it, split included.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import delete, event, func, insert, make_url, select, text, update

from curato.catalog import catalog as catalog_module
from curato.catalog import migrate
from curato.catalog.catalog import ANSWERS_TOKEN, FITTED_TOKEN, Catalog, CuratedLabel, aggregate_answers
from curato.catalog.schema import (
    LABELLING_QUEUE,
    curated_counts,
    curated_labels,
    decisions,
    hash_changes,
    info,
    labels,
    sample_counts,
    samples,
    users,
)
from curato.commands import labelling
from curato.commands.info import check_workspace, workspace_overview
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.workspace import Workspace
from tests.test_label_server import _fresh_postgres

CLASSES = [name.replace("/", "-") for name in FASHION_MNIST_CLASSES]
SPLITS = ("train", "train", "train", "val", "test")


def reference_curated_labels(catalog: Catalog) -> dict[str, CuratedLabel]:
    """The label rule read row by row (curato before issue 25): the answer the fast queries must keep. Its
    Dawid-Skene fit is :func:`aggregate_answers`, which remembers the fits of the last few answer sets (the same
    answers give the same aggregate): the history is checked after every write, and a fit costs seconds."""
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
        aggregated = aggregate_answers([sid for sid, _ in keys], [who for _, who in keys], list(answers.values()))
        result.update({sid: CuratedLabel(label, "human", "aggregated" if per_sample[sid] > 1 else "annotator")
                       for sid, label in aggregated.items()})
    result.update({sid: CuratedLabel(label, "human", "review") for sid, label in reviewed.items()})
    return result


def _stored(catalog: Catalog) -> dict[str, tuple]:
    """The curated_labels table as stored (no refit applied): sample_id -> (label, origin, how, split)."""
    with catalog.engine.connect() as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(select(curated_labels))}


def _expected_rows(catalog: Catalog) -> dict[str, tuple]:
    with catalog.engine.connect() as conn:
        splits = dict(iter(conn.execute(select(samples.c.sample_id, samples.c.split))))
    return {sid: (value.label, value.origin, value.how, splits[sid])
            for sid, value in reference_curated_labels(catalog).items()}


def _agrees(catalog: Catalog, step: str) -> None:
    """After ``step``: what the catalog answers, what it checks and what it stores all equal the old rule."""
    expected = reference_curated_labels(catalog)
    found = catalog.curated_labels()
    assert found == expected, step
    assert catalog.curated_label_problems() == [], step
    assert _stored(catalog) == _expected_rows(catalog), step  # the read stored any refit it made
    assert catalog.count_problems() == [], step  # the trigger-kept counts equal a recount
    if found:
        some = sorted(found)[::7]
        assert catalog.curated_labels(some) == {sid: found[sid] for sid in some}, step


def _review(catalog: Catalog, conn, sample_id: str, label: str) -> int:
    """A review decision with its human label, as the app's review writes it."""
    return catalog.record_decision(conn, queue="label_issues", item=sample_id, action="relabel",
                                   sample_ids=[sample_id], effects={"labels": {sample_id: label},
                                                                    "include": [sample_id]}, user="reviewer")


def _tokens(catalog: Catalog) -> dict[str, str]:
    with catalog.engine.connect() as conn:
        return dict(iter(conn.execute(select(info.c.key, info.c.value)
                                      .where(info.c.key.in_((ANSWERS_TOKEN, FITTED_TOKEN))))))


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def history(request, tmp_path_factory, postgres_url, fashion_mnist) -> Iterator[Workspace]:
    """A workspace of 600 Fashion-MNIST labels with every kind of label history, checked after each kind. Built
    once per database: the tests below may add to it, and each takes its expectations from the history as it is."""
    if request.param == "postgresql" and not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    with pytest.MonkeyPatch.context() as patch:
        # PostgreSQL writes of 100 rows and more go by COPY here: the 600-sample upsert and the batches of 128
        # labels take that way, the smaller writes the multi-row statements
        patch.setattr(catalog_module, "PG_COPY_ROWS", 100)
        yield _history(request, tmp_path_factory, postgres_url, fashion_mnist)


def _history(request, tmp_path_factory, postgres_url, fashion_mnist) -> Workspace:
    db_url = _fresh_postgres(postgres_url) if request.param == "postgresql" else None
    workspace = Workspace.create(tmp_path_factory.mktemp("history") / "ws", db_url=db_url)
    catalog = workspace.catalog
    truth = [CLASSES[int(k)] for k in fashion_mnist[1][:600]]
    ids = [f"{SPLITS[i % 5]}/{truth[i]}/{i:05d}.png" for i in range(600)]
    rows = [{"sample_id": sid, "kind": "image", "uri": None, "split": SPLITS[i % 5],
             "source": "phone" if i % 3 else "web", "readable": i % 97 != 5} for i, sid in enumerate(ids)]
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, rows)
    given = {sid: truth[i] if i % 20 else CLASSES[(CLASSES.index(truth[i]) + 1) % 10]
             for i, sid in enumerate(ids) if i % 50 != 49}  # every 50th sample comes without a label
    for start in range(0, 600, 128):  # imported in batches, as ingest writes at scale
        with catalog.transaction() as conn:
            catalog.sync_imported_labels(conn, {sid: given[sid] for sid in ids[start:start + 128] if sid in given})
    _agrees(catalog, "first import")
    with catalog.transaction() as conn:  # re-import: the wrong labels corrected, 3 more changed
        assert catalog.sync_imported_labels(conn, {**{sid: truth[i] for i, sid in enumerate(ids) if i % 20 == 0},
                                                   **{ids[i]: CLASSES[(CLASSES.index(truth[i]) + 2) % 10]
                                                      for i in (1, 2, 3)}, ids[4]: given[ids[4]]}) == 33
    _agrees(catalog, "re-import with changed labels")
    with catalog.transaction() as conn:
        for name in ("ann-a", "ann-b", None):  # single annotators, one without a name
            catalog.add_labels(conn, {ids[i]: truth[i] for i in range(5, 600, 31)[hash(name) % 2::2]},
                               origin="human", annotator=name)
    _agrees(catalog, "single annotators")
    with catalog.transaction() as conn:
        catalog.add_labels(conn, {ids[i]: CLASSES[(i * 7) % 10] for i in range(6, 600, 40)}, origin="human",
                           annotator="ann-c")  # a careless annotator overlapping ann-a/ann-b/None
        catalog.add_labels(conn, {ids[i]: truth[i] for i in range(6, 600, 80)}, origin="human",
                           annotator="ann-c")  # ... who corrects some answers later: the latest answer counts
        catalog.add_labels(conn, {ids[i]: CLASSES[(i * 3) % 10] for i in range(6, 600, 40)}, origin="human",
                           annotator="ann-d")
    _agrees(catalog, "second and third annotators, answers corrected")
    with catalog.transaction() as conn:
        catalog.add_labels(conn, {ids[i]: truth[i] for i in range(7, 600, 23)}, origin="model",
                           annotator="route-1", confidence={ids[i]: 0.97 for i in range(7, 600, 23)})
        catalog.add_labels(conn, {ids[i]: CLASSES[0] for i in range(8, 600, 29)}, origin="model",
                           annotator="route-2")
    _agrees(catalog, "routed model labels")
    with catalog.transaction() as conn:
        catalog.retract_model_labels(conn, "route-2")
        catalog.add_labels(conn, {ids[49]: CLASSES[4]}, origin="model", annotator="route-1")  # no imported label
    _agrees(catalog, "retracted model labels")
    with catalog.transaction() as conn:
        reviews = [_review(catalog, conn, ids[i], CLASSES[(i + 5) % 10]) for i in range(9, 600, 37)]
        reviews.append(_review(catalog, conn, ids[6], CLASSES[1]))  # a review over several annotators
        _review(catalog, conn, ids[9], CLASSES[1])  # a later review of the same sample wins
    _agrees(catalog, "reviews")
    with catalog.transaction() as conn:
        for decision in [*reviews[::3], reviews[-1]]:
            catalog.undo_decision(conn, decision, undone_by="admin")
    _agrees(catalog, "undone reviews (one sample back to its aggregate)")
    with catalog.transaction() as conn:  # a review moves two samples to test; one move is undone
        moved = [catalog.record_decision(conn, queue="split_leakage", item=f"group:{ids[i]}", action="move_split",
                                         sample_ids=[ids[i]], effects={"splits": {ids[i]: [SPLITS[i % 5], "test"]},
                                                                       "include": [ids[i]]}, user="reviewer")
                 for i in (6, 10)]
    _agrees(catalog, "split moves")
    with catalog.transaction() as conn:
        catalog.undo_decision(conn, moved[0], undone_by="reviewer")
    _agrees(catalog, "an undone split move")
    with catalog.transaction() as conn:  # a re-ingest files three samples under another split
        catalog.upsert_samples(conn, [{**rows[i], "split": "val"} for i in (0, 5, 7)])
    _agrees(catalog, "a re-ingest moving samples")
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
        people = [labelling.User(int(row[0]), row[1], row[2]) for row in conn.execute(
            select(users.c.id, users.c.name, users.c.role).order_by(users.c.id))]
    submitted = []
    for person in people:
        for _ in range(6):
            item = labelling.next_item(workspace, person, settings)
            label = CLASSES[(ids.index(item["sample_id"]) + (person.name == "app-y")) % 10]
            submitted.append(labelling.submit_label(workspace, person, item["assignment"], "label", label=label,
                                                    settings=settings, classes=CLASSES))
    _agrees(catalog, "the labelling app's answers")
    labelling.undo_decision(workspace, people[0], submitted[0]["decision"])
    _agrees(catalog, "an undone answer in the app")
    return workspace


def test_stored_labels_and_counts_equal_the_row_by_row_rule(history: Workspace) -> None:
    catalog = history.catalog
    expected = reference_curated_labels(catalog)
    hows = Counter(value.how for value in expected.values())
    assert {"imported", "routed", "annotator", "aggregated", "review"} <= set(hows)  # every branch is exercised
    assert catalog.curated_labels() == expected
    with catalog.engine.connect() as conn:
        table = dict(iter(conn.execute(select(samples.c.sample_id, samples.c.split))))
        sources = dict(iter(conn.execute(select(samples.c.sample_id, samples.c.source))))
    assert Counter(table.values()) == {"train": 356, "val": 123, "test": 121}  # the moves happened
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
    assert overview["samples"] == 600 and overview["splits"] == {"test": 121, "train": 356, "val": 123}
    assert overview["unreadable"] == sorted((sid, None) for sid in table if int(sid[-9:-4]) % 97 == 5)
    status = labelling.app_status(history)["labels"]
    assert status == dict(Counter(value.origin for value in expected.values()))


def test_a_new_answer_refits_the_aggregates_once_for_every_reader(history: Workspace) -> None:
    catalog = history.catalog
    multi = sorted(sid for sid, value in catalog.curated_labels().items() if value.how == "aggregated")
    single = min(sid for sid, value in catalog.curated_labels().items() if value.origin == "imported")
    assert len(multi) >= 10 and _tokens(catalog)[ANSWERS_TOKEN] == _tokens(catalog)[FITTED_TOKEN]
    with catalog.transaction() as conn:  # one more answer on an unrelated sample: Dawid-Skene's input changed
        catalog.add_labels(conn, {single: CLASSES[3]}, origin="human", annotator="ann-c")
    tokens = _tokens(catalog)
    assert tokens[ANSWERS_TOKEN] != tokens[FITTED_TOKEN]  # due, not fitted inside the write
    other = Catalog(catalog.url, root=history.root)  # another process reading the catalog
    counts = other.curated_label_counts(None)
    assert _tokens(catalog)[ANSWERS_TOKEN] == _tokens(catalog)[FITTED_TOKEN] == tokens[ANSWERS_TOKEN]
    assert counts == dict(Counter((v.label, v.origin, None) for v in reference_curated_labels(catalog).values()))
    assert _stored(catalog) == _expected_rows(catalog)
    other.close()


def test_concurrent_answers_on_one_sample_both_count(history: Workspace) -> None:
    """Two annotators' answers to one sample in overlapping transactions: the second waits for the first's commit
    (SQLite's write lock, PostgreSQL's curated-rows lock), so its curated row counts both answers."""
    import threading

    catalog = history.catalog
    sample = max(sid for sid, value in catalog.curated_labels().items() if value.origin == "imported")
    other = Catalog(catalog.url, root=history.root)
    finished = threading.Event()

    def second() -> None:
        with other.transaction() as conn:
            other.add_labels(conn, {sample: CLASSES[2]}, origin="human", annotator="late-b")
        finished.set()

    with catalog.transaction() as conn:
        catalog.add_labels(conn, {sample: CLASSES[1]}, origin="human", annotator="late-a")
        thread = threading.Thread(target=second)
        thread.start()
        assert not finished.wait(1.0)  # waiting for this transaction
    thread.join(60)
    assert finished.is_set()
    assert _stored(catalog)[sample][1:3] == ("human", "aggregated")
    _agrees(catalog, "concurrent answers")
    other.close()


def test_a_split_move_beside_a_label_write_keeps_the_new_split(history: Workspace) -> None:
    """A decision moving a sample to another split while a model label for it is written in an overlapping
    transaction: the label write waits for the move's commit (the curated-rows lock), so it cannot copy the old
    split back into the curated row."""
    import threading

    from curato.catalog.catalog import _move_split, utcnow

    catalog = history.catalog
    sample = min(sid for sid, value in catalog.curated_labels().items() if value.origin == "imported")
    before = _stored(catalog)[sample][3]
    target = "test" if before != "test" else "train"
    other = Catalog(catalog.url, root=history.root)
    finished = threading.Event()

    def label_write() -> None:
        with other.transaction() as conn:
            other.add_labels(conn, {sample: CLASSES[3]}, origin="model")
        finished.set()

    with catalog.transaction() as conn:
        _move_split(conn, sample, target, utcnow())
        thread = threading.Thread(target=label_write)
        thread.start()
        assert not finished.wait(1.0)  # waiting for the move
    thread.join(60)
    assert finished.is_set()
    assert _stored(catalog)[sample][3] == target
    _agrees(catalog, "split move beside a label write")
    with catalog.transaction() as conn:
        _move_split(conn, sample, before, utcnow())
    other.close()


def test_check_finds_a_stale_table_and_the_rebuild_repairs_it(history: Workspace) -> None:
    catalog = history.catalog
    expected = _expected_rows(catalog)
    changed, removed = sorted(expected)[3], sorted(expected)[4]
    unlabelled = sorted(set(_splits(catalog)) - set(expected))[0]
    with catalog.transaction() as conn:  # what a write behind the Catalog's back would leave
        conn.execute(update(curated_labels).where(curated_labels.c.sample_id == changed).values(label="Bag-x"))
        conn.execute(delete(curated_labels).where(curated_labels.c.sample_id == removed))
        conn.execute(insert(curated_labels).values(sample_id=unlabelled, label="Coat", origin="human",
                                                   how="annotator", split="train"))
    assert catalog.curated_label_problems() == sorted([
        {"sample_id": changed, "stored": ["Bag-x", *expected[changed][1:]], "expected": list(expected[changed])},
        {"sample_id": removed, "stored": None, "expected": list(expected[removed])},
        {"sample_id": unlabelled, "stored": ["Coat", "human", "annotator", "train"], "expected": None},
    ], key=lambda problem: problem["sample_id"])
    found = check_workspace(history)
    assert any("curated labels of 3 sample(s)" in entry["what"] and "rebuild_curated_labels" in entry["fix"]
               for entry in found.problems)
    assert catalog.rebuild_curated_labels() == len(expected)
    assert catalog.curated_label_problems() == [] and _stored(catalog) == expected
    assert not any("curated labels" in entry["what"] for entry in check_workspace(history).problems)


def test_migration_0005_fills_the_table_by_the_rule(history: Workspace) -> None:
    catalog = history.catalog
    expected = _expected_rows(catalog)
    with catalog.transaction() as conn:  # the same history in a schema-4 catalog
        conn.execute(text("DROP TABLE curated_labels"))
        conn.execute(update(info).where(info.c.key == "schema_version").values(value="4"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
        conn.execute(delete(info).where(info.c.key.in_((ANSWERS_TOKEN, FITTED_TOKEN))))
    reopened = Catalog(catalog.url, root=history.root)
    reopened.verify()
    assert migrate.current_revision(reopened.engine) == migrate.HEAD
    assert _stored(reopened) == expected and reopened.curated_label_problems() == []
    assert reopened.count_problems() == []  # 0006 re-created the triggers of the re-created table and recounted
    with reopened.transaction() as conn:  # ... which follow the next write
        reopened.add_labels(conn, {sorted(expected)[0]: "Coat"}, origin="model", annotator="after-0005")
    assert reopened.count_problems() == []
    reopened.close()


def _splits(catalog: Catalog) -> dict[str, str]:
    with catalog.engine.connect() as conn:
        return dict(iter(conn.execute(select(samples.c.sample_id, samples.c.split))))


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
    _agrees(catalog, "a re-import changing one label")


def _recount(catalog: Catalog) -> tuple[Counter, Counter]:
    """Samples per (kind, split, source, format, readable) and curated rows per (label, origin, split), counted
    row by row in Python: what ``sample_counts`` and ``curated_counts`` must hold."""
    with catalog.engine.connect() as conn:
        by_sample = Counter((row[0], row[1], row[2], row[3], bool(row[4])) for row in conn.execute(
            select(samples.c.kind, samples.c.split, samples.c.source, samples.c.format, samples.c.readable)))
        by_label = Counter(tuple(row) for row in conn.execute(
            select(curated_labels.c.label, curated_labels.c.origin, curated_labels.c.split)))
    return by_sample, by_label


def _maintained(catalog: Catalog) -> tuple[Counter, Counter]:
    """What the count tables hold (combinations at zero left out)."""
    with catalog.engine.connect() as conn:
        by_sample = Counter({(row[0], row[1], row[2], row[3], bool(row[4])): int(row[5]) for row in conn.execute(
            select(sample_counts.c.kind, sample_counts.c.split, sample_counts.c.source, sample_counts.c.format,
                   sample_counts.c.readable, sample_counts.c.n).where(sample_counts.c.n != 0))})
        by_label = Counter({tuple(row[:3]): int(row[3]) for row in conn.execute(
            select(curated_counts.c.label, curated_counts.c.origin, curated_counts.c.split, curated_counts.c.n)
            .where(curated_counts.c.n != 0))})
    return by_sample, by_label


def test_concurrent_writers_keep_the_maintained_counts_exact(history: Workspace) -> None:
    """An ingest of new samples (in a split no sample had: a new count row) and, in an overlapping transaction,
    a second ingest into the same new split with labels and a split move: the second waits for the first's commit
    (the curated-rows lock the sample writers take first), so neither loses the other's counts and no count row
    is made twice; a sample deleted by hand takes its curated label's count with it (cascade)."""
    import threading

    catalog = history.catalog
    assert _maintained(catalog) == _recount(catalog)
    other = Catalog(catalog.url, root=history.root)
    finished = threading.Event()
    first = [{"sample_id": f"holdout/a{i}.png", "kind": "image", "uri": None, "split": "holdout", "source": "late",
              "readable": True} for i in range(40)]
    second = [{**row, "sample_id": row["sample_id"].replace("/a", "/b"), "readable": i % 4 != 0}
              for i, row in enumerate(first)]

    def second_ingest() -> None:
        with other.transaction() as conn:
            other.upsert_samples(conn, second)
            other.sync_imported_labels(conn, {row["sample_id"]: CLASSES[i % 10] for i, row in enumerate(second)})
            other.record_decision(conn, queue="split_leakage", item="group:x", action="move_split",
                                  sample_ids=[second[0]["sample_id"]],
                                  effects={"splits": {second[0]["sample_id"]: ["holdout", "test"]}}, user="reviewer")
        finished.set()

    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, first)
        catalog.sync_imported_labels(conn, {row["sample_id"]: CLASSES[(i + 1) % 10] for i, row in enumerate(first)})
        thread = threading.Thread(target=second_ingest)
        thread.start()
        assert not finished.wait(1.0)  # waiting for this transaction
    thread.join(60)
    assert finished.is_set()
    assert catalog.group_counts("split")["holdout"] == 79 and catalog.group_counts("source")["late"] == 80
    assert catalog.sample_overview()["readable"]["image"] == sum(
        n for key, n in _recount(catalog)[0].items() if key[4])
    assert _maintained(catalog) == _recount(catalog) and catalog.count_problems() == []
    with catalog.transaction() as conn:  # by hand: the sample, its labels and its curated row go (cascades)
        conn.execute(delete(samples).where(samples.c.sample_id == first[1]["sample_id"]))
    assert catalog.group_counts("split")["holdout"] == 78
    assert _maintained(catalog) == _recount(catalog) and catalog.count_problems() == []
    _agrees(catalog, "concurrent ingests")
    other.close()


def test_check_finds_damaged_counts_and_the_recount_repairs_them(history: Workspace) -> None:
    catalog = history.catalog
    with catalog.transaction() as conn:  # what a write to the count tables by hand would leave
        conn.execute(update(sample_counts).where(sample_counts.c.split == "train").values(n=sample_counts.c.n + 5))
        conn.execute(delete(curated_counts).where(curated_counts.c.label == CLASSES[2]))
    problems = catalog.count_problems()
    assert len(problems) == 2 and problems[0].startswith("sample_counts disagrees with a recount of samples")
    assert problems[1].startswith("curated_counts disagrees with a recount of curated_labels")
    found = check_workspace(history)
    assert sum("disagrees with a recount" in entry["what"] and "rebuild_counts()" in entry["fix"]
               for entry in found.problems) == 2
    catalog.rebuild_counts()
    assert catalog.count_problems() == [] and _maintained(catalog) == _recount(catalog)
    assert not any("recount" in entry["what"] for entry in check_workspace(history).problems)


def test_migration_0006_counts_a_schema_5_catalog(history: Workspace) -> None:
    catalog = history.catalog
    expected = _recount(catalog)
    with catalog.transaction() as conn:  # the same catalog at schema 5: no count tables, no triggers
        for table, counts in (("samples", "sample_counts"), ("curated_labels", "curated_counts")):
            for event in ("insert", "update", "delete"):  # triggers belong to the counted tables: dropped apart
                on = f" ON {table}" if catalog.engine.dialect.name == "postgresql" else ""
                conn.execute(text(f"DROP TRIGGER {counts}_{event}{on}"))
            conn.execute(text(f"DROP TABLE {counts}"))
        conn.execute(update(info).where(info.c.key == "schema_version").values(value="5"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    reopened = Catalog(catalog.url, root=history.root)
    reopened.verify()
    assert migrate.current_revision(reopened.engine) == migrate.HEAD
    assert _maintained(reopened) == expected and reopened.count_problems() == []
    with reopened.transaction() as conn:
        reopened.upsert_samples(conn, [{"sample_id": "late/0.png", "kind": "image", "uri": None, "split": "val",
                                        "source": "late", "readable": True}])
        reopened.add_labels(conn, {"late/0.png": CLASSES[5]}, origin="human", annotator="ann-a")
    assert _maintained(reopened) == _recount(reopened) and reopened.count_problems() == []
    reopened.close()


def _stale_by_reading_everything(workspace: Workspace, name: str) -> tuple[int, int]:
    """(stale, present) as ``info`` counted them before schema 7: every sample's hash against every stored one."""
    with workspace.catalog.engine.connect() as conn:
        current = dict(iter(conn.execute(select(samples.c.sample_id, samples.c.content_hash))))
    stored = workspace.features.load(name)
    pairs = dict(zip(stored.ids.tolist(), stored.hashes.tolist(), strict=True))
    return (sum(1 for sid, digest in pairs.items() if sid in current and current[sid] != digest),
            sum(1 for sid in pairs if sid in current))


def _logged(catalog: Catalog) -> int:
    with catalog.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(hash_changes)).scalar())


def test_info_counts_stale_vectors_from_the_logged_hash_changes(history: Workspace) -> None:
    """``info``'s stale and missing vectors equal a comparison of every hash after each kind of change -- a
    changed file, a sample deleted by hand (its vector no longer counts), the same id ingested again, a new
    generation of the set -- while a later ``info`` reads only the logged changes, not every hash."""
    import numpy as np

    workspace, catalog = history, history.catalog
    columns = ("sample_id", "kind", "uri", "split", "source", "readable")
    with catalog.engine.connect() as conn:
        rows = {row[0]: dict(zip(columns, row, strict=True))
                for row in conn.execute(select(*(samples.c[name] for name in columns)))}
    ids = sorted(rows)[:300]
    logged_before = _logged(catalog)

    def rescanned(sid: str, digest: str) -> dict:  # the row a re-ingest writes for a file with this hash
        return {**rows[sid], "content_hash": digest}

    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [rescanned(sid, f"h{k}") for k, sid in enumerate(ids)])
    name = "bench-vectors"
    workspace.features.save(name, ids[:250], [f"h{k}" for k in range(250)], np.ones((250, 4)), {"modality": "image"})

    def overview() -> dict:
        (entry,) = [row for row in workspace_overview(workspace)["features"] if row["name"] == name]
        return entry

    def agrees(step: str) -> None:
        stale, present = _stale_by_reading_everything(workspace, name)
        entry = overview()
        assert entry["stale"] == stale, step
        readable = sum(count for kind, count in catalog.sample_overview()["readable"].items() if kind == "image")
        assert entry["missing"] == max(0, readable - present), step
        assert workspace.feature_staleness(workspace.features.load(name)) == (stale, present), step

    agrees("first count (every hash read once)")
    assert catalog.feature_count(name)["stale"] == 0
    with catalog.transaction() as conn:  # two files changed, one changed back, one sample outside the set
        catalog.upsert_samples(conn, [rescanned(ids[3], "changed"), rescanned(ids[4], "changed"),
                                      rescanned(ids[260], "changed")])
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [rescanned(ids[4], "h4")])
    agrees("hashes changed")
    assert workspace.feature_staleness(workspace.features.load(name))[0] == 1
    before = catalog.feature_count(name)["seq"]
    with catalog.transaction() as conn:  # deleted by hand (cascades), then ingested again with its old hash
        conn.execute(delete(samples).where(samples.c.sample_id.in_([ids[3], ids[5]])))
    agrees("samples deleted")
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [rescanned(ids[3], "h3")])
    agrees("a deleted sample ingested again")
    assert catalog.feature_count(name)["seq"] > before  # counted from the log, not recounted
    assert _logged(catalog) - logged_before == 300 + 4 + 2 + 1  # hashes set, changed, deleted, re-inserted
    with catalog.transaction() as conn:  # new samples and unchanged ones log nothing
        catalog.upsert_samples(conn, [{**rescanned(ids[0], "h0"), "sample_id": "new/0.png"}, rescanned(ids[1], "h1")])
    assert _logged(catalog) - logged_before == 307
    workspace.features.save(name, ids[250:280], ["x"] * 30, np.ones((30, 4)), {"modality": "image"})
    agrees("a new generation of the set")


def test_info_does_not_wait_for_a_writer_to_store_its_count(history: Workspace) -> None:
    """While an ingest holds SQLite's write lock, ``info`` counts the stale vectors and returns without storing
    the count (a reader is never made to wait 30 s for the lock); the next ``info`` stores it."""
    import sqlite3
    import time

    import numpy as np

    catalog = history.catalog
    if catalog.path is None:
        pytest.skip("SQLite's write lock")
    with catalog.engine.connect() as conn:
        ids = sorted(conn.execute(select(samples.c.sample_id)).scalars())[:40]
    name = "locked-vectors"
    history.features.save(name, ids, ["x"] * len(ids), np.ones((len(ids), 2)), {"modality": "image"})
    writer = sqlite3.connect(catalog.path)
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.perf_counter()
        (entry,) = [row for row in workspace_overview(history)["features"] if row["name"] == name]
        assert time.perf_counter() - started < 10
    finally:
        writer.rollback()
        writer.close()
    assert entry["stale"] == _stale_by_reading_everything(history, name)[0]
    assert catalog.feature_count(name) is None
    workspace_overview(history)
    assert catalog.feature_count(name)["stale"] == entry["stale"]


def test_info_runs_as_a_role_that_can_only_read(tmp_path, postgres_url) -> None:
    """``info`` as a PostgreSQL role with SELECT only (or on a read-only standby) counts the stale vectors and
    returns: storing the count fails and is skipped (the next ``info`` counts again)."""
    import json
    import uuid

    import numpy as np
    from sqlalchemy import create_engine

    if not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    url = _fresh_postgres(postgres_url)
    workspace = Workspace.create(tmp_path / "ws", db_url=url)
    rows = [{"sample_id": f"s{k}", "kind": "text", "uri": None, "text": "t", "split": "train", "source": "s",
             "content_hash": f"h{k}", "readable": True} for k in range(5)]
    with workspace.catalog.transaction() as conn:
        workspace.catalog.upsert_samples(conn, rows)
    workspace.features.save("v", [f"s{k}" for k in range(5)], ["h0", "h1", "old", "h3", "h4"], np.ones((5, 2)),
                            {"modality": "text"})
    role = f"ro{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    admin.dispose()
    workspace.catalog.close()
    marker = tmp_path / "ws" / "workspace.json"
    settings = json.loads(marker.read_text())
    settings["catalog"] = str(make_url(url).set(username=role, password=None).render_as_string(hide_password=False))
    marker.write_text(json.dumps(settings))
    reader = Workspace.open(tmp_path / "ws")
    for _ in range(2):
        (entry,) = workspace_overview(reader)["features"]
        assert entry["stale"] == 1
    assert reader.catalog.feature_count("v") is None
    reader.catalog.close()


def first_sample_rows(catalog, count: int) -> list[dict]:
    """The first ``count`` samples by id, with the columns a re-ingest writes back."""
    columns = ("sample_id", "kind", "uri", "split", "source", "readable")
    with catalog.engine.connect() as conn:
        rows = [dict(zip(columns, row, strict=True))
                for row in conn.execute(select(*(samples.c[name] for name in columns)))]
    return sorted(rows, key=lambda row: row["sample_id"])[:count]


def test_info_reads_every_hash_at_most_once(history: Workspace) -> None:
    """One ``info`` reads the catalog's hashes at most once, however many feature sets need counting (a new
    generation of each, as after an ingest); many logged changes are counted again (one read), few applied."""
    import numpy as np

    workspace, catalog = history, history.catalog
    rows = first_sample_rows(catalog, 200)
    ids = [row["sample_id"] for row in rows]
    for name in ("once-a", "once-b", "once-c"):
        workspace.features.save(name, ids, ["x"] * len(ids), np.ones((len(ids), 2)), {"modality": "image"})
    reads = []
    read_hashes = catalog.content_hashes
    catalog.content_hashes = lambda: reads.append(1) or read_hashes()  # type: ignore[method-assign]
    try:
        def staleness() -> dict[str, tuple[int, int]]:
            reads.clear()
            found = {row["name"]: row["stale"] for row in workspace_overview(workspace)["features"]
                     if row["name"].startswith("once-")}
            assert all(found[name] == _stale_by_reading_everything(workspace, name)[0] for name in found)
            return found

        assert staleness() == dict.fromkeys(("once-a", "once-b", "once-c"), 200) and len(reads) == 1
        assert staleness() and reads == []
        with catalog.transaction() as conn:  # a few changes: applied from the log
            catalog.upsert_samples(conn, [{**row, "content_hash": "x"} for row in rows[:3]])
        assert staleness() == dict.fromkeys(("once-a", "once-b", "once-c"), 197) and reads == []
        many = catalog.sample_count() // 10 + 1
        with catalog.transaction() as conn:  # more changes than a tenth of the catalog: counted again, once
            catalog.upsert_samples(conn, [{**row, "content_hash": f"y{k}"} for k, row in enumerate(rows[:many])])
        assert staleness() == dict.fromkeys(("once-a", "once-b", "once-c"), 200) and len(reads) == 1
        for name in ("once-a", "once-b", "once-c"):  # new generations, as an ingest writes
            workspace.features.save(name, ids, ["x"] * len(ids), np.ones((len(ids), 2)), {"modality": "image"})
        staleness()
        assert len(reads) == 1
    finally:
        del catalog.content_hashes


def test_a_sample_missing_before_the_first_count_is_seen_when_it_returns(history: Workspace) -> None:
    """A sample of a feature set deleted before anything was logged of it (e.g. before schema 7) is missing at
    the first count; when it is ingested again, with another hash, ``info`` counts its vector stale."""
    import numpy as np

    workspace, catalog = history, history.catalog
    rows = first_sample_rows(catalog, 4)
    gone = {**rows[0], "sample_id": "gone/0.png", "content_hash": "h-gone"}
    rows = [{**row, "content_hash": f"h-{k}"} for k, row in enumerate(rows)]
    with catalog.transaction() as conn:  # ingested, deleted by hand, and nothing logged of it (as before schema 7)
        catalog.upsert_samples(conn, [*rows, gone])
        conn.execute(delete(samples).where(samples.c.sample_id == "gone/0.png"))
        conn.execute(delete(hash_changes).where(hash_changes.c.sample_id == "gone/0.png"))
    name = "gone-vectors"
    ids = sorted([row["sample_id"] for row in rows] + ["gone/0.png"])
    hashes = {row["sample_id"]: row["content_hash"] for row in [*rows, gone]}
    workspace.features.save(name, ids, [hashes[sid] for sid in ids], np.ones((len(ids), 2)), {"modality": "image"})

    def stale() -> int:
        (entry,) = [row for row in workspace_overview(workspace)["features"] if row["name"] == name]
        assert entry["stale"] == _stale_by_reading_everything(workspace, name)[0]
        return entry["stale"]

    assert stale() == 0 and workspace.feature_staleness(workspace.features.load(name)) == (0, 4)
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [{**gone, "content_hash": "changed"}])
    assert stale() == 1 and workspace.feature_staleness(workspace.features.load(name)) == (1, 5)
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [gone])
    assert stale() == 0


def _walked_examples(catalog: Catalog, per_class: int, wanted: str = "image") -> dict[str, list[str]]:
    """The report's examples as it chose them before schema 8: every sample in the database's sample_id order,
    each readable sample of kind ``wanted`` taken for its label (by the row-by-row rule) until the label has
    ``per_class``."""
    expected = reference_curated_labels(catalog)
    chosen: dict[str, list[str]] = {}
    with catalog.engine.connect() as conn:
        for sid, kind, readable in conn.execute(select(samples.c.sample_id, samples.c.kind, samples.c.readable)
                                                .order_by(samples.c.sample_id)):
            if kind == wanted and readable and sid in expected:
                picked = chosen.setdefault(expected[sid].label, [])
                if len(picked) < per_class:
                    picked.append(sid)
    return dict(sorted(chosen.items()))


def test_examples_per_class_and_the_curated_snapshot_follow_the_rule(history: Workspace, monkeypatch) -> None:
    """``curated_examples`` (the report's examples, by index) equals the old walk over every sample, unreadable
    samples skipped; ``curated_snapshot`` yields every curated sample once under its label. Both also when a
    refit could not be stored (a read-only catalog): the refitted samples then count under their fitted label
    (the snapshot's reader applies ``unstored_label_moves``)."""
    catalog = history.catalog
    expected = reference_curated_labels(catalog)
    firsts = sorted({value.label: sid for sid, value in sorted(expected.items(), reverse=True)}.values())[:2]
    third = sorted({value.label for value in expected.values()})[2]
    texts = sorted(sid for sid, value in expected.items() if value.label == third)[:5]
    with catalog.transaction() as conn:  # two labels' first samples become unreadable: the examples skip them
        conn.execute(update(samples).where(samples.c.sample_id.in_(firsts)).values(readable=False))
        # and a third label's first five samples are texts: its image examples start after them
        conn.execute(update(samples).where(samples.c.sample_id.in_(texts)).values(kind="text"))
    for per_class in (3, 8, 1000):
        assert catalog.curated_examples(per_class) == _walked_examples(catalog, per_class), per_class
    texts_shown = catalog.curated_examples(8, kind="text")
    assert texts_shown == _walked_examples(catalog, 8, "text") and list(texts_shown) == [third], texts_shown
    assert not (set(firsts) | set(texts)) & {sid for ids in catalog.curated_examples(1000).values() for sid in ids}

    def batches() -> dict[str, str]:
        found: dict[str, str] = {}
        for _, ids, labels_of in catalog.curated_snapshot(batch=17):
            assert 0 < len(ids) <= 17 and not set(ids) & set(found)
            found.update(zip(ids, labels_of, strict=True))
        for sid, (old, new) in catalog.unstored_label_moves().items():
            assert found[sid] == old
            found[sid] = new
        return found

    assert batches() == {sid: value.label for sid, value in expected.items()}
    # answers that flip aggregated samples' labels; their refit is not stored (as on a read-only catalog)
    multi = sorted(sid for sid, value in catalog.curated_labels().items() if value.how == "aggregated")
    flipped = {sid: CLASSES[(CLASSES.index(catalog.curated_labels([sid])[sid].label) + 1) % 10] for sid in multi}
    with catalog.transaction() as conn:
        for name in ("flip-1", "flip-2", "flip-3", "flip-4"):
            catalog.add_labels(conn, flipped, origin="human", annotator=name)
    monkeypatch.setattr(catalog, "_aggregate_changes",
                        lambda persist=True: Catalog._aggregate_changes(catalog, persist=False))
    changes = catalog._aggregate_changes()
    assert changes  # stored labels the fit moves
    expected = reference_curated_labels(catalog)
    assert batches() == {sid: value.label for sid, value in expected.items()}
    for per_class in (3, 1000):
        assert catalog.curated_examples(per_class) == _walked_examples(catalog, per_class), per_class
    # the refitted samples joined to a label's examples in batches of ids (PostgreSQL binds at most 65,535
    # parameters per statement): a batch of 2 ids, fewer than the samples moving into some label
    arriving = Counter(new for _, new, _ in changes.values())
    assert max(arriving.values()) > 2, arriving
    monkeypatch.setattr("curato.catalog.catalog._id_batch", lambda conn: 2)
    for per_class in (1, 3, 1000):
        assert catalog.curated_examples(per_class) == _walked_examples(catalog, per_class), per_class
    monkeypatch.undo()
    _agrees(catalog, "answers flipping aggregates, refit stored by the next read")


def test_label_names_are_every_distinct_label_ever_written(history: Workspace) -> None:
    """``label_names`` (the app's class list, by skipping along ``ix_labels_label``) equals a DISTINCT over every
    label row: retracted labels and labels no sample carries any more included."""
    catalog = history.catalog
    sample = min(catalog.curated_labels())
    with catalog.transaction() as conn:  # a label that only a retracted routing run ever gave
        catalog.add_labels(conn, {sample: "Zebra-once"}, origin="model", annotator="route-gone")
        catalog.retract_model_labels(conn, "route-gone")
    with catalog.engine.connect() as conn:
        distinct = sorted(conn.execute(select(labels.c.label).distinct()).scalars())
    assert "Zebra-once" in distinct and "Zebra-once" not in {v.label for v in catalog.curated_labels().values()}
    assert catalog.label_names() == distinct and len(distinct) >= 11
    assert labelling.class_names(history) == [name for name in distinct if name]


def test_the_curated_snapshot_streams_from_the_server_on_postgresql(history: Workspace) -> None:
    """On PostgreSQL ``curated_snapshot`` reads through a server-side cursor, ``batch`` rows per fetch (psycopg's
    plain cursor would hold every row in the client at execute): while the reader holds a batch, the catalog's
    session is inside a FETCH of a declared cursor; the rows are every curated sample once."""
    catalog = history.catalog
    if catalog.engine.dialect.name != "postgresql":
        pytest.skip("server-side cursors: PostgreSQL only")
    expected = {sid: value.label for sid, value in reference_curated_labels(catalog).items()}
    found: dict[str, str] = {}
    seen_queries: set[str] = set()
    with catalog.engine.connect() as watcher:
        database = watcher.execute(text("SELECT current_database()")).scalar()
        for _, ids, labels_of in catalog.curated_snapshot(batch=17):
            assert 0 < len(ids) <= 17 and not set(ids) & set(found)
            found.update(zip(ids, labels_of, strict=True))
            seen_queries.update(watcher.execute(text(
                "SELECT query FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                " AND state = 'idle in transaction'"), {"db": database}).scalars())
            watcher.rollback()
    assert found == expected
    assert any(query.upper().startswith("FETCH FORWARD 17") for query in seen_queries), seen_queries


def _sums_by_reading_everything(catalog: Catalog, stored, columns: list[int]) -> dict[str, np.ndarray]:
    """Per curated label (by the row-by-row rule), the sums, counts and rows of ``stored``'s columns, directly."""
    labels_of = {sid: value.label for sid, value in reference_curated_labels(catalog).items()}
    values = np.asarray(stored.vectors, dtype=np.float64)[:, columns]
    found: dict[str, np.ndarray] = {}
    for sid, row in zip(stored.ids.tolist(), values, strict=True):
        if sid in labels_of:
            known = np.isfinite(row)
            cells = np.concatenate([np.where(known, row, 0.0), known, [1.0]])
            found[labels_of[sid]] = found.get(labels_of[sid], 0.0) + cells
    return dict(sorted(found.items()))


def _sums_agree(workspace: Workspace, stored, columns: list[int]) -> bool:
    """Whether the workspace's kept sums equal summing every row directly."""
    found = workspace.label_property_sums(stored, columns)
    expected = _sums_by_reading_everything(workspace.catalog, stored, columns)
    return list(found) == list(expected) and all(np.allclose(found[k], expected[k]) for k in expected)


def test_report_property_sums_follow_every_label_change(history: Workspace, monkeypatch) -> None:
    """``Workspace.label_property_sums`` (the report's per-class property means) equals summing every curated
    sample's row of the set: first from one read of every curated label, stored; then, after relabelling,
    reviews, a retraction, a deleted and a new sample, from the logged changes alone (no second read of every
    label), and the log is trimmed; with a refit that cannot be stored applied on top; and summed afresh when the
    set is rewritten or more changes were logged than a tenth of the set."""
    catalog = history.catalog
    ids = sorted(catalog.samples(("sample_id",))["sample_id"].tolist())
    rng = np.random.default_rng(3)
    kept = [sid for i, sid in enumerate(ids) if i % 9 != 4]  # some samples not in the set
    vectors = rng.normal(size=(len(kept), 4)).astype(np.float32)
    vectors[::11, 1] = np.nan  # unknown values are left out of a column's sum and count
    history.features.save("sums-probe", kept, ["h"] * len(kept), vectors, {"columns": ["a", "b", "c", "d"]})
    stored = history.features.load("sums-probe")
    columns = [0, 1, 3]
    name = "property_sums:sums-probe"
    reads = []
    snapshot = Catalog.curated_snapshot
    monkeypatch.setattr(catalog, "curated_snapshot", lambda batch=200_000: reads.append(1) or snapshot(catalog, 50))

    assert _sums_agree(history, stored, columns)
    assert len(reads) == 1 and catalog.label_sums(name)["store_key"]
    assert _sums_agree(history, stored, columns)
    assert len(reads) == 1  # nothing changed: the stored sums

    labelled = sorted(set(catalog.curated_labels()) & set(ids))
    with catalog.transaction() as conn:  # people relabel a few samples, a model labels one, a review decides one
        catalog.add_labels(conn, {sid: CLASSES[(CLASSES.index(catalog.curated_labels([sid])[sid].label) + 3) % 10]
                                  for sid in labelled[1:40:6]}, origin="human", annotator="sums-a")
        catalog.add_labels(conn, {labelled[45]: CLASSES[2]}, origin="model", annotator="route-sums")
        _review(catalog, conn, labelled[50], CLASSES[7])
    with catalog.transaction() as conn:
        catalog.retract_model_labels(conn, "route-sums")
        conn.execute(delete(samples).where(samples.c.sample_id == labelled[60]))  # its curated row goes with it
        catalog.upsert_samples(conn, [{"sample_id": kept[-1] + "-late.png", "kind": "image", "uri": None,
                                       "split": "train", "readable": True}])
        catalog.add_labels(conn, {kept[-1] + "-late.png": CLASSES[5]}, origin="human", annotator="sums-a")
    logged = catalog.label_changes_since(0)
    assert len(logged) >= 8 and {change[1] for change in logged} >= {labelled[45], labelled[60]}
    trims: list[str] = []
    listen = (catalog.engine, "before_cursor_execute")

    def record(conn, cursor, statement: str, *rest) -> None:
        if statement.startswith("DELETE FROM label_changes"):
            trims.append(statement)

    monkeypatch.setattr(catalog_module, "LABEL_CHANGES_TRIM_ROWS", 3)
    event.listen(*listen, record)
    try:
        assert _sums_agree(history, stored, columns)
    finally:
        event.remove(*listen, record)
    assert len(reads) == 1  # from the logged changes alone
    # (the call may first store a due refit of the multi-annotator labels: its changes are logged after these)
    assert catalog.label_sums(name)["seq"] >= logged[-1][0] and catalog.label_changes_since(0) == []  # trimmed,
    # three rows per transaction
    assert len(trims) >= len(logged) / 3 and catalog.label_changes_trimmed() == catalog.label_sums(name)["seq"]

    # answers that flip multi-annotator samples, refit not stored (as on a read-only catalog): applied on top
    multi = sorted(sid for sid, value in catalog.curated_labels().items() if value.how == "aggregated")
    flipped = {sid: CLASSES[(CLASSES.index(catalog.curated_labels([sid])[sid].label) + 1) % 10] for sid in multi}
    with catalog.transaction() as conn:
        for annotator in ("sums-f1", "sums-f2", "sums-f3", "sums-f4"):
            catalog.add_labels(conn, flipped, origin="human", annotator=annotator)
    with monkeypatch.context() as unstored:
        unstored.setattr(catalog, "_aggregate_changes",
                         lambda persist=True: Catalog._aggregate_changes(catalog, persist=False))
        assert catalog.unstored_label_moves()
        assert _sums_agree(history, stored, columns)
    assert len(reads) == 1
    assert _sums_agree(history, stored, columns)
    assert len(reads) == 1  # the refit stored now, its moves logged and applied

    history.features.save("sums-probe", kept, ["h"] * len(kept), vectors[:, ::-1].copy(),
                          {"columns": ["a", "b", "c", "d"]})  # a new generation of the set
    stored = history.features.load("sums-probe")
    assert _sums_agree(history, stored, columns)
    assert len(reads) == 2
    with catalog.transaction() as conn:  # more changes than a tenth of the set: summed afresh
        catalog.add_labels(conn, {sid: CLASSES[0] for sid in [*labelled[:60], *labelled[61:]][:150]},
                           origin="human", annotator="sums-b")  # (labelled[60] was deleted; a set of fewer
        # than 1,000 rows counts as 1,000: over 100 changes)
    assert _sums_agree(history, stored, columns)
    assert len(reads) == 3
    _agrees(catalog, "label changes logged for the property sums")


def test_kept_property_sums_survive_a_concurrent_trim_an_emptied_log_a_rebuild_and_a_set_gone(
        history: Workspace, monkeypatch) -> None:
    """A report that read the kept sums before another report applied newer changes and dropped them from the log
    sums afresh instead of applying only what is left (and older sums are refused when stored); a new generation
    of the set is kept although the log was emptied; a rebuild of the curated table drops the kept sums without
    logging every row, and the next report is right; kept sums of a set that is gone no longer hold the log back."""
    import shutil

    catalog = history.catalog
    # kept sums of another set would hold the log back (it is trimmed up to the oldest kept sums): only this one
    shutil.rmtree(history.features.folder("sums-probe"), ignore_errors=True)
    ids = sorted(catalog.samples(("sample_id",))["sample_id"].tolist())
    kept = ids[::2]
    vectors = np.random.default_rng(5).normal(size=(len(kept), 2)).astype(np.float32)
    history.features.save("sums-race", kept, ["h"] * len(kept), vectors, {"columns": ["a", "b"]})
    stored, columns, name = history.features.load("sums-race"), [0, 1], "property_sums:sums-race"
    reads = []
    snapshot = Catalog.curated_snapshot
    monkeypatch.setattr(catalog, "curated_snapshot", lambda batch=200_000: reads.append(1) or snapshot(catalog, 50))
    # samples whose label counts because it was imported: a routed model label replaces it (a change to log)
    labelled = sorted(sid for sid, value in catalog.curated_labels().items() if value.origin == "imported"
                      and sid in set(kept))

    def relabel(sid: str) -> None:
        with catalog.transaction() as conn:
            now = catalog.curated_labels([sid])[sid].label
            catalog.add_labels(conn, {sid: CLASSES[(CLASSES.index(now) + 1) % 10]}, origin="model", annotator="race")

    assert _sums_agree(history, stored, columns) and len(reads) == 1
    stale = catalog.label_sums(name)  # report A has read the kept row ...
    relabel(labelled[0])
    assert _sums_agree(history, stored, columns) and len(reads) == 1  # ... B applies the change, drops it
    assert catalog.label_changes_since(0) == [] and catalog.label_changes_trimmed() > stale["seq"]
    relabel(labelled[1])
    real = catalog.label_sums
    with monkeypatch.context() as racing:  # A goes on from what it read: the change B dropped is not in the log
        racing.setattr(catalog, "label_sums", lambda wanted: stale if wanted == name else real(wanted))
        assert _sums_agree(history, stored, columns) and len(reads) == 2  # summed afresh
    assert _sums_agree(history, stored, columns) and len(reads) == 2
    assert not catalog.store_label_sums(name, store_key=stale["store_key"], base=stale["seq"], seq=10**12, sums="{}")

    assert catalog.label_changes_since(0) == []  # an emptied log, then a new generation of the set: kept
    history.features.save("sums-race", kept, ["h"] * len(kept), vectors[:, ::-1].copy(), {"columns": ["a", "b"]})
    stored = history.features.load("sums-race")
    assert _sums_agree(history, stored, columns) and len(reads) == 3
    assert _sums_agree(history, stored, columns) and len(reads) == 3

    catalog.rebuild_curated_labels()  # every row rewritten: kept sums dropped, nothing logged
    assert catalog.label_sums(name) is None and catalog.label_changes_since(0) == []
    assert _sums_agree(history, stored, columns) and len(reads) == 4
    assert not catalog.store_label_sums(name, store_key="x", base=stale["seq"], seq=10**12, sums="{}")

    history.features.save("sums-gone", kept, ["h"] * len(kept), vectors, {"columns": ["a", "b"]})
    assert _sums_agree(history, history.features.load("sums-gone"), columns)
    shutil.rmtree(history.features.folder("sums-gone"))
    relabel(labelled[2])
    assert _sums_agree(history, stored, columns)
    assert catalog.label_sums("property_sums:sums-gone") is None and catalog.label_changes_since(0) == []
    _agrees(catalog, "kept property sums after a race, a rebuild and a set gone")


def test_postgres_bulk_writes_without_temporary_tables_repeated_and_failing(postgres_url, tmp_path) -> None:
    """PostgreSQL's bulk writes by COPY: a role that may not create temporary tables (a hardened database) still
    ingests, through the multi-row statements; many staged upserts in one transaction reuse one staging table
    (its locks do not pile up until the commit); a COPY that breaks a constraint raises SQLAlchemy's error."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import IntegrityError

    if not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    url = _fresh_postgres(postgres_url)
    workspace = Workspace.create(tmp_path / "ws", db_url=url)
    catalog = workspace.catalog

    def rows(start: int, count: int, split: str = "train") -> list[dict]:
        return [{"sample_id": f"{split}/s{i:06d}.png", "kind": "image", "uri": None, "split": split,
                 "readable": True, "meta": {"n": i} if i % 2 else None} for i in range(start, start + count)]

    with catalog.transaction() as conn:  # 20 staged upserts and label syncs in one transaction
        held = []
        for batch in range(20):
            catalog.upsert_samples(conn, rows(batch * 500, 500))
            catalog.sync_imported_labels(conn, {f"train/s{i:06d}.png": CLASSES[i % 10]
                                                for i in range(batch * 500, batch * 500 + 500)})
            held.append(conn.execute(text("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()")).scalar())
    assert held[-1] <= held[1] + 2, held
    assert len(catalog.curated_labels()) == 10_000
    with pytest.raises(IntegrityError), catalog.transaction() as conn:  # labels of samples that do not exist
        catalog.add_labels(conn, {f"missing/{i}.png": CLASSES[0] for i in range(600)}, origin="model")

    role, database = f"r{uuid.uuid4().hex[:10]}", make_url(url).database
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            conn.execute(text(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC"))
        owner = create_engine(url, isolation_level="AUTOCOMMIT")
        with owner.connect() as conn:
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"))
            conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
        owner.dispose()
        restricted = Catalog(make_url(url).set(username=role))
        with restricted.transaction() as conn:
            restricted.upsert_samples(conn, rows(0, 600, "test"))
            restricted.sync_imported_labels(conn, {f"test/s{i:06d}.png": CLASSES[i % 10] for i in range(600)})
        restricted.engine.dispose()
        assert len(catalog.curated_labels()) == 10_600
        _agrees(catalog, "bulk writes by COPY and by a role without temporary tables")
    finally:
        owner = create_engine(url, isolation_level="AUTOCOMMIT")
        with owner.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))  # its grants in the test's database
        owner.dispose()
        workspace.catalog.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
