"""The on-disk workspace: the only module that knows where things live.

```
<workspace>/
  catalog.sqlite      samples, labels, annotations, runs (unless a --db URL points elsewhere)
  features/<name>/    feature store: embeddings and image properties (see curato.featurestore)
  reports/            HTML and JSON reports; <command>-latest.json is each command's last document
  workspace.json      format version and the catalog URL
  curato.toml         optional: check parameters for this workspace (see docs/api.md)
  curato.lock         the writer lock (see curato.lock); logs/ holds tracebacks of internal errors
```

Opening a workspace never creates or repairs anything: a missing, empty or damaged ``workspace.json`` or
catalog is a WorkspaceError (exit 3) that names the file and what to do. Only :meth:`Workspace.create` on a
folder that is not yet a workspace makes them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import URL

from curato.catalog import Catalog
from curato.catalog.catalog import WORKSPACE_PLACEHOLDER
from curato.errors import WorkspaceError, WorkspaceNotReadyError, storage_error
from curato.featurestore import FeatureSet, FeatureStore, write_atomically
from curato.lock import WorkspaceLock, pid_alive, this_host

WORKSPACE_FORMAT = 1
_MARKER = "workspace.json"
SETTINGS_FILE = "curato.toml"
# Each command's latest JSON document, read back by the HTML report and by later commands (export reads audit's).
LATEST_DOCUMENTS = {kind: f"{kind}-latest.json"
                    for kind in ("audit", "bias", "transfer", "size", "select", "route", "simulate")}


DEFAULT_CATALOG = f"sqlite:///{WORKSPACE_PLACEHOLDER}/catalog.sqlite"


def write_json(path: str | Path, document: Any) -> Path:
    """Write a JSON document atomically (a temporary file of this writer's own, flushed, then renamed); NaN is
    refused, not written. A failed write (full disk, read-only folder) is a WorkspaceError naming the file."""
    path = Path(path)
    body = json.dumps(document, indent=1, allow_nan=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: handle.write(body), binary=False)
    except OSError as error:
        raise storage_error(error, "writing a JSON document") from error
    return path


class Workspace:
    """A dataset under study: its catalog, its feature store and its reports."""

    def __init__(self, root: Path, catalog_url: str | URL) -> None:
        self.root = Path(root)
        self.catalog = Catalog(catalog_url, root=self.root)
        self.features = FeatureStore(self.root / "features")
        self.lock = WorkspaceLock(self.root)

    @contextmanager
    def writing(self, command: str) -> Iterator[None]:
        """Hold the workspace's writer lock inside the ``with`` block (WorkspaceBusyError, exit 3, when another
        process holds it). The first writer after a crash marks the dead process's runs ``interrupted``."""
        with self.lock.hold(command) as first:
            if first:
                self.catalog.interrupt_dead_runs(pid_alive, this_host())
            yield

    @property
    def reports_dir(self) -> Path:
        """Where reports are written by default (created when it can be; writing into it says why not)."""
        path = self.root / "reports"
        with contextlib.suppress(OSError):  # a read-only workspace can still be read; the first write says why not
            path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def logs_dir(self) -> Path:
        """Where the traceback of an internal error is kept."""
        return self.root / "logs"

    @property
    def settings_path(self) -> Path:
        """The workspace's optional ``curato.toml`` (check parameters)."""
        return self.root / SETTINGS_FILE

    def feature_staleness(self, stored: FeatureSet,
                          content_hashes: Callable[[], tuple[int, dict[str, str | None]]] | None = None
                          ) -> tuple[int, int]:
        """(stale, present) of a feature set: its vectors whose sample's content hash changed since they were
        computed, and its vectors whose sample is still in the catalog (``curato info``'s stale and missing counts).

        Counted once per generation of the set by comparing every stored hash with the catalog's (one read of all
        hashes), then kept up to date from the catalog's log of hash changes, deletions and re-insertions
        (``hash_changes``, written by triggers): a later call reads only the changes since, so ``info`` does not
        read millions of hashes each time. The count is stored in the catalog when it can be written.

        ``content_hashes`` reads the catalog's hashes (default :meth:`Catalog.content_hashes`): ``info`` passes one
        that reads them at most once for all its feature sets. When more changes were logged since the last count
        than a tenth of the catalog (or of the set), counting again is cheaper than reading and applying them."""
        ids = stored.ids
        key = self._store_key(stored)
        counted = self.catalog.feature_count(stored.name)
        changes = None
        absent: list[str] = []  # the set's ids missing from the catalog, found by a full count
        if counted is not None and counted["store_key"] == key:
            most = max(len(ids), self.catalog.sample_count()) // 10
            changes = self.catalog.hash_changes_since(int(counted["seq"]), limit=most + 1)
            if not changes:
                return int(counted["stale"]), int(counted["present"])
            if len(changes) > most:
                changes = None  # too many to apply: count again
        if changes is not None:
            stale, present = _apply_hash_changes(stored, changes, int(counted["stale"]), int(counted["present"]))
            seq = changes[-1][0]
        else:
            seq, current = (content_hashes or self.catalog.content_hashes)()
            stale = present = 0
            for sid, digest in zip(ids.tolist(), stored.hashes.tolist(), strict=True):
                if sid in current:
                    present += 1
                    stale += current[sid] != digest
                else:
                    absent.append(sid)
            if len(ids) > 1 and not bool(np.all(ids[1:] >= ids[:-1])):
                return stale, present  # not in id order (never written so): no lookup by bisection, count each time
        self.catalog.store_feature_count(stored.name, store_key=key, seq=seq, stale=stale, present=present,
                                         absent=absent)
        return stale, present

    def _store_key(self, stored: FeatureSet) -> str:
        """What identifies one generation of a stored feature set: a rewrite of the set changes it."""
        try:
            stamp = (self.features.folder(stored.name) / "meta.json").stat().st_mtime_ns
        except OSError:
            stamp = 0
        return f"{stored.meta.get('generation', 0)}:{len(stored)}:{stamp}"

    def label_property_sums(self, stored: FeatureSet, columns: list[int]) -> dict[str, np.ndarray]:
        """Per curated label, the sums, then the counts, of the finite values of ``stored``'s ``columns`` over its
        samples that the set holds, then how many those are: ``(2 * len(columns) + 1,)`` float64; labels none of
        whose samples the set holds are left out. What the report's per-class property means divide.

        Summed once per generation of the set from one read of every curated label (:meth:`Catalog.curated_snapshot`,
        each found in the set's sorted ids by bisection), then kept up to date from the catalog's log of curated-label
        changes (``label_changes``, written by triggers): a later call reads only the changes since, so the report
        does not read millions of labels each time. Stored in the catalog when it can be written; summed afresh when
        more changes were logged since than a tenth of the set, or when another reader dropped some of them from
        the log meanwhile. A refit of multi-annotator labels that could not be stored (a read-only catalog) is
        applied on top, each time."""
        moves = self.catalog.unstored_label_moves()  # first: a due refit that can be stored is stored (and logged)
        ids = stored.ids
        name = f"property_sums:{stored.name}"
        key = f"{self._store_key(stored)}|{','.join(map(str, columns))}"
        self.catalog.forget_label_sums(lambda kept_name: not kept_name.startswith("property_sums:")
                                       or self.features.has(kept_name.split(":", 1)[1]))
        kept = self.catalog.label_sums(name)
        current = kept is not None and kept["store_key"] == key and bool(kept["sums"])
        # only sums of a set in id order are stored: then this generation is (no scan of every id to check)
        order = None if current or len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1])) else np.argsort(ids, kind="stable")
        sorted_ids = ids if order is None else ids[order]
        table: dict[str, np.ndarray] | None = None
        if current:
            base = int(kept["seq"])
            if not self.catalog.label_changes_beyond(base, max(len(ids), 1_000) // 10):
                changes = self.catalog.label_changes_since(base)
                # read after the changes: had another reader dropped some after ``base`` first, they are missing
                if self.catalog.label_changes_trimmed() <= base:
                    table = _decode_sums(kept["sums"])
                    if changes:
                        _, moved, before, after = (list(part) for part in zip(*changes, strict=True))
                        _move_labels(table, stored, sorted_ids, None, columns, moved, before, after)
                        self.catalog.store_label_sums(name, store_key=key, base=base, seq=changes[-1][0],
                                                      sums=_encode_sums(table))
        if table is None:
            storing = order is None and self.catalog.begin_label_sums(name)
            table, seq = {}, None
            for snapshot_seq, sample_ids, labels in self.catalog.curated_snapshot():
                seq = snapshot_seq
                _move_labels(table, stored, sorted_ids, order, columns, sample_ids, None, labels)
            if storing and seq is not None:  # (no curated row at all: nothing worth storing)
                self.catalog.store_label_sums(name, store_key=key, base=seq, seq=seq, sums=_encode_sums(table))
        if moves:
            table = {label: sums.copy() for label, sums in table.items()}
            _move_labels(table, stored, sorted_ids, order, columns, list(moves), [old for old, _ in moves.values()],
                         [new for _, new in moves.values()])
        return {label: sums for label, sums in sorted(table.items()) if sums[-1] > 0}

    def latest_path(self, kind: str) -> Path:
        """Where the latest document of command ``kind`` (audit, bias, size, ...) lives."""
        if kind not in LATEST_DOCUMENTS:
            raise ValueError(f"no latest document for {kind!r}; known: {', '.join(LATEST_DOCUMENTS)}")
        return self.reports_dir / LATEST_DOCUMENTS[kind]

    def read_latest(self, kind: str) -> dict[str, Any] | None:
        """The latest document of command ``kind``, or None when it never ran (or its file is unreadable)."""
        path = self.latest_path(kind)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_latest(self, kind: str, document: dict[str, Any], copy_to: str | Path | None = None) -> Path:
        """Store ``document`` as the latest of ``kind`` and, when the user asked for one, a copy at ``copy_to``."""
        path = write_json(self.latest_path(kind), document)
        if copy_to is not None:
            write_json(copy_to, document)
        return path

    @classmethod
    def create(cls, root: str | Path, *, db_url: str | None = None) -> Workspace:
        """Open the workspace at ``root``, creating it (and its catalog) when ``root`` is not a workspace yet."""
        root = Path(root).resolve()
        marker = root / _MARKER
        if not marker.exists():
            if root.exists() and not root.is_dir():
                raise WorkspaceNotReadyError(f"{root}: exists and is not a directory; choose another workspace path")
            with WorkspaceLock(root).hold("create"):
                if not marker.exists():  # another process may have made it while this one waited for the lock
                    return cls._make(root, db_url)
        workspace = cls.open(root)
        if db_url and db_url != workspace.catalog.url:
            raise WorkspaceNotReadyError(
                f"{marker}: workspace uses catalog {workspace.catalog.url}; open it without --db"
                " or use a new workspace directory"
            )
        return workspace

    @classmethod
    def _make(cls, root: Path, db_url: str | None) -> Workspace:
        leftover = root / "catalog.sqlite"
        if leftover.exists() and leftover.stat().st_size > 0 and not _empty_catalog(leftover):
            raise WorkspaceError(
                f"{root}: holds a catalog.sqlite but no {_MARKER}; restore {_MARKER} (for the default catalog: "
                f'{{"format": {WORKSPACE_FORMAT}, "catalog": "{DEFAULT_CATALOG}"}}) or choose another folder')
        stored = _portable_url(db_url, root) if db_url else DEFAULT_CATALOG
        workspace = cls(root, _catalog_url(stored, root))
        workspace.catalog.create()
        write_json(root / _MARKER, {"format": WORKSPACE_FORMAT, "catalog": stored})
        return workspace

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Open an existing workspace; raises WorkspaceNotReadyError (exit 2) when ``root`` is not one and
        WorkspaceError (exit 3) when its settings or catalog are missing, damaged or from a newer curato."""
        root = Path(root).resolve()
        marker = root / _MARKER
        if not marker.exists():
            raise WorkspaceNotReadyError(
                f"{root}: not a curato workspace (no {_MARKER}); create one with `curato ingest SOURCE -w {root}`"
            )
        stored = read_settings(marker)["catalog"]
        workspace = cls(root, _catalog_url(stored, root))
        workspace.catalog.verify()
        return workspace


def _apply_hash_changes(stored: FeatureSet, changes: list[tuple[int, str, str, str | None, str | None]],
                        stale: int, present: int) -> tuple[int, int]:
    """The (stale, present) counts of :meth:`Workspace.feature_staleness` moved by logged hash changes, in order:
    each change of a sample the set holds (found by bisection in its sorted ids) moves its vector between stale,
    current and absent."""
    ids = stored.ids
    if not len(ids) or not changes:
        return stale, present
    at, held = _find_ids(ids, [change[1] for change in changes])
    for (_, _, change, old, new), hit, row in zip(changes, held.tolist(), at.tolist(), strict=True):
        if not hit or change == "absent":  # a marker: the sample was already missing when counted
            continue
        digest = str(stored.hashes[row])
        before, after = change != "insert", change != "delete"
        present += int(after) - int(before)
        stale += int(after and new != digest) - int(before and old != digest)
    return stale, present


def _find_ids(ids: np.ndarray, wanted: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(position, found) of each wanted id in a set's sorted ``ids`` (non-empty), by bisection; an id is found only
    when equal as a whole (a longer catalog id is not cut to the set's width)."""
    wanted_ids = np.array(wanted, dtype=str)
    at = np.minimum(np.searchsorted(ids, wanted_ids), len(ids) - 1)
    return at, ids[at] == wanted_ids


def _move_labels(table: dict[str, np.ndarray], stored: FeatureSet, ids: np.ndarray, order: np.ndarray | None,
                 columns: list[int], sample_ids: Sequence[str], old: Sequence[str | None] | None,
                 new: Sequence[str | None] | None) -> None:
    """Move the rows of ``stored`` holding these samples out of their ``old`` labels' sums and into their ``new``
    ones (None, or a None entry: no label), in place (see :meth:`Workspace.label_property_sums`). Samples the set
    does not hold are skipped (:func:`_find_ids`).
    ``ids``: the set's ids sorted, ``order``: the permutation that sorted them (None when stored sorted)."""
    if not len(sample_ids) or not len(ids):
        return
    at, inside = _find_ids(ids, sample_ids)
    rows = at[inside] if order is None else order[at[inside]]
    by_row = np.argsort(rows, kind="stable")  # the memory-mapped rows in file order
    rows = rows[by_row]
    values = np.asarray(stored.vectors[rows], dtype=np.float64)[:, columns]
    known = np.isfinite(values)
    cells = np.hstack([np.where(known, values, 0.0), known, np.ones((len(rows), 1))])
    for side, sign in ((old, -1.0), (new, 1.0)):
        if side is None:
            continue
        code_of: dict[str | None, int] = {None: -1}  # label -> a small integer, without sorting strings
        codes = np.fromiter((code_of.setdefault(label, len(code_of) - 1) for label in side), dtype=np.int64,
                            count=len(side))[inside][by_row]
        named = codes >= 0
        if not named.any():
            continue
        block = cells[named]
        totals = np.stack([np.bincount(codes[named], weights=block[:, j], minlength=len(code_of) - 1)
                           for j in range(block.shape[1])], axis=1)
        for label, code in code_of.items():
            if label is not None and totals[code, -1] > 0:
                current = table.get(label)
                table[label] = sign * totals[code] if current is None else current + sign * totals[code]


def _encode_sums(table: dict[str, np.ndarray]) -> str:
    return json.dumps({"labels": list(table), "sums": [sums.tolist() for sums in table.values()]})


def _decode_sums(text: str) -> dict[str, np.ndarray]:
    document = json.loads(text)
    return {label: np.asarray(sums, dtype=np.float64)
            for label, sums in zip(document["labels"], document["sums"], strict=True)}


def read_settings(marker: Path) -> dict[str, Any]:
    """The validated contents of ``workspace.json``: ``format`` (an integer, at most this curato's) and
    ``catalog`` (a URL); WorkspaceError naming the field and the expected form otherwise."""
    expected = f'expected {{"format": {WORKSPACE_FORMAT}, "catalog": "{DEFAULT_CATALOG}"}}'
    try:
        settings = json.loads(marker.read_text())
    except OSError as error:
        raise storage_error(error, "reading the workspace settings") from error
    except ValueError as error:
        raise WorkspaceError(f"{marker}: unreadable settings ({error}); restore it ({expected})") from error
    if not isinstance(settings, dict):
        raise WorkspaceError(f"{marker}: settings must be a JSON object, found {type(settings).__name__}; "
                             f"restore it ({expected})")
    version = settings.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WorkspaceError(f"{marker}: 'format' must be a positive integer, found {version!r}; restore it "
                             f"({expected})")
    if version > WORKSPACE_FORMAT:
        raise WorkspaceError(f"{marker}: workspace format {version} is newer than this curato's "
                             f"({WORKSPACE_FORMAT}); upgrade curato")
    catalog = settings.get("catalog")
    if not isinstance(catalog, str) or "://" not in catalog:
        raise WorkspaceError(f"{marker}: 'catalog' must be a database URL, found {catalog!r}; restore it "
                             f"({expected})")
    return settings


def _catalog_url(stored: str, root: Path) -> str | URL:
    """The catalog URL of ``workspace.json`` for the workspace at ``root`` (``{workspace}`` is the folder).

    A SQLite file inside the workspace becomes a URL object, so that folder names with ``?``, ``#`` or ``%``
    stay a path rather than being read as URL syntax.
    """
    prefix = f"sqlite:///{WORKSPACE_PLACEHOLDER}/"
    if stored.startswith(prefix):
        return URL.create("sqlite", database=str(root / stored[len(prefix):]))
    return stored.replace(WORKSPACE_PLACEHOLDER, str(root))


def _empty_catalog(path: Path) -> bool:
    """Whether ``path`` is a sound catalog without samples (left by a creation that stopped before its end)."""
    catalog = Catalog(URL.create("sqlite", database=str(path)))
    try:
        catalog.verify()
        return catalog.sample_count() == 0
    except WorkspaceError:
        return False
    finally:
        catalog.close()


def _portable_url(url: str, root: Path) -> str:
    """Store SQLite paths inside the workspace relative to it, so the folder can be moved."""
    return url.replace(str(root), WORKSPACE_PLACEHOLDER) if url.startswith("sqlite:") else url
