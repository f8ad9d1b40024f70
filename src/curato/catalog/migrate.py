"""Schema migrations of the catalog (Alembic, run in-process on curato's own connection).

A catalog records its Alembic revision in ``alembic_version`` and its schema number in ``info.schema_version``.
Checking whether a catalog is current needs only SQL (:func:`needs_upgrade`), so the core reads and creates
catalogs without alembic installed; only a real migration imports alembic (the ``serve`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text

from curato.catalog import schema
from curato.errors import WorkspaceError

HEAD = "0010"  # the newest revision in migrations/versions (a test checks it against alembic's head)
# info.schema_version -> the revision that schema is
REVISION_OF_SCHEMA = {version: f"{version:04d}" for version in range(1, 11)}
VERSION_TABLE = "alembic_version"
CORE_TABLES = frozenset({"info", "samples", "labels", "runs"})
SCHEMA_1_TABLES = frozenset({"info", "samples", "labels", "annotations", "runs", "queue", "curve_points"})
SCHEMA_2_TABLES = SCHEMA_1_TABLES | {"users", "sessions", "decisions", "assignments", "gold"}
SCHEMA_3_TABLES = frozenset(schema.metadata.tables) - {"curated_labels", "sample_counts", "curated_counts",
                                                       "hash_changes", "feature_counts", "label_changes", "label_sums"}
SCHEMA_6_TABLES = SCHEMA_3_TABLES | {"curated_labels", "sample_counts", "curated_counts"}
SCHEMA_7_TABLES = SCHEMA_6_TABLES | {"hash_changes", "feature_counts"}
_TABLES_OF_SCHEMA = {1: SCHEMA_1_TABLES, 2: SCHEMA_2_TABLES, 3: SCHEMA_3_TABLES,
                     4: SCHEMA_3_TABLES,  # schema 4 added indexes only
                     5: SCHEMA_3_TABLES | {"curated_labels"}, 6: SCHEMA_6_TABLES,
                     **dict.fromkeys((7, 8, 9), SCHEMA_7_TABLES),  # 8 and 9 added indexes only
                     10: frozenset(schema.metadata.tables)}
_LOCK_KEY = 0x637572  # PostgreSQL advisory lock: one migrating process at a time
_SCRIPTS = Path(__file__).resolve().parent / "migrations"


def _alembic(where: str | None) -> Any:
    """The alembic.command module, or a one-line WorkspaceError saying how to install it."""
    try:
        from alembic import command
    except ImportError:
        prefix = f"{where}: " if where else ""
        raise WorkspaceError(f"{prefix}the catalog needs a schema migration, which needs alembic: "
                             'pip install "curato[serve]"') from None
    return command


def _config(conn: Connection) -> Any:
    """An Alembic Config without alembic.ini: curato's scripts, run on ``conn``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = conn
    return config


@contextmanager
def _connected(bind: Engine | Connection) -> Iterator[Connection]:
    """``bind`` itself (its caller commits), or one transaction on the engine."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


def _recorded_revision(conn: Connection) -> str | None:
    """The revision in alembic_version by plain SQL (no alembic needed); None when unversioned."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def _schema_version(conn: Connection) -> str | None:
    return conn.execute(select(schema.info.c.value).where(schema.info.c.key == "schema_version")).scalar()


def current_revision(bind: Engine | Connection) -> str | None:
    """The catalog's Alembic revision (None: unversioned), read with alembic's MigrationContext when installed."""
    with _connected(bind) as conn:
        try:
            from alembic.runtime.migration import MigrationContext
        except ImportError:
            return _recorded_revision(conn)
        return MigrationContext.configure(conn).get_current_revision()


def needs_upgrade(conn: Connection) -> bool:
    """Whether the catalog is behind: not at :data:`HEAD`, or its schema_version is not this curato's. Reads only."""
    return _recorded_revision(conn) != HEAD or _schema_version(conn) != str(schema.SCHEMA_VERSION)


def stamp_head(conn: Connection) -> None:
    """Record a catalog that create_all just made as being at head (alembic's stamp; plain SQL without alembic)."""
    try:
        from alembic import command
    except ImportError:
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
                          "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
        conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:head)"), {"head": HEAD})
        return
    command.stamp(_config(conn), "head", purge=True)


def _set_schema_version(conn: Connection) -> None:
    value = str(schema.SCHEMA_VERSION)
    if _schema_version(conn) is None:
        conn.execute(schema.info.insert().values(key="schema_version", value=value))
    else:
        conn.execute(schema.info.update().where(schema.info.c.key == "schema_version").values(value=value))


def upgrade(bind: Engine | Connection, *, where: str | None = None) -> str:
    """Bring any catalog to head in one transaction and set ``info.schema_version``; returns the head revision.

    An unversioned catalog that holds curato's core tables is first stamped at the revision of its
    ``info.schema_version`` (missing: 1), when all of that schema's tables are there; otherwise the migrations
    run from the start, skipping what exists. An empty database gets every table. ``where`` names the catalog
    in error messages. A Connection: runs in its transaction, which the caller commits.
    """
    command = _alembic(where)
    prefix = f"{where}: " if where else ""
    with _connected(bind) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        if not needs_upgrade(conn):
            return HEAD
        from alembic.script import ScriptDirectory

        config = _config(conn)
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        recorded = _recorded_revision(conn)
        present = set(inspect(conn).get_table_names())
        if recorded is not None and recorded not in known:
            raise WorkspaceError(f"{prefix}catalog schema revision {recorded} is newer than this curato; "
                                 "upgrade curato")
        if VERSION_TABLE not in present and present >= CORE_TABLES:
            found = _schema_version(conn)
            version = 1 if found is None else int(found) if found.isdigit() else -1
            if version not in REVISION_OF_SCHEMA:
                raise WorkspaceError(f"{prefix}catalog schema version {found} is unknown to this curato "
                                     f"({schema.SCHEMA_VERSION}); upgrade curato, or restore the catalog")
            if _TABLES_OF_SCHEMA[version] <= present:
                command.stamp(config, REVISION_OF_SCHEMA[version])
        command.upgrade(config, "head")
        _set_schema_version(conn)
    return HEAD
