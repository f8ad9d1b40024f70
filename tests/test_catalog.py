"""The catalog on real SQLite (and PostgreSQL when CI provides one)."""

from __future__ import annotations

import socket
import sqlite3
import uuid

import pytest
from sqlalchemy import event, text

from curato.catalog import Catalog
from curato.errors import WorkspaceError


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path, postgres_url):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    else:
        if not postgres_url:
            pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
        from sqlalchemy import create_engine

        schema_name = f"t{uuid.uuid4().hex[:12]}"
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {schema_name}"))  # fresh database per test
        admin.dispose()
        url = postgres_url.rsplit("/", 1)[0] + f"/{schema_name}"
    cat = Catalog(url)
    cat.create()
    yield cat
    cat.close()


def _row(sample_id: str, **values):
    return {"sample_id": sample_id, "kind": "image", "uri": f"/data/{sample_id}.png", "split": "train",
            "source": "s", "content_hash": "h-" + sample_id, "readable": True, **values}


def test_upsert_is_idempotent_and_updates(catalog):
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [_row("a"), _row("b")])
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [_row("a", content_hash="new"), _row("b")])
    known = catalog.known_samples()
    assert catalog.sample_count() == 2
    assert known["a"][1] == "new" and known["b"][1] == "h-b"


def test_label_precedence_human_over_routed_model_over_imported(catalog):
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [_row("a"), _row("b"), _row("c")])
        assert catalog.sync_imported_labels(conn, {"a": "cat", "b": "dog"}) == 2
        assert catalog.sync_imported_labels(conn, {"a": "cat", "b": "dog"}) == 0  # re-import adds nothing
        catalog.add_labels(conn, {"a": "dog", "c": "cat"}, origin="model", confidence={"a": 0.9, "c": 0.99})
        catalog.add_labels(conn, {"b": "cat"}, origin="human", annotator="ann1")
    # the curated rule (docs/labelling.md): human > routed model > imported
    assert catalog.current_labels() == {"a": "dog", "b": "cat", "c": "cat"}
    curated = catalog.curated_labels()
    assert (curated["a"].origin, curated["b"].origin, curated["b"].how) == ("model", "human", "annotator")
    assert catalog.original_labels() == {"a": "cat", "b": "dog"}
    with pytest.raises(ValueError, match="origin"), catalog.transaction() as conn:
        catalog.add_labels(conn, {"a": "x"}, origin="guess")


def test_failed_transaction_leaves_nothing(catalog):
    with pytest.raises(RuntimeError), catalog.transaction() as conn:
        catalog.upsert_samples(conn, [_row("a")])
        raise RuntimeError("crash mid-write")
    assert catalog.sample_count() == 0


def test_runs_are_recorded(catalog):
    run = catalog.start_run("embed", "classic", {"size": 64})
    catalog.finish_run(run, "done", {"computed": 3})
    (record,) = catalog.runs("embed")
    assert record["status"] == "done" and record["params"] == {"size": 64} and record["summary"] == {"computed": 3}
    assert record["finished_at"] >= record["started_at"]


def test_recorded_run_marks_the_outcome_of_its_block(catalog):
    with catalog.recorded_run("size", "accuracy", {"seeds": 5}) as run:
        run.summary = {"points": 12}
    with pytest.raises(ValueError, match="bad curve"), catalog.recorded_run("size", "accuracy") as run:
        raise ValueError("bad curve")
    with pytest.raises(KeyboardInterrupt), catalog.recorded_run("size", "accuracy"):
        raise KeyboardInterrupt
    done, failed, interrupted = catalog.runs("size")
    assert (done["status"], done["params"], done["summary"]) == ("done", {"seeds": 5}, {"points": 12})
    assert (failed["status"], failed["summary"]) == ("failed", {"error": "bad curve"})
    assert interrupted["status"] == "interrupted" and interrupted["finished_at"] is not None


def test_labels_close_open_queue_entries_except_model_labels(catalog):
    run = catalog.start_run("select", "margin")
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [_row(f"s{i}") for i in range(4)])
        catalog.queue_batch(conn, run, "margin", [{"sample_id": f"s{i}", "rank": i} for i in range(4)])
    with catalog.transaction() as conn:
        catalog.add_labels(conn, {"s0": "cat"}, origin="human", annotator="ann")
        catalog.add_labels(conn, {"s1": "dog"}, origin="model", annotator="route-1")
        catalog.sync_imported_labels(conn, {"s2": "cat"})
    status = {entry["sample_id"]: entry["status"] for entry in catalog.queued(None)}
    assert status == {"s0": "labelled", "s1": "queued", "s2": "labelled", "s3": "queued"}
    with catalog.transaction() as conn:
        assert catalog.set_queue_status(conn, ["s3"], "skipped") == 1
        assert catalog.set_queue_status(conn, ["s0"], "skipped") == 0  # only open entries change
    assert [entry["sample_id"] for entry in catalog.queued()] == ["s1"]


def test_sqlite_uses_wal(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    cat.create()
    with cat.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_newer_schema_is_refused(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    cat.create()
    with cat.engine.begin() as conn:
        conn.execute(text("UPDATE info SET value = '999' WHERE key = 'schema_version'"))
    with pytest.raises(WorkspaceError, match="upgrade curato"):
        cat.create()


def test_verify_never_creates_a_catalog(tmp_path):
    missing = Catalog(f"sqlite:///{tmp_path / 'missing.sqlite'}")
    with pytest.raises(WorkspaceError, match="the catalog is missing"):
        missing.verify()
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(WorkspaceError, match=r"the catalog is empty \(0 bytes\)"):
        Catalog(f"sqlite:///{tmp_path / 'empty.sqlite'}").verify()
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(WorkspaceError, match="the catalog is damaged"):
        Catalog(f"sqlite:///{tmp_path / 'garbage.sqlite'}").verify()
    made = Catalog(f"sqlite:///{tmp_path / 'made.sqlite'}")
    made.create()
    made.verify()


def test_recording_a_failure_never_masks_it(tmp_path):
    """The block fails, and recording that fails too (here: another process holds the database's write lock, as
    a full disk would refuse the write): the block's error is the one raised, with a note."""
    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    event.listen(cat.engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA busy_timeout=50"))
    cat.create()
    blocker = sqlite3.connect(tmp_path / "c.sqlite", timeout=0.05)
    with pytest.raises(ValueError, match="the real problem") as raised, cat.recorded_run("ingest", "src"):
        blocker.execute("BEGIN EXCLUSIVE")
        raise ValueError("the real problem")
    assert "could not be marked failed" in " ".join(raised.value.__notes__)
    blocker.rollback()
    blocker.close()
    assert [run["status"] for run in cat.runs()] == ["running"]
    assert cat.interrupt_dead_runs(lambda pid: False, socket.gethostname()) == [1]
    assert [run["status"] for run in cat.runs()] == ["interrupted"]


def test_sample_files_inside_the_workspace_are_stored_relative_to_it(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'ws' / 'c.sqlite'}", root=tmp_path / "ws")
    cat.create()
    inside, outside = str(tmp_path / "ws" / "data" / "a.png"), "/data/b.png"
    with cat.transaction() as conn:
        cat.upsert_samples(conn, [_row("a", uri=inside), _row("b", uri=outside),
                                  _row("c", uri=f"idx:{tmp_path / 'ws' / 'images.idx'}#3")])
    with cat.engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT sample_id, uri FROM samples")).all())
    assert stored == {"a": "{workspace}/data/a.png", "b": outside, "c": "idx:{workspace}/images.idx#3"}
    moved = Catalog(f"sqlite:///{tmp_path / 'ws' / 'c.sqlite'}", root=tmp_path / "moved")
    assert moved.samples(("sample_id", "uri"))["uri"].tolist() == [
        str(tmp_path / "moved" / "data" / "a.png"), outside, f"idx:{tmp_path / 'moved' / 'images.idx'}#3"]
    assert moved.known_samples()["a"][0] == str(tmp_path / "moved" / "data" / "a.png")


def test_hash_changes_are_numbered_past_2_to_the_31(catalog):
    """The hash-change log's seq (and a stored count's) is 64-bit: a catalog that has logged 2^31 changes logs
    the next one, and its count is stored (a 32-bit SERIAL overflows there)."""
    from sqlalchemy import insert, select, update

    from curato.catalog.schema import hash_changes, samples

    start = 2**31 + 5
    with catalog.transaction() as conn:
        catalog.upsert_samples(conn, [_row("a"), _row("b")])
        conn.execute(insert(hash_changes).values(seq=start, sample_id="b", change="update", old_hash="x",
                                                 new_hash="h-b"))
        if catalog.engine.dialect.name == "postgresql":  # as if the sequence had handed out every seq up to it
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('hash_changes', 'seq'), {start})"))
    with catalog.transaction() as conn:
        conn.execute(update(samples).where(samples.c.sample_id == "a").values(content_hash="changed"))
    with catalog.engine.connect() as conn:
        logged = conn.execute(select(hash_changes.c.seq, hash_changes.c.sample_id)
                              .order_by(hash_changes.c.seq)).all()
    assert [tuple(row) for row in logged] == [(start, "b"), (start + 1, "a")]
    assert catalog.content_hashes()[0] == start + 1
    assert catalog.store_feature_count("v", store_key="k", seq=start + 1, stale=1, present=2)
    assert catalog.feature_count("v")["seq"] == start + 1
