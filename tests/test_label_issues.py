"""Label issues and out-of-fold probabilities on real data (scikit-learn's handwritten digits, raw pixels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from curato.checks.label_issues import (
    LabelIssueParams,
    confident_joint,
    expected_f1_cut,
    find_label_issues,
    label_issue_finding,
)
from curato.errors import InputError
from curato.models.oof import (
    OOF_SETTINGS_VERSION,
    fit_predict_probabilities,
    oof_settings,
    out_of_fold_probabilities,
    stratified_folds,
)

DIGIT_NAMES = [f"digit-{d}" for d in range(10)]
# Systematic confusions for the class-conditional case: each digit is mislabelled as one look-alike.
LOOK_ALIKE = {0: 6, 1: 7, 2: 3, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}


def f1_score(flagged: np.ndarray, truth: np.ndarray) -> float:
    hits = int(np.sum(flagged & truth))
    if hits == 0:
        return 0.0
    precision, recall = hits / flagged.sum(), hits / truth.sum()
    return float(2 * precision * recall / (precision + recall))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 8x8 digits as 64-d float32 pixel vectors, and their labels."""
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def clean_probs(digits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    x, y = digits
    return out_of_fold_probabilities(x, y)


def uniform_noise(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(rate * len(labels)), replace=False)
    noisy[chosen] = (labels[chosen] + rng.integers(1, 10, len(chosen))) % 10
    return noisy


def look_alike_noise(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for digit, target in LOOK_ALIKE.items():
        members = np.flatnonzero(labels == digit)
        noisy[rng.choice(members, int(rate * len(members)), replace=False)] = target
    return noisy


@pytest.fixture(scope="module")
def planted(digits: tuple[np.ndarray, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Noisy labels and their OOF probabilities: 10% uniform and 10% look-alike noise."""
    x, y = digits
    cases = {}
    for name, noisy in (("uniform", uniform_noise(y, 0.1, seed=1)), ("look-alike", look_alike_noise(y, 0.1, seed=2))):
        cases[name] = (noisy, out_of_fold_probabilities(x, noisy))
    return cases


# --- out-of-fold probabilities ---------------------------------------------------------------------


def test_oof_probabilities_are_valid_and_accurate(digits: tuple[np.ndarray, np.ndarray],
                                                  clean_probs: np.ndarray) -> None:
    _, y = digits
    assert clean_probs.shape == (len(y), 10)
    assert clean_probs.dtype == np.float64
    assert np.all(clean_probs >= 0)
    np.testing.assert_allclose(clean_probs.sum(axis=1), 1.0, atol=1e-9)
    assert np.mean(clean_probs.argmax(axis=1) == y) > 0.93


def test_oof_is_deterministic_for_a_seed(digits: tuple[np.ndarray, np.ndarray], clean_probs: np.ndarray) -> None:
    x, y = digits
    calls: list[int] = []
    again = out_of_fold_probabilities(x, y, progress=calls.append)
    np.testing.assert_array_equal(again, clean_probs)
    assert calls == [1] * 5
    other_seed = out_of_fold_probabilities(x, y, seed=1)
    assert not np.array_equal(other_seed, clean_probs)


def test_oof_fused_softmax_passes_match_the_numpy_objective(digits: tuple[np.ndarray, np.ndarray],
                                                            clean_probs: np.ndarray,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With numba the objective's elementwise part runs as two compiled passes around NumPy's exp: the same
    probabilities as the NumPy objective to the optimiser's tolerance (its last-digit differences move where
    L-BFGS stops: about three decimals, like a fully converged fit, see ``TOLERANCE``)."""
    import curato.models.oof as oof

    if oof.softmax_residual_kernels() is None:
        pytest.skip("numba is not installed (the `fast` extra): only the NumPy objective runs")
    x, y = digits
    monkeypatch.setattr(oof, "softmax_residual_kernels", lambda: None)
    plain = out_of_fold_probabilities(x, y)
    assert not np.array_equal(plain, clean_probs)  # the default run did go through the compiled passes
    np.testing.assert_allclose(plain, clean_probs, atol=2e-3)
    assert np.array_equal(plain.argmax(axis=1), clean_probs.argmax(axis=1))


def test_oof_never_predicts_a_sample_with_a_model_trained_on_it(digits: tuple[np.ndarray, np.ndarray],
                                                                clean_probs: np.ndarray) -> None:
    """Scramble every label in fold 0: fold 0's probabilities must not move (its model never saw those
    labels), while every other fold's model trained on them and gets worse."""
    x, y = digits
    folds = stratified_folds(y, 5, np.random.default_rng(0))  # what seed=0 uses
    scrambled = y.copy()
    held = folds == 0
    scrambled[held] = np.random.default_rng(3).integers(0, 10, held.sum())
    probs = out_of_fold_probabilities(x, scrambled, folds=folds)
    assert np.abs(probs[held] - clean_probs[held]).max() < 0.02  # optimiser tolerance only
    assert np.abs(probs[~held] - clean_probs[~held]).max() > 0.2
    assert np.mean(probs[~held].argmax(axis=1) == y[~held]) < np.mean(clean_probs[~held].argmax(axis=1) == y[~held])


def test_oof_random_labels_stay_at_chance_where_an_in_sample_fit_memorises() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 200)).astype(np.float32)
    y = rng.integers(0, 3, 240)
    in_sample = LogisticRegression(C=1e4, max_iter=5000).fit(x, y).predict(x)
    assert np.mean(in_sample == y) > 0.95
    probs = out_of_fold_probabilities(x, y)
    assert abs(np.mean(probs.argmax(axis=1) == y) - 1 / 3) < 0.1
    assert np.mean(probs[np.arange(len(y)), y]) < 0.37  # a sample's own label gets chance probability


def test_oof_handles_classes_smaller_than_the_folds(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    keep = np.concatenate([np.flatnonzero(y != 9), np.flatnonzero(y == 9)[:2]])  # digit 9: two samples
    probs = out_of_fold_probabilities(x[keep], y[keep], n_folds=5)
    assert probs.shape == (len(keep), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # an empty class (n_classes larger than the labels) is allowed and gets (almost) no probability
    probs = out_of_fold_probabilities(x[:200], y[:200], n_classes=12)
    assert probs.shape == (200, 12) and probs[:, 10:].max() < 0.05


def test_oof_settings_describe_the_cache_key() -> None:
    settings = oof_settings(n_folds=3, seed=7)
    assert settings["version"] == OOF_SETTINGS_VERSION
    assert settings["n_folds"] == 3 and settings["seed"] == 7
    assert settings != oof_settings()
    json.dumps(settings)


def test_oof_rejects_bad_input(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    with pytest.raises(InputError, match="labels must have shape"):
        out_of_fold_probabilities(x, y[:-1])
    with pytest.raises(InputError, match="NaN"):
        out_of_fold_probabilities(np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y)
    with pytest.raises(InputError, match="integer"):
        out_of_fold_probabilities(x, y.astype(float))
    with pytest.raises(InputError, match="n_folds"):
        out_of_fold_probabilities(x[:3], y[:3], n_folds=5)
    with pytest.raises(InputError, match="every index"):
        out_of_fold_probabilities(x, y, folds=np.zeros(len(y), dtype=int))


def test_fit_predict_heads_learn_from_weighted_rows_only(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    train = np.random.default_rng(0).random(len(y)) < 0.5
    hidden = np.where(train, y, -1)  # unlabelled rows are only predicted
    probs = fit_predict_probabilities(x, hidden, train.astype(float), n_classes=10)
    assert probs.shape == (len(y), 10) and np.allclose(probs.sum(axis=1), 1)
    assert (probs[~train].argmax(axis=1) == y[~train]).mean() > 0.9
    # a label on a zero-weight row changes nothing: the head never saw it
    scrambled = np.where(train, y, (y + 3) % 10)
    assert np.allclose(fit_predict_probabilities(x, scrambled, train.astype(float), n_classes=10), probs, atol=1e-6)
    # several heads at once (bootstrap counts): each differs, each is accurate
    counts = np.random.default_rng(1).poisson(1.0, (len(y), 3)) * train[:, None]
    ensemble = fit_predict_probabilities(x, hidden, counts, n_classes=10)
    assert ensemble.shape == (3, len(y), 10)
    assert all((head[~train].argmax(axis=1) == y[~train]).mean() > 0.85 for head in ensemble)
    assert not np.allclose(ensemble[0], ensemble[1], atol=1e-3)
    with pytest.raises(InputError, match="positive weight"):
        fit_predict_probabilities(x, hidden, np.zeros(len(y)))
    with pytest.raises(InputError, match="train_weights"):
        fit_predict_probabilities(x, hidden, train[:-1].astype(float))
    broken = x.copy()
    broken[3, 0] = np.nan
    with pytest.raises(InputError, match=r"^softmax head: embeddings contain NaN"):
        fit_predict_probabilities(broken, hidden, train.astype(float))
    with pytest.raises(InputError, match="at least 2 rows"):
        fit_predict_probabilities(x[:1], y[:1], np.ones(1), n_classes=10)
    with pytest.raises(InputError, match=r"^softmax head: labels must lie in 0\.\.9"):
        fit_predict_probabilities(x, np.where(train, y + 5, -1), train.astype(float), n_classes=10)


# --- label issues ------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["uniform", "look-alike"])
def test_planted_label_errors_are_found(digits: tuple[np.ndarray, np.ndarray],
                                        planted: dict[str, tuple[np.ndarray, np.ndarray]], noise: str) -> None:
    _, y = digits
    noisy, probs = planted[noise]
    truth = noisy != y
    result = find_label_issues(noisy, probs)
    assert result.method == "noise-posterior:anchor-count"  # ~180 samples per class: 36 anchors
    f1 = f1_score(result.is_issue, truth)
    assert f1 > 0.8, f1
    # at least as good as both baselines on the same probabilities
    assert f1 >= f1_score(probs.argmax(axis=1) != noisy, truth)
    assert f1 >= f1_score(find_label_issues(noisy, probs, method="confident-learning").is_issue, truth) - 0.01
    assert abs(result.estimated_noise_rate - truth.mean()) < 0.03
    # suggested labels of correctly flagged samples are mostly the original label
    hits = result.is_issue & truth
    assert np.mean(result.suggested_label[hits] == y[hits]) > 0.85
    # label quality ranks the planted errors low
    assert np.median(result.label_quality[truth]) < 0.5 < np.median(result.label_quality[~truth])


def test_small_dataset_blends_the_count(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """500 digits (50 per class, 10 anchors): the anchor count is only partly trusted, and it still works."""
    x, y = digits
    keep = np.random.default_rng(2).choice(len(y), 500, replace=False)
    noisy = uniform_noise(y[keep], 0.1, seed=2)
    probs = out_of_fold_probabilities(x[keep], noisy)
    truth = noisy != y[keep]
    result = find_label_issues(noisy, probs)
    assert result.method == "noise-posterior:blended-count"
    f1 = f1_score(result.is_issue, truth)
    assert f1 > 0.75, f1
    assert f1 > f1_score(probs.argmax(axis=1) != noisy, truth)


def test_clean_labels_give_few_flags(digits: tuple[np.ndarray, np.ndarray], clean_probs: np.ndarray) -> None:
    _, y = digits
    result = find_label_issues(y, clean_probs)
    assert result.is_issue.mean() < 0.01
    assert result.estimated_noise_rate < 0.02
    assert result.confidence_note.startswith("Reliable")


def test_noise_matrix_and_rates_are_consistent(planted: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    noisy, probs = planted["look-alike"]
    for method in ("auto", "confident-learning", "argmax"):
        result = find_label_issues(noisy, probs, method=method)
        matrix = result.noise_matrix
        assert matrix.shape == (10, 10)
        assert np.all(matrix >= 0)
        np.testing.assert_allclose(matrix.sum(axis=0), 1.0, atol=1e-9)  # P(given = . | true = j) sums to 1
        assert np.all((result.class_noise_rate >= 0) & (result.class_noise_rate <= 1))
        assert np.all((result.label_quality >= 0) & (result.label_quality <= 1))
        assert 0 <= result.estimated_noise_rate <= 1
        assert result.confidence_note.endswith(".")
    # the look-alike structure shows up: 3 is mostly mislabelled as 8
    auto = find_label_issues(noisy, probs)
    off = auto.noise_matrix[:, 3].copy()
    off[3] = 0
    assert off.argmax() == 8
    joint = confident_joint(noisy, probs).joint
    assert joint.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(joint.sum(axis=1), np.bincount(noisy, minlength=10) / len(noisy))


def test_expected_f1_cut_flags_nothing_when_nothing_is_likely_wrong() -> None:
    assert not expected_f1_cut(np.full(1000, 0.01)).any()
    flags = expected_f1_cut(np.r_[np.full(50, 0.95), np.full(950, 0.01)])
    assert flags.sum() == 50 and flags[:50].all()


def test_tiny_classes_are_never_flagged(digits: tuple[np.ndarray, np.ndarray],
                                        planted: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    noisy, probs = planted["uniform"]
    labels = noisy.copy()
    labels[:3] = 9  # pretend a new class "9" ... then give it only 3 samples by relabelling the rest
    labels[3:][labels[3:] == 9] = 0
    result = find_label_issues(labels, probs)
    assert not result.is_issue[labels == 9].any()


def test_label_issue_finding_json(digits: tuple[np.ndarray, np.ndarray],
                                  planted: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    _, y = digits
    noisy, probs = planted["uniform"]
    ids = [f"img-{i:04d}" for i in range(len(noisy))]
    finding = label_issue_finding(ids, noisy, probs, DIGIT_NAMES)
    document = json.loads(json.dumps(finding.to_json()))
    assert document["check"] == "label_issues"
    assert document["severity"] == "medium"  # ~10% estimated: 5% <= share < 15%
    assert document["message"].startswith("≈") and "→" in document["message"]
    summary = document["summary"]
    assert summary["method"].startswith("noise-posterior")
    assert summary["oof_accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == noisy), abs=1e-6)
    assert set(summary["per_class_noise_rate"]) == set(DIGIT_NAMES)
    assert summary["flagged"] == finding.count > 0
    issues = document["issues"]
    assert len(issues) == finding.count
    scores = [issue["score"] for issue in issues]
    assert scores == sorted(scores, reverse=True)  # worst first
    by_id = {issue["sample_id"]: issue for issue in issues}
    planted_ids = {ids[i] for i in np.flatnonzero(noisy != y)}
    assert len(planted_ids & set(by_id)) / len(planted_ids) > 0.75
    first = issues[0]
    assert set(first) == {"sample_id", "score", "label", "suggested_label", "label_quality"}
    assert first["score"] == pytest.approx(1 - first["label_quality"], abs=1e-6)
    assert first["label"] in DIGIT_NAMES and first["suggested_label"] != first["label"]
    assert len(finding.evidence["noise_matrix"]) == 10 and finding.evidence["class_names"] == DIGIT_NAMES
    assert isinstance(finding.evidence["confidence_note"], str)


def test_clean_finding_is_quiet(digits: tuple[np.ndarray, np.ndarray], clean_probs: np.ndarray) -> None:
    _, y = digits
    finding = label_issue_finding([str(i) for i in range(len(y))], y, clean_probs, DIGIT_NAMES)
    assert finding.severity in ("none", "low")
    assert finding.count < 0.01 * len(y)


def test_find_label_issues_rejects_bad_input(planted: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    noisy, probs = planted["uniform"]
    with pytest.raises(InputError, match="sum to 1"):
        find_label_issues(noisy, probs * 2)
    with pytest.raises(InputError, match=r"0\.\.9"):
        find_label_issues(np.where(noisy == 0, 10, noisy), probs)
    with pytest.raises(InputError, match="unknown method"):
        find_label_issues(noisy, probs, method="vote")
    with pytest.raises(InputError, match="class names"):
        label_issue_finding([str(i) for i in range(len(noisy))], noisy, probs, DIGIT_NAMES[:9])


def test_label_issue_thresholds_are_parameters(digits: tuple[np.ndarray, np.ndarray],
                                               planted: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    _, y = digits
    noisy, probs = planted["uniform"]
    truth = noisy != y
    default = find_label_issues(noisy, probs)
    np.testing.assert_array_equal(find_label_issues(noisy, probs, params=LabelIssueParams()).is_issue,
                                  default.is_issue)
    # A higher bar on the error probability flags fewer samples (a subset: the cut takes the top of one
    # ranking), and a larger share of those it keeps are planted errors.
    strict = find_label_issues(noisy, probs, params=LabelIssueParams(min_flag_probability=0.9)).is_issue
    assert strict.sum() < default.is_issue.sum() and not (strict & ~default.is_issue).any()
    assert np.mean(truth[strict]) > np.mean(truth[default.is_issue])
    # Classes under min_class_size are never flagged: 200 is more than any digit has (~180); the keyword wins.
    assert not find_label_issues(noisy, probs, params=LabelIssueParams(min_class_size=200)).is_issue.any()
    overridden = find_label_issues(noisy, probs, min_class_size=200, params=LabelIssueParams(min_class_size=1))
    assert not overridden.is_issue.any()
    # ~36 anchors per digit: asking for 100 before trusting them alone blends the count.
    blended = find_label_issues(noisy, probs, params=LabelIssueParams(min_anchors_for_count=100))
    assert default.method.endswith("anchor-count") and blended.method.endswith("blended-count")
    # Severity cut-offs and the number of confusions named in the message.
    ids = [str(i) for i in range(len(noisy))]
    finding = label_issue_finding(ids, noisy, probs, DIGIT_NAMES)
    custom = label_issue_finding(ids, noisy, probs, DIGIT_NAMES, params=LabelIssueParams(
        severity_medium=0.2, severity_high=0.3, confusions_listed=1))
    assert (finding.severity, custom.severity) == ("medium", "low") and custom.count == finding.count
    assert finding.message.count("→") == 1 + 3 and custom.message.count("→") == 1 + 1  # "(label→likely)" + pairs


@pytest.mark.parametrize(("changes", "prefix"), [
    ({"anchor_fraction": 0.0}, "label_issues.anchor_fraction: "),
    ({"posterior_iterations": -1}, "label_issues.posterior_iterations: "),
    ({"min_flag_probability": 1.5}, "label_issues.min_flag_probability: "),
    ({"prior_strength_max": 0.01}, "label_issues.prior_strength_max: "),
    ({"min_class_size": 2.5}, "label_issues.min_class_size: "),
    ({"severity_low": 0.1}, "label_issues.severity_medium: "),
    ({"note_min_accuracy": float("nan")}, "label_issues.note_min_accuracy: "),
])
def test_label_issue_params_reject_bad_values(changes: dict, prefix: str) -> None:
    with pytest.raises(InputError) as error:
        LabelIssueParams(**changes)
    assert str(error.value).startswith(prefix)


def test_label_issue_keyword_overrides_are_validated(planted: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    noisy, probs = planted["uniform"]
    with pytest.raises(InputError, match=r"^label_issues\.min_class_size: must be an integer >= 0, got -1$"):
        find_label_issues(noisy, probs, min_class_size=-1)
