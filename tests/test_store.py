"""The feature store keeps vectors durable across crashes and notices stale rows."""

from __future__ import annotations

import io
import threading
import tracemalloc

import numpy as np
import pytest

from curato.errors import WorkspaceError
from curato.featurestore import FeatureStore


def _meta(version: int = 1) -> dict:
    return {"settings": {"model": "m", "version": version}}


def test_parts_merge_newest_row_wins_and_sorted(tmp_path):
    store = FeatureStore(tmp_path)
    store.write_part("emb", ["b", "a"], ["hb", "ha"], np.array([[2, 2], [1, 1]], dtype=np.float32))
    store.write_part("emb", ["c", "a"], ["hc", "ha2"], np.array([[3, 3], [9, 9]], dtype=np.float32))
    features = store.finalize("emb", _meta())
    assert features.ids.tolist() == ["a", "b", "c"]
    assert features.vectors.tolist() == [[9, 9], [2, 2], [3, 3]]
    assert features.hashes.tolist() == ["ha2", "hb", "hc"]
    assert store.pending_parts("emb") == []
    assert isinstance(store.load("emb").vectors, np.memmap)



def test_finalize_holds_one_part_of_vectors_at_a_time(tmp_path):
    """Thumbnails of 1M images were ~9 GB in memory when merged: every part at once, as float32, copied twice.
    Merging now reads one part's vectors at a time into a file-backed array; the result is unchanged."""
    store = FeatureStore(tmp_path)
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, size=(2_000, 768), dtype=np.uint8) for _ in range(20)]  # 30 MB in all
    for number, vectors in enumerate(parts):
        ids = [f"s{number:02d}-{row:04d}" for row in range(len(vectors))]
        store.write_part("thumbs", ids, ["h"] * len(ids), vectors)
    tracemalloc.start()
    merged = store.finalize("thumbs", {"settings": {}}, dtype="uint8")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40e6, f"finalize held {peak / 1e6:.0f} MB for 30 MB of uint8 parts"  # was 312 MB, now ~21
    assert merged.vectors.dtype == np.uint8 and merged.vectors.shape == (40_000, 768)
    np.testing.assert_array_equal(merged.vectors, np.concatenate(parts))  # ids sort in part order here


def test_unfinished_parts_count_as_done_for_resume(tmp_path):
    store = FeatureStore(tmp_path)
    store.save("emb", ["a"], ["ha"], np.ones((1, 3)), _meta())
    store.write_part("emb", ["b"], ["hb"], np.ones((1, 3)))  # a crash happens after this chunk
    reopened = FeatureStore(tmp_path)
    assert reopened.done_hashes("emb", meta=_meta()) == {"a": "ha", "b": "hb"}
    assert reopened.load("emb").ids.tolist() == ["a"]  # readers only see the complete generation


def test_changed_settings_discard_old_rows(tmp_path):
    store = FeatureStore(tmp_path)
    store.save("emb", ["a", "b"], ["ha", "hb"], np.ones((2, 2)), _meta(1))
    assert store.done_hashes("emb", meta=_meta(2)) == {}
    features = store.save("emb", ["a"], ["ha"], np.zeros((1, 2)), _meta(2))
    assert features.ids.tolist() == ["a"]
    assert len(list(store.folder("emb").glob("*.npy"))) == 3  # old generation removed


def test_keep_ids_drops_removed_samples_and_align(tmp_path):
    store = FeatureStore(tmp_path)
    store.write_part("emb", ["a", "b", "c"], ["1", "2", "3"], np.arange(6, dtype=np.float32).reshape(3, 2))
    features = store.finalize("emb", _meta(), keep_ids=["a", "c"])
    vectors, found = features.align(["c", "zz", "a"])
    assert found.tolist() == [True, False, True]
    assert vectors.tolist() == [[4, 5], [0, 0], [0, 1]]


@pytest.mark.parametrize("kind", ["list", "set", "keys", "object array", "unicode array", "bytes array"])
def test_keep_ids_of_any_collection_keep_the_same_rows(tmp_path, kind):
    """The catalog hands out object arrays; cast to bytes they took their first items' width (every id cut to
    two bytes, every row dropped)."""
    kept = ["alpha", "beta", "résumé"]
    given = {"list": kept, "set": set(kept), "keys": dict.fromkeys(kept).keys(),
             "object array": np.asarray(kept, dtype=object), "unicode array": np.asarray(kept),
             "bytes array": np.asarray([k.encode() for k in kept])}[kind]
    store = FeatureStore(tmp_path)
    store.write_part("emb", ["alpha", "beta", "gamma", "résumé"], ["1", "2", "3", "4"],
                     np.arange(8, dtype=np.float32).reshape(4, 2))
    features = store.finalize("emb", _meta(), keep_ids=given)
    assert features.ids.tolist() == sorted(kept)


def test_missing_feature_set_names_the_fix(tmp_path):
    with pytest.raises(WorkspaceError, match="curato embed"):
        FeatureStore(tmp_path).load("nothing")


def test_parts_from_two_writers_at_once_are_all_kept(tmp_path):
    """Each chunk claims its own number: no writer overwrites or loses another's (before: 38 of 100 kept)."""
    store = FeatureStore(tmp_path)

    def write(worker: int) -> None:
        for step in range(25):
            store.write_part("emb", [f"w{worker}-{step}"], ["h"], np.full((1, 2), worker, dtype=np.float32))

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.pending_parts("emb")) == 100
    assert len(store.finalize("emb", _meta())) == 100
    assert not [path for path in tmp_path.rglob("*") if path.name.endswith(".tmp")]


def test_damaged_feature_set_names_the_folder_and_the_fix(tmp_path):
    store = FeatureStore(tmp_path)
    store.save("emb", ["a", "b"], ["ha", "hb"], np.ones((2, 2)), _meta())
    next(store.folder("emb").glob("ids-*.npy")).unlink()
    with pytest.raises(WorkspaceError, match=r"feature set 'emb' is damaged: ids-1.npy is missing; delete that "
                                             r"folder and re-run `curato embed --embedder emb`"):
        store.load("emb")
    assert list(store.problems()) == ["emb"]
    (store.folder("emb") / "meta.json").write_text("{")
    with pytest.raises(WorkspaceError, match=r"meta\.json cannot be read"):
        store.names()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_finalize_writes_the_files_the_unicode_merge_wrote(tmp_path):
    """Ids and hashes are merged as bytes now; the files must be what merging them as unicode strings wrote: newest
    row wins, id order, dropped ids gone, and each file as wide as the widest id or hash of every block."""
    store = FeatureStore(tmp_path)
    rows: list[tuple[str, str, list[float]]] = []

    def part(ids, hashes, vectors):
        store.write_part("emb", ids, hashes, np.asarray(vectors, dtype=np.float32))
        rows.extend(zip(ids, hashes, vectors, strict=True))

    part(["b", "a", "résumé ü"], ["h-b", "h-a", "h-é"], [[1, 1], [2, 2], [3, 3]])
    part(["a", "a-long-name-dropped-later"], ["h-a2-longer", "h-x"], [[4, 4], [5, 5]])
    store.finalize("emb", _meta(), keep_ids=["a", "b", "résumé ü", "zz"])  # the complete set of the next merge
    rows = [row for row in rows if row[0] != "a-long-name-dropped-later"]
    part(["c", "b"], ["h-c", "h-b2"], [[6, 6], [7, 7]])
    store.finalize("emb", _meta(), keep_ids=np.asarray(["a", "b", "c", "résumé ü"]))
    newest = {sid: (digest, vector) for sid, digest, vector in rows}
    order = sorted(newest)
    assert order == ["a", "b", "c", "résumé ü"]
    folder = store.folder("emb")
    # widths: the widest id and hash of the blocks merged (complete set kept its widths from the first merge)
    ids = np.asarray(order, dtype="<U25")
    hashes = np.asarray([newest[sid][0] for sid in order], dtype="<U11")
    vectors = np.asarray([newest[sid][1] for sid in order], dtype=np.float32)
    assert (folder / "ids-2.npy").read_bytes() == _npy_bytes(ids)
    assert (folder / "hashes-2.npy").read_bytes() == _npy_bytes(hashes)
    assert (folder / "vectors-2.npy").read_bytes() == _npy_bytes(vectors)


def test_done_lookup_answers_as_done_hashes(tmp_path):
    store = FeatureStore(tmp_path)
    store.save("emb", ["a", "b", "é"], ["ha", "hb", "hé"], np.ones((3, 2)), _meta())
    store.write_part("emb", ["b", "c"], ["hb2", "hc"], np.ones((2, 2)))
    done = store.done_hashes("emb", meta=_meta())
    lookup = store.done_lookup("emb", meta=_meta())
    queries = [("a", "ha"), ("b", "hb"), ("b", "hb2"), ("c", "hc"), ("é", "hé"), ("d", "hd"), ("a", None), ("", "x")]
    expected = [done.get(sid) == digest and digest is not None for sid, digest in queries]
    assert lookup.matches([q[0] for q in queries], [q[1] for q in queries]).tolist() == expected
    other = store.done_lookup("emb", meta=_meta(2))  # other settings: only the pending part counts
    assert len(other) == len(store.done_hashes("emb", meta=_meta(2))) == 2
    assert other.matches(["a", "c"], ["ha", "hc"]).tolist() == [False, True]


def test_finalize_holds_ids_and_hashes_as_bytes(tmp_path):
    """A merge of 200k rows: ids and 40-character hashes were held as unicode (4 bytes a character) and copied
    several times (1,087 traced bytes a row); as bytes, ~340."""
    store = FeatureStore(tmp_path)
    rows, per_part = 200_000, 20_000
    for start in range(0, rows, per_part):
        ids = [f"class-{i % 10}/{i:08d}.png" for i in range(start, start + per_part)]
        hashes = [f"{i:040x}" for i in range(start, start + per_part)]
        store.write_part("props", ids, hashes, np.zeros((per_part, 1), dtype=np.float32))
    keep = [f"class-{i % 10}/{i:08d}.png" for i in range(0, rows, 2)]
    tracemalloc.start()
    merged = store.finalize("props", _meta(), keep_ids=keep)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(merged) == rows // 2 and merged.hashes[0] == f"{0:040x}"
    assert peak / rows < 500, f"finalize held {peak / rows:.0f} bytes a row"
