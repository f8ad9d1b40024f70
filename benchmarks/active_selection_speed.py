# Run from the repository root:
#   .venv/bin/python benchmarks/active_selection_speed.py            (add --json out.json for machine-readable output)
"""Selection speed of curato's query strategies on synthetic data (2 cores).

Goals (issue 6): margin over a 1M pool < 5 s; k-center greedy picking 1,000 from 100k < 30 s; BADGE
1,000 from 100k < 60 s. The pool's "embeddings" are Gaussian blobs (20 centres) in ``--dim`` dimensions
(64 = what ``diversity_features`` hands the diversity strategies), probabilities a softmax of random
logits over 10 classes; nothing is labelled except where stated. Each figure is the wall time of one
``select_batch`` call (input validation included), best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.special import softmax

from curato.active.strategies import _POOL_CACHE, select_batch

GOALS = {"margin 1M": 5.0, "coreset 100k": 30.0, "badge 100k": 60.0}


def synthetic(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blob features ``(n, dim)`` float32 and class probabilities ``(n, 10)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)).astype(np.float32) * 3
    features = centres[rng.integers(20, size=n)] + rng.normal(size=(n, dim)).astype(np.float32)
    probs = softmax(rng.normal(scale=2.0, size=(n, 10)), axis=1)
    return features, probs


def timed(name: str, strategy: str, repeats: int, **inputs) -> float:
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        select_batch(strategy, **inputs)
        best = min(best, time.perf_counter() - started)
    goal = GOALS.get(name)
    verdict = "" if goal is None else f"  goal < {goal:.0f} s: {'met' if best < goal else 'NOT met'}"
    print(f"  {name:<22} {best:8.2f} s{verdict}", flush=True)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    print(f"selection time, best of {args.repeats} (budget 1,000; 100k pools hold {args.dim}-d features, "
          "1,000 labelled)", flush=True)
    results = {}
    features, probs = synthetic(1_000_000, 8, 0)
    nothing = np.zeros(len(probs), bool)
    results["margin 1M"] = timed("margin 1M", "margin", args.repeats, budget=1000, labeled=nothing, pred_probs=probs)
    results["entropy 1M"] = timed("entropy 1M", "entropy", args.repeats, budget=1000, labeled=nothing,
                                  pred_probs=probs)
    features, probs = synthetic(100_000, args.dim, 1)
    labeled = np.zeros(len(probs), bool)
    labeled[:1000] = True
    inputs = {"budget": 1000, "labeled": labeled, "features": features, "pred_probs": probs, "n_classes": 10}
    results["coreset 100k"] = timed("coreset 100k", "coreset", args.repeats, **inputs)
    results["badge 100k"] = timed("badge 100k", "badge", args.repeats, **inputs)
    results["cluster-margin 100k"] = timed("cluster-margin 100k", "cluster-margin", args.repeats, **inputs)
    results["typiclust 100k"] = timed("typiclust 100k", "typiclust", 1, **inputs)
    results["probcover 100k"] = timed("probcover 100k", "probcover", 1, **inputs)
    # auto's default strategy: cold (its 100-NN graph of the pool built first), then with the graph cached, as
    # in a selection loop over one pool
    _POOL_CACHE.clear()
    results["uncertainty-herding 100k cold"] = timed("uherding 100k, cold", "uncertainty-herding", 1, **inputs)
    results["uncertainty-herding 100k"] = timed("uherding 100k, cached", "uncertainty-herding", args.repeats,
                                                **inputs)
    if args.json:
        args.json.write_text(json.dumps({"dim": args.dim, "seconds": results, "goals": GOALS}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
