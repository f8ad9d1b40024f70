"""Dataset bias on real Fashion-MNIST images: a re-captured source is told apart, a random split is not."""

from __future__ import annotations

import io
import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from PIL import Image

from curato.checks.bias import (
    accuracy_interval,
    analyse_bias,
    chance_interval,
    cross_dataset_generalisation,
    distinguishability,
    encode_groups,
    overdispersion,
    property_differences,
)
from curato.errors import InputError
from curato.features.embedders import get_embedder
from curato.features.properties import PROPERTY_COLUMNS, image_properties
from tests.conftest import run

PER_SOURCE = 600


def recaptured(image: np.ndarray, quality: int = 60) -> bytes:
    """A realistic capture change: down to 20 px and back up to 28 px, then JPEG at ``quality``."""
    small = Image.fromarray(image).resize((20, 20), Image.BILINEAR).resize((28, 28), Image.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def two_sources(fashion_mnist):
    """Source A: 600 images as stored (PNG); source B: 600 OTHER images re-captured (rescaled + JPEG 60)."""
    images, labels = fashion_mnist
    encoded = [png(im) for im in images[:PER_SOURCE]] + [recaptured(im) for im in images[PER_SOURCE:2 * PER_SOURCE]]
    pixels = [np.asarray(Image.open(io.BytesIO(data))) for data in encoded]
    quality = [np.nan] * PER_SOURCE + [60.0] * PER_SOURCE
    properties = image_properties(pixels, file_bytes=[len(d) for d in encoded], jpeg_quality=quality)
    embeddings = get_embedder("classic").embed([np.repeat(p[..., None], 3, axis=2) for p in pixels])
    groups = np.array(["A"] * PER_SOURCE + ["B"] * PER_SOURCE, dtype=object)
    ids = np.array([f"{g}/{i:05d}.png" for i, g in enumerate(groups)], dtype=object)
    names = np.array([str(label) for label in labels[:2 * PER_SOURCE]], dtype=object)
    return ids, embeddings, groups, names, properties


def test_recaptured_source_is_told_apart_far_above_chance(two_sources):
    ids, embeddings, groups, labels, properties = two_sources
    document, finding = analyse_bias(ids, embeddings, groups, labels=labels, properties=properties,
                                     property_columns=PROPERTY_COLUMNS, by="source")
    assert document["verdict"] == "distinguishable"
    assert document["chance"] == 0.5 and document["chance_interval"][1] < 0.55
    assert document["interval"][0] > 0.9 and document["balanced_accuracy"] > 0.9
    assert document["interval"][0] <= document["accuracy"] <= document["interval"][1]
    confusion = np.array(document["pairwise"]["confusion"])
    assert confusion.sum() == 2 * PER_SOURCE and np.trace(confusion) / confusion.sum() == document["accuracy"]
    assert finding.check == "dataset_bias" and finding.severity == "high"
    # flagged = the 10 most typical samples of each group, each from its own group
    assert finding.count == 20
    for group, rows in document["typical"].items():
        assert len(rows) == 10 and all(row["sample_id"].startswith(group + "/") for row in rows)
        assert [row["probability"] for row in rows] == sorted((row["probability"] for row in rows), reverse=True)
    issues = document["finding"]["issues"]
    assert {issue["sample_id"] for issue in issues} == {r["sample_id"] for rows in document["typical"].values()
                                                        for r in rows}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_split_of_one_source_is_not_flagged(two_sources, seed):
    ids, embeddings, _, labels, properties = two_sources
    rows = slice(0, PER_SOURCE)
    halves = np.random.default_rng(seed).permutation(np.repeat(np.array(["x", "y"], dtype=object), PER_SOURCE // 2))
    document, finding = analyse_bias(ids[rows], embeddings[rows], halves, labels=labels[rows],
                                     properties=properties[rows], property_columns=PROPERTY_COLUMNS, seed=seed)
    low, high = document["chance_interval"]
    assert document["verdict"] == "not distinguishable" and low <= document["accuracy"] <= high
    assert finding.severity == "none" and finding.count == 0
    assert max(abs(row["cliffs_delta"]) for row in document["property_differences"]) < 0.2
    # a model trained on one half works as well on the other
    assert all(abs(pair["drop"]) < 0.1 for pair in document["cross_dataset"]["pairs"])


def test_pairwise_tells_which_groups_differ(two_sources):
    ids, embeddings, groups, _, properties = two_sources
    three = groups.copy()
    three[np.random.default_rng(5).permutation(PER_SOURCE)[: PER_SOURCE // 2]] = "A2"  # half of A, at random
    document, _ = analyse_bias(ids, embeddings, three, properties=properties, property_columns=PROPERTY_COLUMNS)
    pairs = {tuple(pair["groups"]): pair for pair in document["pairwise"]["pairs"]}
    assert set(pairs) == {("A", "A2"), ("A", "B"), ("A2", "B")}
    assert pairs["A", "A2"]["verdict"] == "not distinguishable" and pairs["A", "A2"]["chance"] == 0.5
    assert pairs["A", "B"]["verdict"] == pairs["A2", "B"]["verdict"] == "distinguishable"
    assert pairs["A", "B"]["chance"] == pytest.approx(600 / 900)
    confusion = np.array(document["pairwise"]["confusion"])
    assert confusion.shape == (3, 3) and confusion[2, 2] > 0.95 * PER_SOURCE  # B is recognised
    assert confusion[0, 1] + confusion[1, 0] > 0.3 * PER_SOURCE  # the halves of A are confused
    assert document["chance"] == 0.5 and document["balanced_chance"] == pytest.approx(1 / 3)
    top = document["property_differences"][0]
    assert top["property"] == "sharpness" and top["group"] == "B" and top["versus"] == "rest"


def test_changed_property_ranks_first(two_sources):
    _, _, groups, _, properties = two_sources
    names, index = encode_groups(groups)
    ranked = property_differences(properties, PROPERTY_COLUMNS, index, names)
    top = ranked[0]
    assert top["property"] == "sharpness" and top["group"] == "A" and top["versus"] == "B"
    assert top["cliffs_delta"] > 0.95 and top["group_median"] > 3 * top["rest_median"]
    assert "jpeg_quality" not in {row["property"] for row in ranked}  # A has no JPEG quality: nothing to rank
    deltas = [abs(row["cliffs_delta"]) for row in ranked]
    assert deltas == sorted(deltas, reverse=True)


def test_cliffs_delta_matches_pairwise_count():
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(40, 3)), 1)  # rounding makes ties
    values[rng.random((40, 3)) < 0.1] = np.nan
    groups = np.array(list("abc") * 13 + ["a"], dtype=object)
    names, index = encode_groups(groups)
    for row in property_differences(values, ["p", "q", "r"], index, names):
        column = values[:, ["p", "q", "r"].index(row["property"])]
        inside = column[(index == names.index(row["group"])) & np.isfinite(column)]
        rest = column[(index != names.index(row["group"])) & np.isfinite(column)]
        direct = (np.sign(inside[:, None] - rest[None, :])).mean()
        assert row["cliffs_delta"] == pytest.approx(direct)
        assert (row["n_group"], row["n_rest"]) == (len(inside), len(rest))


def test_cross_dataset_matrix(two_sources):
    _, embeddings, groups, labels, _ = two_sources
    # a third group holding a single class cannot train or test a label head
    extra = np.flatnonzero(labels == "0")[:30]
    x = np.concatenate([embeddings, embeddings[extra]])
    names, index = encode_groups(np.concatenate([groups, np.full(len(extra), "C", dtype=object)]))
    cross = cross_dataset_generalisation(x, index, names, np.concatenate([labels, labels[extra]]))
    matrix = cross["accuracy"]
    assert cross["groups"] == ["A", "B", "C"] and len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert all(matrix[i][j] is None for i in range(3) for j in range(3) if 2 in (i, j))
    assert {(s["train"], s["test"]) for s in cross["skipped"]} == {("C", "C"), ("A", "C"), ("C", "A"), ("B", "C"),
                                                                  ("C", "B")}
    assert all("fewer than 2 classes" in s["reason"] for s in cross["skipped"])
    # ten balanced classes: chance is 0.1; a linear head on classic features gets far above it
    assert 0.6 < matrix[0][0] < 0.95 and 0.6 < matrix[1][1] < 0.95
    assert 0.4 < matrix[0][1] < 0.95 and 0.4 < matrix[1][0] < 0.95
    pairs = {(p["train"], p["test"]): p for p in cross["pairs"]}
    assert set(pairs) == {("A", "B"), ("B", "A")}
    for (train, _), pair in pairs.items():
        assert len(pair["classes"]) == 10 and pair["n_train"] == pair["n_test"] == PER_SOURCE
        own = matrix[names.index(train)][names.index(train)]
        assert pair["in_source_accuracy"] == pytest.approx(own)  # all classes shared: the diagonal itself
        assert pair["drop"] == pytest.approx(own - pair["accuracy"])
    # the capture change costs accuracy: training on one source and testing on the other is worse on average
    assert pairs["A", "B"]["drop"] + pairs["B", "A"]["drop"] > 0.05


def test_decision_rule_intervals_and_minimum_effect():
    low, high = chance_interval(1000, 0.5, alpha=0.01)
    assert 0.45 < low < 0.5 < high < 0.55 and low + high == pytest.approx(1.0)
    assert accuracy_interval(700, 1000)[0] < 0.7 < accuracy_interval(700, 1000)[1]
    assert distinguishability(600, 1000, 0.5)["verdict"] == "distinguishable"
    assert distinguishability(520, 1000, 0.5)["verdict"] == "not distinguishable"
    # huge n: 50.2% is outside the chance interval but removes 0.4% of chance's errors
    huge = distinguishability(502_000, 1_000_000, 0.5)
    assert huge["accuracy"] > huge["chance_interval"][1] and huge["verdict"] == "negligible"
    # lopsided groups: a perfect head gains only 5 points of accuracy, yet removes every error of chance
    lopsided = distinguishability(2000, 2000, 0.95)
    assert lopsided["effect"] == 1.0 and lopsided["verdict"] == "distinguishable"


def test_overdispersion_measures_spread_beyond_binomial():
    rng = np.random.default_rng(0)
    n = 1000
    binomial = rng.binomial(n, 0.5, 2000) / n
    assert overdispersion(binomial, n, 0.5) == pytest.approx(1.0, abs=0.05)
    wider = 0.5 + 1.5 * (binomial - 0.5)
    assert overdispersion(wider, n, 0.5) == pytest.approx(1.5, abs=0.08)
    assert overdispersion(0.5 + 0.5 * (binomial - 0.5), n, 0.5) == 1.0  # never narrower than binomial
    # the spread widens both intervals: an accuracy outside the binomial chance interval can fall inside
    plain, widened = distinguishability(558, n, 0.5), distinguishability(558, n, 0.5, dispersion=1.6)
    assert plain["verdict"] == "distinguishable" and widened["verdict"] == "not distinguishable"
    assert widened["effective_n"] == 391 and widened["chance_interval"][1] > plain["chance_interval"][1]
    assert widened["binomial_chance_interval"] == plain["chance_interval"]


def test_random_split_outside_binomial_interval_is_checked_with_shuffles(two_sources):
    ids, embeddings, _, _, _ = two_sources
    rows = slice(0, PER_SOURCE)
    halves = np.random.default_rng(0).permutation(np.repeat(np.array(["x", "y"], dtype=object), PER_SOURCE // 2))
    checked, _ = analyse_bias(ids[rows], embeddings[rows], halves)
    plain, _ = analyse_bias(ids[rows], embeddings[rows], halves, permutations=0)
    assert plain["chance_interval"] == plain["binomial_chance_interval"] and plain["overdispersion"] == 1.0
    low, high = checked["binomial_chance_interval"]
    if not low <= checked["accuracy"] <= high:
        assert checked["permutations"] == 100 and checked["overdispersion"] > 1.1
        assert checked["chance_interval"][1] > high and checked["chance_interval"][0] < low
    else:
        assert checked["permutations"] == 0


def test_bad_input_raises_one_clear_error(two_sources):
    ids, embeddings, groups, _, _ = two_sources
    with pytest.raises(InputError, match="all samples have source 'A'; ingest another source with --source NAME"):
        analyse_bias(ids, embeddings, np.full(len(ids), "A", dtype=object), by="source")
    with pytest.raises(InputError, match="must line up"):
        analyse_bias(ids[:-1], embeddings, groups)
    tiny = groups.copy()
    tiny[:PER_SOURCE - 3] = "B"  # source A keeps 3 samples
    with pytest.raises(InputError, match="need two sources with at least 10 embedded samples each; found A: 3"):
        analyse_bias(ids, embeddings, tiny, by="source")


@pytest.fixture(scope="module")
def two_source_workspace(tmp_path_factory, fashion_mnist):
    """A workspace with source A (PNG as stored) and source B (other images, rescaled + JPEG), 3 classes each."""
    images, labels = fashion_mnist
    root = tmp_path_factory.mktemp("bias")
    for source, start in (("A", 0), ("B", 1000)):
        for klass in (0, 1, 7):
            folder = root / source / f"class-{klass}"
            folder.mkdir(parents=True)
            for index in np.flatnonzero(labels[start:] == klass)[:25] + start:
                if source == "A":
                    Image.fromarray(images[index]).save(folder / f"a{index:05d}.png")
                else:
                    (folder / f"b{index:05d}.jpg").write_bytes(recaptured(images[index]))
    workspace = root / "ws"
    first = run("ingest", root / "A", "-w", workspace, "--source", "A")
    assert first.returncode == 0, first.stderr
    alone = run("bias", "-w", workspace, "--by", "source", "--embedder", "classic")
    second = run("ingest", root / "B", "-w", workspace, "--source", "B")
    assert second.returncode == 0, second.stderr
    return workspace, root, alone


def test_cli_end_to_end_with_schema(two_source_workspace):
    workspace, root, _ = two_source_workspace
    out = root / "bias.json"
    result = run("bias", "-w", workspace, "--by", "source", "--json", out, "--embedder", "classic")
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    schema = json.loads(resources.files("curato").joinpath("schemas/bias.schema.json").read_text())
    jsonschema.validate(document, schema)
    assert document == json.loads((workspace / "reports" / "bias-latest.json").read_text())
    assert document["verdict"] == "distinguishable" and document["embedder"] == "classic"
    assert [g["name"] for g in document["groups"]] == ["A", "B"]
    assert all(row["sample_id"].startswith("class-") for rows in document["typical"].values() for row in rows)
    assert {p["train"] for p in document["cross_dataset"]["pairs"]} == {"A", "B"}
    assert document["property_differences"][0]["property"] in {"sharpness", "entropy", "file_bytes",
                                                                 "bits_per_pixel"}
    assert "distinguishable" in result.stdout and "name that source" in result.stdout
    # The audit report shows the latest bias run, with the group-typical pictures inline.
    from curato.commands.info import write_report
    from curato.workspace import Workspace

    html = write_report(Workspace.open(workspace), [], root / "report.html").read_text()
    section = html[html.index('<section id="bias"'):]
    section = section[:section.index("</section>")]
    assert "Dataset bias (by source)" in section and "distinguishable" in section and "most A-typical" in section
    assert section.count('src="data:image/png;base64,') >= 2


def test_cli_bad_input_is_one_line_and_nonzero(two_source_workspace):
    workspace, _, alone = two_source_workspace
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1
    assert "all samples have source 'A'; ingest another source with --source NAME" in alone.stderr
    no_splits = run("bias", "-w", workspace, "--by", "split", "--embedder", "classic")
    assert no_splits.returncode == 2 and "all samples have split '-'" in no_splits.stderr
    wrong = run("bias", "-w", workspace, "--by", "colour")
    assert wrong.returncode == 2 and "--by 'colour': no sample has this column" in wrong.stderr
    assert "columns there are: source, split, format" in wrong.stderr


def test_cli_groups_by_a_metadata_column(two_source_workspace):
    """A manifest's extra column (camera) groups the samples; samples without a camera are left out."""
    _, root, _ = two_source_workspace
    files = sorted((root / "A").rglob("*.png")) + sorted((root / "B").rglob("*.jpg"))
    lines = ["id,path,label,camera"]
    for number, path in enumerate(files):
        camera = "" if number % 30 == 0 else ("studio" if path.suffix == ".png" else "phone")
        lines.append(f"{path.parent.parent.name}-{path.name},{path.relative_to(root)},{path.parent.name},{camera}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    workspace = root / "ws-camera"
    assert run("ingest", root / "manifest.csv", "-w", workspace).returncode == 0
    result = run("bias", "-w", workspace, "--by", "camera", "--embedder", "classic")
    assert result.returncode == 0, result.stderr
    document = json.loads((workspace / "reports" / "bias-latest.json").read_text())
    schema = json.loads(resources.files("curato").joinpath("schemas/bias.schema.json").read_text())
    jsonschema.validate(document, schema)
    assert document["by"] == "camera" and [g["name"] for g in document["groups"]] == ["phone", "studio"]
    assert document["without_value"] == len(range(0, len(files), 30)) and document["verdict"] == "distinguishable"
    assert "name that camera" in result.stdout and "without a camera value" in result.stdout
    wrong = run("bias", "-w", workspace, "--by", "lens")
    assert wrong.returncode == 2 and "columns there are: source, split, format, camera" in wrong.stderr
