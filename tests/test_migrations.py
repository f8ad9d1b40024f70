"""Catalog schema migrations (curato.catalog.migrate) on real SQLite and PostgreSQL: a schema-1 catalog opened by
this curato keeps its data and ends up exactly as schema.metadata says."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text

from curato.catalog import Catalog, migrate, schema
from curato.errors import WorkspaceError

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
WRITES = ("INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, postgres_url) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"
        return
    if not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    name = f"m{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _schema_1_catalog(url: str, *, drop: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> None:
    """A catalog as curato made it at schema 1 (revision 0001, no alembic_version), with samples, labels, runs and
    queue rows. ``drop``: schema-1 tables an early catalog lacked; ``extra``: schema-2 tables an interim curato
    created with create_all (without the new columns)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        for name in drop:
            conn.execute(text(f"DROP TABLE {name}"))
        for name in extra:
            schema.metadata.tables[name].create(conn)
        conn.execute(text("INSERT INTO info (key, value) VALUES ('schema_version', '1')"))
        for sample_id in ("a", "b", "c"):
            conn.execute(text("INSERT INTO samples (sample_id, kind, uri, split, readable, created_at, updated_at) "
                              "VALUES (:id, 'image', :uri, 'train', :ok, :now, :now)"),
                         {"id": sample_id, "uri": f"/data/{sample_id}.png", "ok": True, "now": NOW})
        conn.execute(text("INSERT INTO labels (sample_id, label, origin, created_at) VALUES "
                          "('a', 'cat', 'imported', :now), ('b', 'dog', 'human', :now)"), {"now": NOW})
        conn.execute(text("INSERT INTO runs (kind, version, status, started_at) VALUES "
                          "('select', '0.1.0', 'done', :now)"), {"now": NOW})
        if "queue" not in drop:
            conn.execute(text("INSERT INTO queue (sample_id, run_id, strategy, rank, status, created_at) VALUES "
                              "('b', 1, 'margin', 1, 'queued', :now), ('c', 1, 'margin', 2, 'queued', :now)"),
                         {"now": NOW})
    engine.dispose()


def _differences(catalog: Catalog) -> list:
    """What alembic's autogenerate finds between the database and schema.metadata (empty: identical)."""
    with catalog.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), schema.metadata)


def _writes_while(catalog: Catalog, action) -> list[str]:
    """The writing SQL statements ``action`` sends to the catalog."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith(WRITES):
            seen.append(statement)

    event.listen(catalog.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(catalog.engine, "before_cursor_execute", record)
    return seen


def _assert_at_head(catalog: Catalog) -> None:
    assert migrate.current_revision(catalog.engine) == migrate.HEAD
    with catalog.engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM info WHERE key = 'schema_version'")).scalar() == \
            str(schema.SCHEMA_VERSION)
    assert _differences(catalog) == []


def test_head_constant_is_alembics_head():
    with create_engine("sqlite://").connect() as conn:
        assert ScriptDirectory.from_config(migrate._config(conn)).get_current_head() == migrate.HEAD
    assert migrate.REVISION_OF_SCHEMA[schema.SCHEMA_VERSION] == migrate.HEAD


def test_schema_1_catalog_is_migrated_and_keeps_its_data(url):
    _schema_1_catalog(url)
    catalog = Catalog(url)
    catalog.verify()
    _assert_at_head(catalog)
    columns = inspect(catalog.engine)
    assert {"decision_id", "duration_ms", "retracted_at"} <= {c["name"] for c in columns.get_columns("labels")}
    assert {"users", "sessions", "decisions", "assignments", "gold"} <= set(columns.get_table_names())
    assert "ix_queue_next" in {index["name"] for index in columns.get_indexes("queue")}
    with catalog.engine.connect() as conn:
        assert conn.execute(text("SELECT sample_id, assigned FROM queue ORDER BY rank")).all() == [("b", 0), ("c", 0)]
    assert catalog.sample_count() == 3
    assert catalog.current_labels() == {"a": "cat", "b": "dog"}
    assert _writes_while(catalog, catalog.verify) == []  # a second open only reads
    catalog.close()


@pytest.mark.parametrize(("drop", "extra"), [(("queue", "curve_points"), ()), ((), ("users", "sessions", "gold"))])
def test_unversioned_catalogs_of_other_eras_reach_head(url, drop, extra):
    _schema_1_catalog(url, drop=drop, extra=extra)
    catalog = Catalog(url)
    catalog.verify()
    _assert_at_head(catalog)
    assert catalog.current_labels() == {"a": "cat", "b": "dog"}
    catalog.close()


def test_new_catalog_is_at_head_and_a_second_verify_writes_nothing(url):
    catalog = Catalog(url)
    catalog.create()
    _assert_at_head(catalog)
    assert _writes_while(catalog, catalog.verify) == []
    assert _writes_while(catalog, catalog.create) == []  # create on an existing current catalog: nothing either
    catalog.close()


def test_newer_revision_is_refused(url):
    catalog = Catalog(url)
    catalog.create()
    with catalog.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(WorkspaceError, match="newer than this curato; upgrade curato"):
        catalog.verify()
    catalog.close()


def test_without_alembic_current_catalogs_work_and_old_ones_say_what_to_install(tmp_path, monkeypatch):
    old_url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    _schema_1_catalog(old_url)
    for name in [module for module in sys.modules if module == "alembic" or module.startswith("alembic.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import alembic... -> ImportError
    monkeypatch.setitem(sys.modules, "alembic", None)
    new = Catalog(f"sqlite:///{tmp_path / 'new.sqlite'}")
    new.create()  # stamped by plain SQL
    assert migrate.current_revision(new.engine) == migrate.HEAD
    assert _writes_while(new, new.verify) == []
    new.close()
    old = Catalog(old_url)
    with pytest.raises(WorkspaceError, match=r'needs alembic: pip install "curato\[serve\]"') as caught:
        old.verify()
    assert "\n" not in str(caught.value) and str(old.path) in str(caught.value)
    old.close()


def test_an_interrupted_migration_is_finished_by_the_next_open(url, monkeypatch):
    _schema_1_catalog(url)
    catalog = Catalog(url)

    def fail(conn) -> None:
        raise KeyboardInterrupt  # Ctrl-C after the migrations ran, before the transaction commits

    with monkeypatch.context() as patched:
        patched.setattr(migrate, "_set_schema_version", fail)
        with pytest.raises(KeyboardInterrupt):
            catalog.verify()
    catalog.verify()
    _assert_at_head(catalog)
    assert catalog.current_labels() == {"a": "cat", "b": "dog"}
    catalog.close()


def _indexes_and_triggers(catalog: Catalog) -> dict[str, str]:
    """Every index and trigger of the catalog by name, with its definition as the database states it."""
    with catalog.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
                                     "AND sql IS NOT NULL")).all()
            return {name: " ".join(sql.replace('"', "").split()) for name, sql in rows}
        rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' UNION ALL "
                                 "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal")).all()
        return dict(rows)


def test_a_populated_schema_6_catalog_reaches_the_fresh_schemas_indexes_and_logs_hash_changes(
        url, tmp_path, postgres_url):
    """A schema-6 catalog with samples, migrated to head, has the same indexes (partial ones included) and
    triggers as a new catalog, and its first hash change after the migration is logged once."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0006")
        for sample_id in ("a", "b", "c"):
            conn.execute(text("INSERT INTO samples (sample_id, kind, uri, split, readable, content_hash, created_at, "
                              "updated_at) VALUES (:id, 'image', :uri, 'train', :ok, :digest, :now, :now)"),
                         {"id": sample_id, "uri": f"/data/{sample_id}.png", "ok": sample_id != "c",
                          "digest": f"h-{sample_id}", "now": NOW})
    engine.dispose()
    migrated = Catalog(url)
    migrated.verify()
    _assert_at_head(migrated)
    if url.startswith("sqlite"):
        fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    else:
        fresh_url = url.rsplit("/", 1)[0] + f"/f{uuid.uuid4().hex[:12]}"
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {fresh_url.rsplit('/', 1)[1]}"))
    fresh = Catalog(fresh_url)
    fresh.create()
    try:
        found = _indexes_and_triggers(migrated)
        assert {"ix_samples_unreadable", "ix_curated_labels_aggregated", "ix_curated_labels_label", "ix_labels_label",
                "hash_changes_update"} <= set(found)
        assert found == _indexes_and_triggers(fresh)
    finally:
        fresh.close()
        if not url.startswith("sqlite"):
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {fresh_url.rsplit('/', 1)[1]} WITH (FORCE)"))
            admin.dispose()
    with migrated.transaction() as conn:
        conn.execute(text("UPDATE samples SET content_hash = 'changed' WHERE sample_id = 'b'"))
    with migrated.engine.connect() as conn:
        assert conn.execute(text("SELECT sample_id, change, old_hash, new_hash FROM hash_changes")).all() == [
            ("b", "update", "h-b", "changed")]
    assert migrated.sample_count() == 3
    migrated.close()


def test_a_schema_7_catalog_that_already_has_the_label_indexes_reaches_head(url):
    """Migrations 0008 and 0009 skip an index that a catalog already has (made by hand, or by an interrupted
    earlier run): the catalog reaches head with each index once, on the same columns as a new catalog's."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0007")
        conn.execute(text("CREATE INDEX ix_curated_labels_label ON curated_labels (label, sample_id)"))
        conn.execute(text("CREATE INDEX ix_labels_label ON labels (label)"))
    engine.dispose()
    catalog = Catalog(url)
    catalog.verify()
    _assert_at_head(catalog)
    with catalog.engine.connect() as conn:
        found = {table: inspect(conn).get_indexes(table) for table in ("curated_labels", "labels")}
    for table, name, columns in (("curated_labels", "ix_curated_labels_label", ["label", "sample_id"]),
                                 ("labels", "ix_labels_label", ["label"])):
        assert [index["column_names"] for index in found[table] if index["name"] == name] == [columns]
        assert sum(index["column_names"] == columns for index in found[table]) == 1, found[table]
    catalog.close()
