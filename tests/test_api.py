"""The public API: find_issues on arrays, parameters as data (params=, curato.toml, --set), the check /
embedder / strategy registries, and a check installed from a separate package through its entry point."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import curato
from curato.active.strategies import select_batch
from curato.checks.findings import SEVERITIES
from curato.checks.registry import check_names, parse_assignments, resolve_params
from tests.conftest import run

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def noisy_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits (raw 64 pixels as features) with 60 labels moved to the next digit."""
    digits = load_digits()
    labels = digits.target.astype(str).astype(object)
    planted = np.random.default_rng(1).choice(len(labels), 60, replace=False)
    labels[planted] = [str((int(v) + 1) % 10) for v in labels[planted]]
    return digits.data, labels, planted


def test_find_issues_on_arrays_finds_planted_label_errors(noisy_digits):
    features, labels, planted = noisy_digits
    result = curato.find_issues(labels=labels, features=features)
    issues = result.issues()
    assert issues.index.name == "sample_id" and len(issues) == len(labels)
    assert {"label", "suggested_label", "is_label_issues_issue", "label_issues_score", "is_outliers_issue"} <= set(
        issues.columns)
    flagged = set(issues.index[issues["is_label_issues_issue"]].astype(int))
    hits = flagged & set(planted.tolist())
    assert len(hits) >= 35 and len(hits) / len(flagged) >= 0.6  # real detection, not everything flagged
    # the suggested label of a planted error is mostly the original digit
    original = load_digits().target
    right = sum(issues.loc[str(i), "suggested_label"] == str(original[i]) for i in hits)
    assert right / len(hits) >= 0.8
    summary = result.summary()
    assert len(summary) == len(result.findings) and summary["severity"].isin(SEVERITIES).all()
    schema = json.loads(resources.files("curato").joinpath("schemas/audit.schema.json").read_text())
    document = result.to_json()
    jsonschema.validate(document, schema)
    assert document["workspace"] is None and set(document["checks_run"]) == set(result.checks)
    # checks whose inputs are missing (image properties) were skipped, not run on nothing
    assert "image_quality" not in result.checks and "label_issues" in result.checks


def test_find_issues_rejects_bad_input_with_the_field_named(noisy_digits):
    features, labels, _ = noisy_digits
    with pytest.raises(curato.InputError, match="features has 100 rows"):
        curato.find_issues(labels=labels, features=features[:100])
    with pytest.raises(curato.InputError, match="pred_probs has 3 columns but there are 10 classes"):
        curato.find_issues(labels=labels, pred_probs=np.full((len(labels), 3), 1 / 3))
    with pytest.raises(curato.InputError, match="images: pass either image arrays or file paths"):
        curato.find_issues(labels=labels[:2], images=[np.zeros((8, 8, 3), np.uint8), "x.png"])
    with pytest.raises(curato.InputError, match="unknown check 'nope'"):
        curato.find_issues(labels=labels, features=features, checks=["nope"])


def test_params_change_results_and_are_validated(noisy_digits):
    features, labels, _ = noisy_digits
    strict = curato.find_issues(labels=labels, features=features, checks=["outliers"],
                                params={"outliers": {"min_z_threshold": 6.0}})
    loose = curato.find_issues(labels=labels, features=features, checks=["outliers"],
                               params={"outliers": {"min_z_threshold": 2.0}})
    assert strict["outliers"].count < loose["outliers"].count
    assert strict.data.pred_probs is None  # no chosen check reads out-of-fold probabilities: none computed
    assert loose.to_json()["params"]["outliers"]["min_z_threshold"] == 2.0
    with pytest.raises(curato.InputError, match=r"^outliers\.k: must be an integer >= 1, got 0$"):
        curato.find_issues(labels=labels, features=features, checks=["outliers"], params={"outliers": {"k": 0}})
    with pytest.raises(curato.InputError, match=r"outliers\.kk: no such parameter"):
        resolve_params(["outliers"], parse_assignments(["outliers.kk=3"]))
    # strings from --set / curato.toml take the field's type, None included for optional fields
    resolved = resolve_params(["outliers"], parse_assignments(["outliers.z_threshold=4", "outliers.k=15"]))
    assert resolved["outliers"].z_threshold == 4.0 and resolved["outliers"].k == 15
    assert resolve_params(["outliers"], {"outliers": {"z_threshold": "none"}})["outliers"].z_threshold is None
    with pytest.raises(curato.InputError, match=r"outliers\.k: 'abc' is not a valid int"):
        resolve_params(["outliers"], parse_assignments(["outliers.k=abc"]))
    with pytest.raises(curato.InputError, match=r"write it as CHECK\.FIELD=VALUE"):
        parse_assignments(["outliers=3"])


def test_every_builtin_threshold_is_a_settable_field():
    """Every built-in check with thresholds declares a frozen parameter dataclass whose defaults validate."""
    checks = curato.registered_checks()
    assert set(check_names(None)) >= {"unreadable", "image_quality", "imbalance", "label_issues", "duplicates",
                                      "outliers", "shortcuts", "diversity"}
    for name in ("image_quality", "imbalance", "label_issues", "duplicates", "outliers", "shortcuts", "diversity"):
        spec = checks[name]
        assert spec.params is not None, name
        defaults = spec.default_params()
        first = dataclasses.fields(defaults)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):  # a run cannot change them behind the record's back
            setattr(defaults, first, 0)


@pytest.fixture()
def workspace(tmp_path, image_folder) -> Path:
    ws = tmp_path / "ws"
    assert run("ingest", image_folder, "-w", ws).returncode == 0
    assert run("embed", "-w", ws, "--embedder", "classic").returncode == 0
    return ws


def test_set_and_curato_toml_reach_the_run_record_and_json(workspace, tmp_path):
    out = tmp_path / "audit.json"
    result = run("audit", "-w", workspace, "--checks", "outliers", "--set", "outliers.k=15",
                 "--set", "outliers.min_z_threshold=3", "--json", out)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["params"]["outliers"]["k"] == 15 and document["params"]["outliers"]["min_z_threshold"] == 3.0
    ws = curato.Workspace.open(workspace)
    last = ws.catalog.runs("audit")[-1]
    assert last["status"] == "done"
    assert last["params"]["params"]["outliers"]["k"] == 15  # the run records the parameters it used
    # curato.toml sets the workspace's defaults; --set still wins
    ws.settings_path.write_text("[checks.outliers]\nk = 12\nmin_z_threshold = 4.0\n")
    assert ws.audit(["outliers"]).params["outliers"]["k"] == 12
    assert ws.audit(["outliers"], params={"outliers": {"k": 20}}).params["outliers"] == {
        **ws.audit(["outliers"]).params["outliers"], "k": 20}
    # bad values: exit 2 and one line naming the field (or the file)
    bad = run("audit", "-w", workspace, "--checks", "outliers", "--set", "outliers.k=0")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "outliers.k" in bad.stderr
    ws.settings_path.write_text("[checks.outliers\nk = 3\n")
    broken = run("audit", "-w", workspace, "--checks", "outliers")
    assert broken.returncode == 2 and "curato.toml" in broken.stderr
    listed = run("checks")
    assert listed.returncode == 0 and "--set outliers.k=10" in listed.stdout


def test_workspace_api_results_have_dataframe_views(workspace, tmp_path):
    ws = curato.Workspace.open(workspace)
    info = ws.info()
    assert info["samples"] == 80
    result = ws.audit(["imbalance", "duplicates", "label_issues"], embedder="classic", report=tmp_path / "r.html")
    issues = result.issues()
    assert {"is_exact_duplicates_issue", "is_class_imbalance_issue", "label_issues_score"} <= set(issues.columns)
    assert issues["path"].map(lambda p: Path(p).exists()).all()  # a labeller can find every file
    assert (tmp_path / "r.html").read_text().count("<section") >= 1
    assert ws.read_latest("audit") == result.to_json()
    exported = ws.export(tmp_path / "clean.csv", drop_duplicates=True)
    assert exported.count <= 80 and exported.path.exists()


class MeanColour(curato.Embedder):
    """A 3-d embedder: the mean colour of the picture (enough to tell Trousers from bright photos)."""

    name = "mean-colour"

    @property
    def dim(self) -> int:
        return 3

    def settings(self) -> dict:
        return {"name": self.name, "version": 1}

    def embed(self, items):
        return np.stack([np.asarray(item, dtype=np.float32).reshape(-1, 3).mean(axis=0) / 255 for item in items])


def test_embedder_by_instance_and_by_registered_name(workspace):
    ws = curato.Workspace.open(workspace)
    summary = ws.embed(MeanColour())
    assert summary.embedder == "mean-colour" and summary.dim == 3 and summary.total == 80
    assert ws.features.load("mean-colour").vectors.shape == (80, 3)
    curato.register_embedder("mean-colour-registered", lambda **options: MeanColour())
    try:
        assert "mean-colour-registered" in curato.available_embedders()
        assert run("embed", "-w", workspace, "--embedder", "mean-colour-registered").returncode == 0
        assert ws.features.has("mean-colour-registered")
        with pytest.raises(ValueError, match="registered already"):
            curato.register_embedder("classic", lambda **options: MeanColour())
    finally:
        curato.unregister_embedder("mean-colour-registered")
    assert "mean-colour-registered" not in curato.available_embedders()


def test_strategy_registry_drives_select(workspace, tmp_path, fashion_mnist):
    def darkest_first(inputs: curato.StrategyInputs):
        order = inputs.unlabeled[np.argsort(inputs.features[inputs.unlabeled, 0])][: inputs.budget]
        return order, np.linspace(1, 0.5, len(order)), ["lowest first feature"] * len(order)

    curato.register_strategy("lowest-feature", darkest_first, cold_start=True)
    try:
        assert "lowest-feature" in curato.available_strategies()
        features = np.arange(20, dtype=np.float32)[::-1, None]
        labeled = np.zeros(20, dtype=bool)
        labeled[:5] = True
        picked = select_batch("lowest-feature", budget=3, labeled=labeled, features=features)
        assert picked.indices.tolist() == [19, 18, 17] and picked.reasons[0] == "lowest first feature"
        with pytest.raises(curato.InputError, match="'nope' is unknown"):
            select_batch("nope", budget=1, labeled=labeled)
        # select on a workspace takes it from the same registry (the CLI too)
        pool = tmp_path / "pool"
        pool.mkdir()
        for index, image in enumerate(fashion_mnist[0][1500:1506]):
            Image.fromarray(image).save(pool / f"loose-{index}.png")
        ws = curato.Workspace.open(workspace)
        ws.ingest(pool)
        batch = ws.select(3, strategy="lowest-feature", embedder="classic")
        assert len(batch.batch()) == 3 and set(batch.batch()["reason"]) == {"lowest first feature"}
        assert all(sid.startswith("loose-") for sid in batch.batch()["sample_id"])
    finally:
        curato.unregister_strategy("lowest-feature")
    assert "lowest-feature" not in curato.available_strategies()


@dataclass(frozen=True)
class WideParams:
    min_width: int = 100


def test_a_registered_check_runs_in_audit_json_and_report(workspace, tmp_path):
    def wide_images(data: curato.AuditData, params: WideParams) -> list[curato.Finding]:
        flagged = data.sizes[:, 0] >= params.min_width
        return [curato.Finding("wide_images", "low" if flagged.any() else "none", f"{flagged.sum()} wide images",
                               data.sample_ids, flagged, flagged.astype(float),
                               evidence={"widths": data.sizes[flagged, 0].tolist()})]

    def render(finding: curato.Finding) -> list[dict]:
        return [{"title": "widths of the wide images", "columns": ["width"],
                 "rows": [[w] for w in finding.evidence["widths"]], "notes": ["rendered by the check"]}]

    curato.register_check("wide_images", wide_images, params=WideParams, render=render)
    try:
        ws = curato.Workspace.open(workspace)
        result = ws.audit(["wide_images"], params={"wide_images": {"min_width": 200}}, report=tmp_path / "r.html")
        assert set(result["wide_images"].sample_ids[result["wide_images"].flagged]) == {
            "train/Trouser/cat.jpg", "train/Trouser/coffee.jpg"}  # the two photos; Fashion-MNIST is 28 px
        assert result.findings[0].produced_by == "wide_images"
        html = (tmp_path / "r.html").read_text()
        assert "widths of the wide images" in html and "rendered by the check" in html
        assert run("audit", "-w", workspace, "--checks", "wide_images", "--set", "wide_images.min_width=5000",
                   "--fail-on", "low").returncode == 0
        with pytest.raises(ValueError, match="registered already"):
            curato.register_check("wide_images", wide_images)
    finally:
        curato.unregister_check("wide_images")
    assert "wide_images" not in curato.registered_checks()


def _package_files(markdown: Path) -> dict[str, str]:
    """The files of the example package in docs/extending.md: code blocks whose first line is ``# file: NAME``."""
    blocks = re.findall(r"^```\w*\n# file: (\S+)\n(.*?)^```", markdown.read_text(), flags=re.S | re.M)
    return {name: body for name, body in blocks}


@pytest.mark.slow
def test_a_check_from_a_separate_package_is_found_through_its_entry_point(tmp_path, fashion_mnist):
    files = _package_files(DOCS / "extending.md")
    assert set(files) == {"pyproject.toml", "curato_filename_leak/__init__.py"}
    package = tmp_path / "curato-filename-leak"
    for name, body in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(body)
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                                "--target", str(target), str(package)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    # a scraped-looking dataset: some file names carry their class
    images, labels = fashion_mnist
    data = tmp_path / "data"
    for index in range(40):
        klass = ("Trouser", "Bag")[int(labels[index] == 8)]
        folder = data / klass
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{klass.lower()}_{index:03d}.png" if index < 10 else f"img_{index:03d}.png"
        Image.fromarray(images[index]).save(folder / name)
    env = {"PYTHONPATH": str(target), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}

    def curato_process(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "curato", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    listed = curato_process("checks")
    assert listed.returncode == 0, listed.stderr
    assert "filename_leak" in listed.stdout and "--set filename_leak.min_label_length=3" in listed.stdout
    ws = tmp_path / "ws"
    assert run("ingest", data, "-w", ws).returncode == 0  # in this process: the ingest runs no check
    out = tmp_path / "leak.json"
    audited = curato_process("audit", "-w", ws, "--checks", "filename_leak", "--json", out)
    assert audited.returncode == 0, audited.stderr
    finding = next(f for f in json.loads(out.read_text())["checks"] if f["check"] == "filename_leak")
    assert {row["sample_id"] for row in finding["issues"]} == {
        p.relative_to(data).as_posix() for p in data.rglob("*.png") if not p.name.startswith("img_")}
    assert "file names that contain their label" in (ws / "reports" / "report.html").read_text()
    strict = curato_process("audit", "-w", ws, "--checks", "filename_leak", "--set",
                            "filename_leak.min_label_length=0")
    assert strict.returncode == 2 and "filename_leak.min_label_length" in strict.stderr
    # a plug-in that cannot be imported stops the command with one line naming it, never a partial audit. It is
    # installed as pip lays a wheel down (a package and its .dist-info with entry_points.txt, found by
    # importlib.metadata on the path): the pip build above already showed the documented package installs.
    (target / "curato_broken").mkdir()
    (target / "curato_broken" / "__init__.py").write_text("import a_module_that_is_not_installed\n")
    dist_info = target / "curato_broken-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: curato-broken\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text("[curato.checks]\nbroken = curato_broken:CHECK\n")
    failed = curato_process("audit", "-w", ws, "--checks", "filename_leak")
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
    assert "plug-in 'broken' (curato.checks, from curato-broken) failed to load" in failed.stderr
