"""`curato audit` end to end on real images with planted problems: JSON schema, gating, report, export."""

from __future__ import annotations

import csv
import json
import shutil
from importlib import resources

import jsonschema
import numpy as np
import pytest
from PIL import Image

from curato.checks.duplicates import RULES
from tests.browser import chromium_page
from tests.conftest import run


@pytest.fixture(scope="module")
def audited(tmp_path_factory, fashion_mnist):
    """An image folder with an exact duplicate, a train->test leak, a truncated file and a black frame."""
    images, labels = fashion_mnist
    root = tmp_path_factory.mktemp("audit") / "data"
    names = {0: "top", 1: "trouser", 7: "sneaker", 9: "boot"}
    for split, start, per_class in (("train", 0, 40), ("test", 1000, 12)):
        for klass, name in names.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels[start:] == klass)[:per_class] + start:
                Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    train_boot = sorted((root / "train" / "boot").iterdir())
    shutil.copy(train_boot[0], root / "train" / "boot" / "copy-of-first.png")  # exact duplicate
    leaked = Image.open(train_boot[1]).resize((32, 32)).resize((28, 28))
    leaked.save(root / "test" / "boot" / "leaked.png")  # near-identical copy in the test split
    data = (train_boot[2]).read_bytes()
    (root / "train" / "boot" / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "train" / "top" / "black.png")
    workspace = root.parent / "ws"
    result = run("ingest", root, "-w", workspace)
    assert result.returncode == 0, result.stderr
    out = root.parent
    audit = run("audit", "-w", workspace, "--json", out / "audit.json", "--report", out / "report.html")
    return workspace, out, audit


def _checks(document):
    return {finding["check"]: finding for finding in document["checks"]}


def test_audit_json_validates_and_finds_planted_problems(audited):
    _, out, audit = audited
    assert audit.returncode == 0, audit.stderr
    document = json.loads((out / "audit.json").read_text())
    schema = json.loads(resources.files("curato").joinpath("schemas/audit.schema.json").read_text())
    jsonschema.validate(document, schema)
    checks = _checks(document)
    assert [i["sample_id"] for i in checks["unreadable"]["issues"]] == ["train/boot/truncated.png"]
    exact = {i["sample_id"] for i in checks["exact_duplicates"]["issues"]}
    assert "train/boot/copy-of-first.png" in exact
    leak_ids = {i["sample_id"] for i in checks["split_leakage"]["issues"]}
    assert "test/boot/leaked.png" in leak_ids and checks["split_leakage"]["severity"] == "high"
    # a near-duplicate pair says which rule accepted it, in the JSON and in the report
    leak = next(i for i in checks["split_leakage"]["issues"] if i["sample_id"] == "test/boot/leaked.png")
    assert leak["rule"] in RULES and leak["partner"].startswith("train/boot/")
    near_pairs = [pair for group in checks["near_duplicates"]["evidence"]["pairs"] for pair in group]
    assert any({pair["a"], pair["b"]} == {"test/boot/leaked.png", leak["partner"]} for pair in near_pairs)
    report = (out / "report.html").read_text()
    assert "accepted pairs: the rule that accepted each" in report and leak["rule"] in report
    assert "train/top/black.png" in {i["sample_id"] for i in checks["dark"]["issues"]}
    assert {"label_issues", "outliers", "class_imbalance", "split_health"} <= set(checks)


def test_fail_on_gates_with_exit_code(audited):
    workspace, _, _ = audited
    gated = run("audit", "-w", workspace, "--checks", "unreadable", "--fail-on", "high")
    assert gated.returncode == 1 and "unreadable" in gated.stderr
    passing = run("audit", "-w", workspace, "--checks", "imbalance", "--fail-on", "high")
    assert passing.returncode == 0, passing.stderr
    wrong = run("audit", "-w", workspace, "--checks", "nonsense")
    assert wrong.returncode == 2 and "unknown check 'nonsense'" in wrong.stderr


def test_report_renders_in_chromium(audited):
    _, out, _ = audited
    with chromium_page() as page:
        page.goto((out / "report.html").as_uri())
        rows = page.locator("#findings-table tr").count()
        assert rows >= 10  # header + one row per finding
        assert page.locator("#check-split_leakage .sev-high").count() == 1
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0 and page.evaluate("document.images.length") > 40


def test_export_cleaned_manifest(audited, tmp_path):
    workspace, _, _ = audited
    run("audit", "-w", workspace)  # the latest full audit is what export reads
    plain = run("export", tmp_path / "all.csv", "-w", workspace)
    cleaned = run("export", tmp_path / "clean.csv", "-w", workspace, "--drop-duplicates")
    assert plain.returncode == 0 and cleaned.returncode == 0, cleaned.stderr
    with (tmp_path / "all.csv").open() as handle:
        everything = {row["id"]: row for row in csv.DictReader(handle)}
    with (tmp_path / "clean.csv").open() as handle:
        kept = {row["id"] for row in csv.DictReader(handle)}
    assert "train/boot/truncated.png" not in everything  # unreadable files are dropped by default
    assert "test/boot/leaked.png" in kept  # the test copy of a leak is kept, the train copy dropped
    assert len(kept) < len(everything)
    original = "train/boot/" + min(p.name for p in (workspace.parent / "data" / "train" / "boot").glob("0*.png"))
    assert (original in kept) != ("train/boot/copy-of-first.png" in kept)  # one of the exact pair survives


def test_a_report_that_cannot_be_written_fails_the_audit_run(audited, tmp_path):
    workspace, _, _ = audited
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the report's folder should be")
    result = run("audit", "-w", workspace, "--checks", "imbalance", "--report", blocker / "report.html")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not-a-folder" in result.stderr
    from curato.workspace import Workspace

    last = Workspace.open(workspace).catalog.runs("audit")[-1]
    assert last["name"] == "imbalance" and last["status"] == "failed"


def test_checks_side_by_side_find_what_one_at_a_time_finds(audited):
    """Two checks at a time, the out-of-fold probabilities beside them: the same findings as one at a time."""
    from curato.checks.registry import run_checks
    from curato.commands.audit import attach_pred_probs
    from curato.commands.embed import choose_embedder_name, compute_embeddings
    from curato.commands.rows import load_samples
    from curato.workspace import Workspace

    workspace = Workspace.open(audited[0])
    features, _ = compute_embeddings(workspace, choose_embedder_name(workspace))
    outcomes = []
    for workers in (1, 2):
        data = load_samples(workspace, features)
        timings: dict[str, float] = {}
        findings = run_checks(data, workers=workers, timings=timings,
                              before=lambda lane, data=data: attach_pred_probs(workspace, data, progress=lane))
        assert {"out_of_fold", "duplicates", "shortcuts", "label_issues"} <= set(timings)
        outcomes.append({f.check: (f.severity, f.message, f.sample_ids[f.flagged].tolist(), f.scores)
                         for f in findings})
    serial, side_by_side = outcomes
    assert serial.keys() == side_by_side.keys() and len(serial) > 5
    for check, (severity, message, flagged, scores) in serial.items():
        assert side_by_side[check][:3] == (severity, message, flagged), check
        np.testing.assert_allclose(side_by_side[check][3], scores, atol=1e-6, err_msg=check)
    assert any(flagged for _, _, flagged, _ in serial.values())


def test_a_failing_check_fails_the_side_by_side_run(audited):
    from curato.checks.registry import register_check, run_checks, unregister_check
    from curato.commands.rows import load_samples
    from curato.workspace import Workspace

    def broken(data, params):
        raise RuntimeError("broken check")

    register_check("broken_check", broken)
    try:
        data = load_samples(Workspace.open(audited[0]), None)
        with pytest.raises(RuntimeError, match="broken check"):
            run_checks(data, ["unreadable", "broken_check", "imbalance"], workers=2)
    finally:
        unregister_check("broken_check")


def test_side_by_side_lanes_take_the_costliest_check_that_may_start():
    """A free lane takes the costliest waiting check, the ones needing out-of-fold probabilities as soon as
    those exist: the long checks never start as the other lane runs out of work."""
    import threading
    import time

    from curato.checks.data import AuditData
    from curato.checks.registry import register_check, run_checks, unregister_check

    started: list[str] = []
    lock = threading.Lock()

    def check(name: str, seconds: float):
        def run(data, params):
            with lock:
                started.append(name)
            time.sleep(seconds)
            return []
        return run

    plan = {"cheap": (0.1, (), 0.05), "long": (50, (), 0.6), "middle": (10, (), 0.05),
            "late_long": (30, ("pred_probs",), 0.05), "late_cheap": (0.5, ("pred_probs",), 0.05)}
    for name, (cost, needs, seconds) in plan.items():
        register_check(name, check(name, seconds), needs=needs, cost=cost)
    try:
        data = AuditData(sample_ids=np.array(["a", "b"]), labels=np.array([None, None]))
        run_checks(data, list(plan), workers=2, before=lambda lane: time.sleep(0.2))
    finally:
        for name in plan:
            unregister_check(name)
    # lane 1 runs the probabilities (0.2 s) while lane 2 starts the longest check; then the costliest next
    assert started[:2] == ["long", "late_long"]
    assert started.index("middle") < started.index("late_cheap") < started.index("cheap")
    with pytest.raises(ValueError, match="cost"):
        register_check("negative", check("negative", 0), cost=-1)


def test_no_check_is_lost_when_one_that_waited_for_the_probabilities_ends_before_their_lane_reports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane that computed the out-of-fold probabilities queues the checks reading them, then reports; when
    another lane finishes one of those checks before that report arrives, every check still counts."""
    import queue
    import time

    from curato.checks.data import AuditData
    from curato.checks.registry import register_check, run_checks, unregister_check

    class SlowProbabilityReport(queue.SimpleQueue):
        def put(self, item, block=True, timeout=None):
            if isinstance(item, tuple) and len(item) == 3 and item[0] is None:  # the probabilities' lane reports
                time.sleep(0.5)
            super().put(item, block, timeout)

    monkeypatch.setattr(queue, "SimpleQueue", SlowProbabilityReport)
    from curato.checks.findings import Finding

    def check(name: str):
        return lambda data, params: [Finding(check=name, severity="none", message=name, sample_ids=data.sample_ids,
                                             flagged=np.zeros(2, dtype=bool), scores=np.zeros(2))]

    names = {"ready_one": (), "late_a": ("pred_probs",), "late_b": ("pred_probs",)}
    for name, needs in names.items():
        register_check(name, check(name), needs=needs)
    try:
        data = AuditData(sample_ids=np.array(["a", "b"]), labels=np.array([None, None]))
        findings = run_checks(data, list(names), workers=2, before=lambda lane: time.sleep(0.1))
    finally:
        for name in names:
            unregister_check(name)
    assert sorted(finding.check for finding in findings) == sorted(names)


def test_each_neighbour_graph_width_is_its_own_search_whichever_check_asks_first():
    from curato.checks.data import AuditData
    from curato.neighbors import knn, unit_rows

    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 16)).astype(np.float32)
    vectors = np.repeat(base, 4, axis=0)  # groups of exact copies: ties everywhere in the neighbour lists
    rows = np.arange(len(vectors))
    wide_first = AuditData(sample_ids=rows.astype(str), labels=np.full(len(rows), None), embeddings=vectors,
                           has_embedding=np.ones(len(rows), bool))
    wide_first.neighbour_graph(rows, 15)
    narrow = wide_first.neighbour_graph(rows)
    expected = knn(unit_rows(vectors), 10)
    np.testing.assert_array_equal(narrow[1], expected[1])
    assert wide_first.neighbour_graph(rows, 15)[1].shape[1] == 15


def test_a_failed_side_by_side_audit_does_not_wait_for_the_other_lane_to_exit(tmp_path):
    """A check that fails (or Ctrl-C) ends the process at once, not when the other lane's long check is done."""
    import subprocess
    import sys
    import time

    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\n"
        "import numpy as np\n"
        "from curato.checks.data import AuditData\n"
        "from curato.checks.registry import register_check, run_checks\n"
        "def slow(data, params):\n"
        "    time.sleep(60)\n"
        "    return []\n"
        "def broken(data, params):\n"
        "    time.sleep(0.5)\n"
        "    raise RuntimeError('broken check')\n"
        "register_check('slow_check', slow)\n"
        "register_check('broken_check', broken)\n"
        "data = AuditData(sample_ids=np.array(['a', 'b']), labels=np.array([None, None]))\n"
        "try:\n"
        "    run_checks(data, ['slow_check', 'broken_check'], workers=2)\n"
        "except RuntimeError as error:\n"
        "    print('failed:', error)\n"
        "    sys.exit(4)\n")
    started = time.monotonic()
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 4 and "failed: broken check" in finished.stdout, finished.stderr
    assert time.monotonic() - started < 30  # the slow check's 60 s are not waited for
