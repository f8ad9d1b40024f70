"""Bounded memory at scale: what the checks refuse up front instead of being killed, and the copies they skip.

The large inputs here are broadcast views (one real row repeated): they cost no memory, so the refusal is
tested at sizes this machine cannot hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curato import find_issues
from curato.checks.data import AuditData
from curato.checks.label_issues import find_label_issues, label_posterior
from curato.errors import InputError
from curato.models.oof import varying_dimensions
from curato.neighbors import knn
from curato.system import available_memory, require_memory


def test_available_memory_is_a_positive_number_below_the_machine_total() -> None:
    room = available_memory()
    assert room is not None and room > 0
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1]) * 1024
    assert room <= total


def _memory_files(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_available_memory_is_capped_by_a_cgroup_limit_less_its_reclaimable_cache(tmp_path: Path,
                                                                                layout: str) -> None:
    # The kernel's two cgroup layouts as files (this machine runs one of them; containers elsewhere the other).
    gib = 1024**3
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {64 * gib // 1024} kB\nMemAvailable: {48 * gib // 1024} kB\n")
    root = tmp_path / "cgroup"
    if layout == "v2":
        _memory_files(root, {"memory.max": f"{8 * gib}\n", "memory.current": f"{5 * gib}\n",
                             "memory.stat": f"anon {3 * gib}\ninactive_file {gib}\nactive_file {gib}\n"})
    else:
        _memory_files(root / "memory", {"memory.limit_in_bytes": f"{8 * gib}\n",
                                        "memory.usage_in_bytes": f"{5 * gib}\n",
                                        "memory.stat": f"inactive_file 7\ntotal_inactive_file {gib}\n"})
    assert available_memory(root, meminfo) == 4 * gib  # 8 limit - (5 used - 1 reclaimable)
    full = {"v2": (root, "memory.current", "memory.stat", "inactive_file"),
            "v1": (root / "memory", "memory.usage_in_bytes", "memory.stat", "total_inactive_file")}[layout]
    (full[0] / full[1]).write_text(f"{9 * gib}\n")  # over the limit, nothing reclaimable: no room, not "no limit"
    (full[0] / full[2]).write_text(f"{full[3]} 0\n")
    assert available_memory(root, meminfo) == 0
    (full[0] / full[1]).write_text(f"{5 * gib}\n")
    (full[0] / full[2]).write_text(f"{full[3]} {gib}\n")
    # No limit: v2 says "max", v1 a number near 2**63; then the machine's own room counts.
    if layout == "v2":
        (root / "memory.max").write_text("max\n")
    else:
        (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert available_memory(root, meminfo) == 48 * gib
    assert available_memory(tmp_path / "missing", tmp_path / "missing-meminfo") is None


def test_require_memory_says_what_needs_how_much_in_one_line() -> None:
    require_memory(1024, "a small thing", "nothing to do")  # fits: no error
    with pytest.raises(InputError) as error:
        require_memory(10**15, "the example stage", "use a bigger machine")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("the example stage needs about 931322.6 GB of memory but ")
    assert message.endswith("available; use a bigger machine")


def test_knn_over_more_rows_than_memory_holds_refuses_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    import curato.system

    monkeypatch.setattr(curato.system, "available_memory", lambda: 16 * 1024**3)  # whatever host runs the test
    row = np.random.default_rng(0).normal(size=(1, 256)).astype(np.float64)
    huge = np.broadcast_to(row, (200_000_000, 256))  # a float32 copy alone would be 205 GB
    with pytest.raises(InputError, match=r"float32 copy of 200,000,000 x 256 embeddings needs about 381\.5 GB"):
        knn(huge, 10)


def test_label_issues_over_more_classes_than_memory_holds_refuse_before_allocating(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import curato.system

    monkeypatch.setattr(curato.system, "available_memory", lambda: 16 * 1024**3)
    n, k = 10_000_000, 20_000  # ImageNet-21k-sized label space: 1.6 TB per (n, k) float64 matrix
    probs = np.broadcast_to(np.full((1, k), 1.0 / k), (n, k))
    labels = np.broadcast_to(np.zeros(1, dtype=np.int64), (n,))
    with pytest.raises(InputError, match=r"label issues over 10,000,000 samples x 20,000 classes needs about"):
        find_label_issues(labels, probs)


def test_label_posterior_in_blocks_equals_one_pass(monkeypatch: pytest.MonkeyPatch,
                                                    fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    """Rows are independent: blocks of 300 rows give the same posteriors as one block of every row."""
    import curato.checks.label_issues as label_issues
    from curato.models.oof import out_of_fold_probabilities

    images, labels = fashion_mnist
    probs = out_of_fold_probabilities(images[:1000].reshape(1000, -1).astype(np.float32), labels[:1000], seed=0)
    noise = np.full((10, 10), 0.01) + np.eye(10) * 0.9
    whole = label_posterior(labels[:1000], probs, noise)
    monkeypatch.setattr(label_issues, "POSTERIOR_BLOCK", 300)
    np.testing.assert_allclose(label_posterior(labels[:1000], probs, noise), whole, rtol=1e-12, atol=1e-15)


def test_varying_dimensions_in_blocks_matches_the_whole_matrix_statistics(
        fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = fashion_mnist
    pixels = images[:, ::2, ::2].reshape(len(images), -1).astype(np.float32)  # the corner pixels are mostly 0
    tiled = np.concatenate([pixels] * 35)  # 70,000 rows: more than one block
    expected = tiled.astype(np.float64).std(axis=0) > np.maximum(1e-12, 1e-5 * np.abs(tiled.mean(axis=0)))
    found = varying_dimensions(tiled)
    np.testing.assert_array_equal(found, expected)
    assert 0 < found.sum() < pixels.shape[1]


def test_embeddings_of_every_row_are_not_copied_for_the_checks() -> None:
    embeddings = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    data = AuditData(sample_ids=np.arange(50).astype(str), labels=np.zeros(50, dtype=object), embeddings=embeddings)
    assert data.embeddings_at(np.arange(50)) is embeddings
    subset = data.embeddings_at(np.arange(1, 50))
    assert subset.base is not embeddings and np.array_equal(subset, embeddings[1:])
    assert np.array_equal(data.embeddings_at(np.array([0, 2, 1])), embeddings[[0, 2, 1]])


def test_audit_of_memory_mapped_features_matches_in_memory_features(
        tmp_path: Path, fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    """The scale benchmark reads features memory-mapped; the findings must not depend on that."""
    images, labels = fashion_mnist[0][:1000], fashion_mnist[1][:1000]
    rng = np.random.default_rng(0)
    features = images.reshape(len(images), -1).astype(np.float32) @ rng.normal(size=(784, 64)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    np.save(tmp_path / "features.npy", features)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    checks = ["label_issues", "duplicates", "outliers"]
    in_memory = find_issues(labels=labels, features=features, checks=checks)
    from_disk = find_issues(labels=labels, features=mapped, checks=checks)
    for a, b in zip(in_memory.findings, from_disk.findings, strict=True):
        assert a.check == b.check
        np.testing.assert_array_equal(a.flagged, b.flagged)
    assert sum(f.count for f in in_memory.findings) > 0


def test_a_cpu_share_caps_the_cpus_of_its_own_thread_only() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from curato.system import available_cpus, cpu_share

    everything = available_cpus()
    with cpu_share(1):
        assert available_cpus() == 1
        with ThreadPoolExecutor(1) as pool:  # another thread (another lane) keeps its own answer
            assert pool.submit(available_cpus).result() == everything
        with cpu_share(64):
            assert available_cpus() == everything  # a share never raises the machine's own limit
    assert available_cpus() == everything
