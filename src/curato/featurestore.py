"""The feature store: per-name arrays of vectors keyed by sample id, memory-mapped on read.

Layout of ``<workspace>/features/<name>/``:

- ``vectors-G.npy``  (n, d) float16 or float32, rows in the order of ``ids-G.npy``
- ``ids-G.npy``      sample ids (unicode)
- ``hashes-G.npy``   content hash of each sample when its row was computed (staleness check)
- ``meta.json``      what produced the vectors (settings, columns, dtype, dim) and the generation G
- ``parts/``         chunks written while a computation runs; a crash leaves them for the resume

A new generation's arrays are written first and ``meta.json`` is renamed over the old one last, so
a crash at any point leaves either the old or the new complete set, never a mix. Temporary files carry the
writer's pid and a random token, and a part claims its number with a hard link (never by overwriting), so two
processes cannot overwrite each other's files even without the workspace lock. A failed write (full disk,
read-only folder) is a WorkspaceError naming the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curato.errors import WorkspaceError, WorkspaceNotReadyError, storage_error

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
PROPERTIES = "properties"  # image properties (columns: curato.features.properties.PROPERTY_COLUMNS)
THUMBNAILS = "thumbnails"  # small colour thumbnails (layout: curato.features.thumbnails.THUMBNAIL_LAYOUT)
OOF_PREFIX = "oof-probs"  # out-of-fold class probabilities, one set per embedder: "oof-probs-<embedder>"


def store_key(name: str) -> str:
    """The folder name for a feature set (``timm:resnet18`` -> ``timm_resnet18``)."""
    return _SAFE_NAME.sub("_", name).strip("_") or "features"


@dataclass
class FeatureSet:
    """Vectors of one feature set, aligned with ``ids``."""

    name: str
    ids: np.ndarray
    vectors: np.ndarray
    hashes: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)

    def align(self, sample_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``sample_ids``: (vectors, found mask). Missing ids get zero rows, mask False."""
        position = {sid: i for i, sid in enumerate(self.ids.tolist())}
        index = np.array([position.get(sid, -1) for sid in sample_ids], dtype=np.int64)
        found = index >= 0
        out = np.zeros((len(sample_ids), self.vectors.shape[1]), dtype=self.vectors.dtype)
        out[found] = self.vectors[index[found]]
        return out, found


def temporary_name(path: Path) -> Path:
    """A temporary file beside ``path`` that no other writer (process or thread) uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_atomically(path: Path, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file, flush it to disk, rename it over ``path``.

    Readers see the old file or the new one, never a part; a failure removes the temporary file.
    """
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_save(path: Path, array: np.ndarray) -> None:
    write_atomically(path, lambda handle: np.save(handle, array))


def _atomic_json(path: Path, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, indent=2, sort_keys=True, default=str)
    write_atomically(path, lambda handle: handle.write(body), binary=False)


@contextmanager
def _writing(what: str, folder: Path) -> Iterator[None]:
    """Turn a failed write of the store's files (full disk, read-only folder) into a one-line WorkspaceError."""
    try:
        yield
    except OSError as error:
        doing = f"writing {what}" if error.filename else f"writing {what} in {folder}"
        raise storage_error(error, doing, near=folder if folder.exists() else None) from error


class FeatureStore:
    """All feature sets of a workspace."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)  # created by the first write: opening a read-only workspace writes nothing

    def folder(self, name: str) -> Path:
        """The folder holding feature set ``name``."""
        return self.root / store_key(name)

    def _meta(self, name: str) -> dict[str, Any] | None:
        return _read_meta(self.folder(name) / "meta.json")

    def _arrays(self, name: str, meta: dict[str, Any], *, mmap: bool) -> tuple[np.ndarray, ...]:
        folder, generation = self.folder(name), meta["generation"]
        mode = "r" if mmap else None  # ids and hashes too: at 10M samples they are GBs that `info` need not read
        return (
            np.load(folder / f"ids-{generation}.npy", mmap_mode=mode),
            np.load(folder / f"hashes-{generation}.npy", mmap_mode=mode),
            np.load(folder / f"vectors-{generation}.npy", mmap_mode=mode),
        )

    def _complete_arrays(self, name: str, meta: dict[str, Any], *, mmap: bool
                         ) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
        """(meta, arrays) of the complete set; follows a writer that swaps in a newer generation meanwhile."""
        for _attempt in range(5):
            try:
                return meta, self._arrays(name, meta, mmap=mmap)
            except FileNotFoundError as error:
                newer = self._meta(name)
                if newer is None or newer.get("generation") == meta.get("generation"):
                    raise _damaged(self.folder(name), name, f"{Path(str(error.filename)).name} is missing") \
                        from error
                meta = newer
            except (ValueError, OSError, EOFError) as error:
                raise _damaged(self.folder(name), name, f"an array file cannot be read ({error})") from error
        raise _damaged(self.folder(name), name, "its generation kept changing while it was read")

    def names(self) -> list[str]:
        """Names of complete feature sets."""
        found = []
        for path in sorted(self.root.glob("*/meta.json")):
            meta = _read_meta(path)
            if meta is not None:
                found.append(meta["name"])
        return found

    def has(self, name: str) -> bool:
        """Whether a complete feature set ``name`` exists."""
        return self._meta(name) is not None

    def load(self, name: str, *, mmap: bool = True) -> FeatureSet:
        """Open feature set ``name`` (memory-mapped by default)."""
        meta = self._meta(name)
        if meta is None:
            raise WorkspaceNotReadyError(
                f"no features named {name!r} in {self.root}; run `curato embed --embedder {name}` first"
            )
        meta, (ids, hashes, vectors) = self._complete_arrays(name, meta, mmap=mmap)
        if not len(ids) == len(hashes) == len(vectors):
            raise _damaged(self.folder(name), name, f"{len(ids)} ids, {len(hashes)} hashes and {len(vectors)} "
                                                    "vector rows do not match")
        return FeatureSet(name=name, ids=ids, vectors=vectors, hashes=hashes, meta=meta)

    def pending_parts(self, name: str) -> list[Path]:
        """Chunk files of an unfinished computation of ``name``."""
        return sorted((self.folder(name) / "parts").glob("part-*.npz"))

    def _complete_if_same(self, name: str, meta: dict[str, Any] | None) -> tuple[np.ndarray, ...] | None:
        stored = self._meta(name)
        if stored is None or (meta is not None and stored.get("settings") != meta.get("settings")):
            return None
        return self._complete_arrays(name, stored, mmap=True)[1]

    def done_hashes(self, name: str, *, meta: dict[str, Any] | None = None) -> dict[str, str]:
        """sample_id -> content hash for rows already computed (complete set plus pending parts).

        When ``meta`` is given and the complete set was made with other settings, it does not count.
        """
        done: dict[str, str] = {}
        complete = self._complete_if_same(name, meta)
        if complete is not None:
            done.update(zip(complete[0].tolist(), complete[1].tolist(), strict=True))
        for part in self.pending_parts(name):
            with np.load(part) as data:
                done.update(zip(data["ids"].tolist(), data["hashes"].tolist(), strict=True))
        return done

    def done_lookup(self, name: str, *, meta: dict[str, Any] | None = None) -> DoneHashes:
        """What :meth:`done_hashes` says, as a sorted table of encoded ids and hashes to query chunk by chunk:
        ~60 bytes a stored row where the dict of Python strings held ~250 (an ingest of 10M re-reads them all)."""
        blocks = []
        complete = self._complete_if_same(name, meta)
        if complete is not None:
            blocks.append((complete[0], complete[1]))
        for part in self.pending_parts(name):
            with np.load(part) as data:
                blocks.append((data["ids"], data["hashes"]))
        if not blocks:
            return DoneHashes(np.zeros(0, dtype="S1"), np.zeros(0, dtype="S1"))
        ids, hashes, _widths = _encoded_blocks(blocks)
        keep = _newest_rows(ids)
        return DoneHashes(ids[keep], hashes[keep])

    def write_part(self, name: str, ids: Sequence[str], hashes: Sequence[str], vectors: np.ndarray) -> Path:
        """Durably store one computed chunk; it survives a crash and is merged by ``finalize``."""
        parts = self.folder(name) / "parts"
        with _writing(f"feature set {name!r}", parts):
            parts.mkdir(parents=True, exist_ok=True)
            tmp = temporary_name(parts / "part.npz")
            try:
                with open(tmp, "wb") as handle:
                    np.savez(handle, ids=np.asarray(ids, dtype=str), hashes=np.asarray(hashes, dtype=str),
                             vectors=np.asarray(vectors))
                    handle.flush()
                    os.fsync(handle.fileno())
                existing = self.pending_parts(name)
                number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
                for _attempt in range(1000):  # claim the next free number: a link never replaces a file
                    path = parts / f"part-{number:06d}.npz"
                    try:
                        os.link(tmp, path)
                        return path
                    except FileExistsError:
                        number += 1
                raise WorkspaceError(f"{parts}: could not claim a part number; run the command again")
            finally:
                tmp.unlink(missing_ok=True)

    def discard_parts(self, name: str) -> None:
        """Forget an unfinished computation of ``name``."""
        shutil.rmtree(self.folder(name) / "parts", ignore_errors=True)

    def problems(self) -> dict[str, list[str]]:
        """Per feature-set folder, what is wrong with its files (for ``curato check``); sound folders are left out.

        Folders with only ``parts/`` (an unfinished first computation) are not damage: the next run resumes.
        """
        found: dict[str, list[str]] = {}
        if not self.root.is_dir():
            return found
        for folder in sorted(path for path in self.root.iterdir() if path.is_dir()):
            meta_path = folder / "meta.json"
            if not meta_path.exists():
                continue
            try:
                meta = _read_meta(meta_path)
                if meta is not None:
                    self.load(meta["name"], mmap=True)
            except WorkspaceError as error:
                found[folder.name] = [str(error)]
        return found

    def finalize(self, name: str, meta: dict[str, Any], *, keep_ids: Sequence[str] | None = None,
                 dtype: str = "float32") -> FeatureSet:
        """Merge the complete set and pending parts (newest row wins) into a new generation.

        ``keep_ids`` drops rows of samples no longer in the catalog; a complete set made with
        other settings is discarded.
        """
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        # Ids and hashes of every block are held as UTF-8/ASCII bytes (a 40-character hash: 40 bytes, not 160 as
        # unicode), vectors read one block at a time as they are written, so a finalize holds neither the whole
        # set's vectors (1M thumbnails were ~9 GB as float32 copies) nor unicode copies of its ids and hashes.
        vector_blocks: list[Callable[[], np.ndarray]] = []
        blocks: list[tuple[np.ndarray, np.ndarray]] = []
        complete = self._complete_if_same(name, meta)
        if complete is not None:
            blocks.append((complete[0], complete[1]))
            vector_blocks.append(lambda vectors=complete[2]: vectors)
        for part in self.pending_parts(name):
            with np.load(part) as data:
                blocks.append((data["ids"], data["hashes"]))
            vector_blocks.append(lambda part=part: _part_vectors(part))
        if not blocks:
            workspace = self.root.parent
            raise WorkspaceError(
                f"nothing computed for {name!r}: no sample could be read (have the data files moved?); "
                f"`curato check -w {workspace}` lists missing files; re-ingest the data from where it is now")
        starts = np.cumsum([0] + [len(block_ids) for block_ids, _ in blocks])
        ids, hashes, (id_width, hash_width) = _encoded_blocks(blocks)
        del blocks
        keep = _newest_rows(ids)  # newest row wins, in id order
        if keep_ids is not None:
            wanted = np.sort(encoded_ids(keep_ids))
            keep = keep[_members(ids[keep], wanted)]
            del wanted
        previous = self._meta(name)
        generation = (previous or {}).get("generation", 0) + 1
        with _writing(f"feature set {name!r}", folder):
            dim = _save_rows(folder / f"vectors-{generation}.npy", vector_blocks, starts, keep, dtype)
            _save_text(folder / f"hashes-{generation}.npy", hashes, keep, hash_width)
            _save_text(folder / f"ids-{generation}.npy", ids, keep, id_width)
            full_meta = {**meta, "name": name, "generation": generation, "dim": dim,
                         "dtype": dtype, "count": len(keep)}
            _atomic_json(folder / "meta.json", full_meta)
            for stale in folder.glob("*.npy"):
                if not stale.stem.endswith(f"-{generation}"):
                    stale.unlink(missing_ok=True)
            self.discard_parts(name)
        return self.load(name)

    def save(self, name: str, ids: Sequence[str], hashes: Sequence[str], vectors: np.ndarray,
             meta: dict[str, Any], *, dtype: str = "float32") -> FeatureSet:
        """Write rows for ``ids`` (replacing older rows of the same ids) as a new generation."""
        self.write_part(name, ids, hashes, np.asarray(vectors))
        return self.finalize(name, meta, dtype=dtype)


@dataclass
class DoneHashes:
    """Stored content hash per sample id (:meth:`FeatureStore.done_lookup`): ids and hashes as bytes, sorted by id."""

    ids: np.ndarray
    hashes: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self, sample_ids: Sequence[str], hashes: Sequence[str | None]) -> np.ndarray:
        """Per sample: whether a row is stored for it with exactly this hash (False for a None hash)."""
        found = np.zeros(len(sample_ids), dtype=bool)
        if not len(self.ids) or not len(sample_ids):
            return found
        wanted = _encoded(np.asarray(sample_ids, dtype=str))
        at = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        given = _encoded(np.asarray([h or "" for h in hashes], dtype=str))
        return (self.ids[at] == wanted) & (self.hashes[at] == given) & (given != b"")


def encoded_ids(values: Any) -> np.ndarray:
    """Sample ids (a bytes or unicode array, or any collection of str: list, set, object array) as a bytes
    array (UTF-8, whose byte order is the strings' code point order)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "SU":
        return _encoded(values)
    listed = list(values)
    return _encoded(np.asarray(listed, dtype=str) if listed else np.zeros(0, dtype="U1"))


def _encoded(values: np.ndarray) -> np.ndarray:
    """Unicode strings as bytes: ASCII when they are (one C pass), else UTF-8. Byte order of UTF-8 is code point
    order, so sorting and searching the bytes agrees with the strings."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return values
    if values.dtype.kind != "U":  # an object array would be cast to bytes at its first items' width
        raise TypeError(f"ids must be strings, got an array of {values.dtype}")
    try:
        return values.astype(f"S{max(1, values.dtype.itemsize // 4)}")
    except UnicodeEncodeError:
        return np.char.encode(values, "utf-8")


def _decoded(values: np.ndarray, width: int | None = None) -> np.ndarray:
    """The inverse of :func:`_encoded`, as unicode of ``width`` characters (default: the bytes' width)."""
    width = width or max(1, values.dtype.itemsize)
    try:
        return values.astype(f"U{width}")
    except UnicodeDecodeError:
        return np.char.decode(values, "utf-8").astype(f"U{width}")


def _encoded_blocks(blocks: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(ids, hashes) of the blocks laid end to end as bytes, and the unicode widths (characters) that
    concatenating them as unicode would have had: the files keep the widths they always had."""
    widths = (max(max(1, np.asarray(i).dtype.itemsize // 4) for i, _ in blocks),
              max(max(1, np.asarray(h).dtype.itemsize // 4) for _, h in blocks))
    ids = np.concatenate([_encoded_rows(block_ids) for block_ids, _ in blocks])
    hashes = np.concatenate([_encoded_rows(block_hashes) for _, block_hashes in blocks])
    return ids, hashes, widths


def _encoded_rows(values: np.ndarray) -> np.ndarray:
    """:func:`_encoded` of a (possibly memory-mapped) array, ``_ROW_BLOCK`` rows at a time."""
    if len(values) <= _ROW_BLOCK:
        return _encoded(np.asarray(values))
    pieces = [_encoded(np.asarray(values[start:start + _ROW_BLOCK])) for start in range(0, len(values), _ROW_BLOCK)]
    return np.concatenate(pieces)


def _newest_rows(ids: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each id (the newest row wins), in id order."""
    _, first_in_reversed = np.unique(ids[::-1], return_index=True)
    return len(ids) - 1 - first_in_reversed


def _members(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Per value, whether it is in ``sorted_set`` (a sorted array of the same kind)."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _save_text(path: Path, values: np.ndarray, keep: np.ndarray, width: int) -> None:
    """Write ``values[keep]`` (bytes from :func:`_encoded`) as a ``.npy`` of unicode ``width``, atomically and
    ``_ROW_BLOCK`` rows at a time: the same file ``np.save`` writes for the unicode array."""
    tmp = temporary_name(path)
    try:
        _create_npy(tmp, np.dtype(f"<U{width}"), (len(keep),))
        for start in range(0, len(keep), _ROW_BLOCK):
            _write_rows(tmp, np.arange(start, min(start + _ROW_BLOCK, len(keep))),
                        _decoded(values[keep[start:start + _ROW_BLOCK]], width))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _part_vectors(part: Path) -> np.ndarray:
    with np.load(part) as data:
        return data["vectors"]


_ROW_BLOCK = 65_536


def _save_rows(path: Path, blocks: list[Callable[[], np.ndarray]], starts: np.ndarray, keep: np.ndarray,
               dtype: str) -> int:
    """Write rows ``keep`` (indices into the blocks laid end to end) as one ``.npy`` of ``dtype``, atomically,
    loading one block at a time; returns the row width. Each row goes through float32 as it always has."""
    block_of = np.searchsorted(starts, keep, side="right") - 1
    tmp = temporary_name(path)
    dim: int | None = None
    try:
        for number, load in enumerate(blocks):
            positions = np.flatnonzero(block_of == number)
            if dim is not None and not len(positions):
                continue
            vectors = load()
            if dim is None:
                dim = int(vectors.shape[1])
                _create_npy(tmp, np.dtype(dtype), (len(keep), dim))
            rows = keep[positions] - starts[number]
            for start in range(0, len(positions), _ROW_BLOCK):
                picked = np.asarray(vectors[rows[start:start + _ROW_BLOCK]], dtype=np.float32)
                _write_rows(tmp, positions[start:start + _ROW_BLOCK], picked.astype(dtype))
        assert dim is not None  # at least one block exists
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return dim
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """An ``.npy`` of zeros of this dtype and shape (sparse on disk until written), not left mapped."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    del out


def _write_rows(path: Path, positions: np.ndarray, rows: np.ndarray) -> None:
    """Write ``rows`` at ``positions`` of the ``.npy`` at ``path`` through a mapping opened for this block only:
    pages written through a mapping count in the process's resident memory while it stays mapped (the 0.77 GB
    of 1M thumbnails did, at the end of an ingest); unmapped, they are the page cache's to write back."""
    out = np.load(path, mmap_mode="r+")
    try:
        out[positions] = rows
        out.flush()
    finally:
        del out


def _read_meta(path: Path) -> dict[str, Any] | None:
    """A feature set's meta.json; None when absent; WorkspaceError when unreadable or incomplete."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise _damaged(path.parent, path.parent.name, f"meta.json cannot be read ({error})") from error
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) \
            or not isinstance(meta.get("generation"), int):
        raise _damaged(path.parent, path.parent.name, "meta.json lacks its name or generation")
    return meta


def _damaged(folder: Path, name: str, what: str) -> WorkspaceError:
    """The error for a feature set whose files do not fit together, with how to rebuild it."""
    if name in (PROPERTIES, THUMBNAILS):
        redo = "re-run `curato ingest` on the same source(s) to rebuild it"
    else:
        redo = f"re-run `curato embed --embedder {name}` to rebuild it"
    return WorkspaceError(f"{folder}: feature set {name!r} is damaged: {what}; delete that folder and {redo}")
