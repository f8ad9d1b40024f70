"""Measure cleanlab Datalab's ``spurious_correlations`` check on a dataset given as an .npz file.

Run with the cleanlab venv (cleanlab 2.9.0, datasets 5.2.0, cleanvision 0.3.7)::

    .bench/cleanlab-venv/bin/python benchmarks/cleanlab_spurious.py IN.npz OUT.json

IN.npz holds ``labels`` (int, n) and either ``images`` (uint8, n x H x W x 3) or, for mixed
sizes, ``images_0`` ... ``images_{count-1}`` (each H x W x 3 uint8) plus ``count``. The images
become a Hugging Face ``datasets.Dataset`` with an ``image`` column (PIL) and a ``label`` column,
and ``cleanlab.Datalab(data=ds, label_name="label", image_key="image").find_issues(...)`` is run.

How cleanlab 2.9.0 computes the check (facts from its source in the venv):

* Inputs. The check uses only the per-image property scores that CleanVision writes into
  ``Imagelab.issues`` (every column whose name ends in ``_score``); ``features`` and
  ``pred_probs`` are not used, so the script takes neither.
  (``cleanlab/datalab/internal/adapter/imagelab.py``, ``handle_spurious_correlations``)
* The call has to ask for the image checks too. With
  ``issue_types={"spurious_correlations": {}}`` alone, ``ImagelabIssueFinderAdapter.find_issues``
  does not run CleanVision (it runs only when ``issue_types`` is None or contains
  ``"image_issue_types"``), finds no ``*_score`` columns, prints "Skipping spurious correlations
  check: Image property scores not available." and stores nothing. This script therefore passes
  ``{"image_issue_types": {dark, light, low_information, odd_aspect_ratio, odd_size, grayscale,
  blurry: {}}, "spurious_correlations": {}}``; an empty dict per image issue type makes cleanlab use
  its ``DEFAULT_CLEANVISION_ISSUES`` settings (``adapter/constants.py``). No other Datalab issue
  types (label, outlier, ...) are run.
* Score per property (``cleanlab/datalab/internal/spurious_correlation.py``): a GaussianNB is
  trained on that single property, with 5-fold ``cross_val_score`` accuracy; the score is
  ``min(1, (1 - cv_accuracy) / (1 - baseline))``. Lower means the property predicts the label
  better. Note: 2.9.0 computes ``baseline`` as ``np.bincount(labels).argmax() / len(labels)``,
  i.e. the *index* of the most common class divided by n, not the majority-class fraction; for
  data whose most common class is class 0 (including exactly balanced data, where argmax picks
  0) the baseline is 0 and the score is just the cross-validated error rate.
* Threshold: default 0.3, from ``SPURIOUS_CORRELATION_ISSUE["spurious_correlations"]["threshold"]``
  in ``cleanlab/datalab/internal/adapter/constants.py``; used when the ``spurious_correlations``
  dict has no ``"threshold"`` key. ``lab.get_info("spurious_correlations")`` returns
  ``{"correlations_df": DataFrame[property, score], "threshold": float}``.
* "Flagged": Datalab keeps no list of flagged properties. Its report
  (``CorrelationReporter._get_correlated_properties`` in ``adapter/imagelab.py``) treats a
  property as correlated when ``score < threshold`` (strictly less). This script applies that same
  rule to the stored scores.

OUT.json keys: ``scores`` (property -> score, names with cleanlab's ``_score`` suffix removed,
as its report shows them), ``threshold``, ``flagged`` (sorted names with score < threshold),
``seconds`` (Datalab construction + find_issues, which includes CleanVision's image pass),
``seconds_build_dataset``, ``n``, ``n_classes``, and library versions. cleanlab's own printing is
sent to stderr; stdout gets a one-line summary. Exit status 1 if cleanlab stored no scores.
"""
import contextlib
import json
import sys
import time

import numpy as np


def load_npz(path):
    z = np.load(path)
    labels = np.asarray(z["labels"]).astype(np.int64)
    images = list(z["images"]) if "images" in z.files else [z[f"images_{i}"] for i in range(int(z["count"]))]
    if len(images) != len(labels):
        raise SystemExit(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def main(argv):
    if len(argv) != 3:
        raise SystemExit(f"usage: {argv[0]} IN.npz OUT.json")
    import cleanlab
    import cleanvision
    import datasets
    from cleanlab import Datalab
    from cleanlab.datalab.internal.adapter.constants import DEFAULT_CLEANVISION_ISSUES
    from PIL import Image

    images, labels = load_npz(argv[1])
    t0 = time.perf_counter()
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)) for a in images],
         "label": labels.tolist()},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    t_build = time.perf_counter() - t0

    issue_types = {"image_issue_types": {k: {} for k in DEFAULT_CLEANVISION_ISSUES},
                   "spurious_correlations": {}}
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        lab = Datalab(data=ds, label_name="label", image_key="image", verbosity=0)
        lab.find_issues(issue_types=issue_types)
    seconds = time.perf_counter() - t0

    try:
        info = lab.get_info("spurious_correlations")
    except ValueError as e:
        raise SystemExit(f"cleanlab stored no spurious-correlation scores: {e}") from e
    df, threshold = info["correlations_df"], float(info["threshold"])
    scores = {str(p).removesuffix("_score"): float(s) for p, s in zip(df["property"], df["score"], strict=False)}
    flagged = sorted(p for p, s in scores.items() if s < threshold)
    out = {
        "scores": scores,
        "threshold": threshold,
        "flagged": flagged,
        "seconds": round(seconds, 3),
        "seconds_build_dataset": round(t_build, 3),
        "n": len(labels),
        "n_classes": len(np.unique(labels)),
        "issue_types": issue_types,
        "versions": {"cleanlab": cleanlab.__version__, "cleanvision": cleanvision.__version__,
                     "datasets": datasets.__version__},
    }
    with open(argv[2], "w") as f:
        json.dump(out, f, indent=2)
    print(f"flagged={flagged} threshold={threshold} seconds={seconds:.2f} "
          + " ".join(f"{p}={s:.3f}" for p, s in scores.items()))


if __name__ == "__main__":
    main(sys.argv)
