# Run from the repository root (2 cores: ~1.5 min per (noise, seed) with efficientnet-lite0):
#   .venv/bin/python benchmarks/review_effort.py --noise 0.05 0.1 --seed 0 1 --json .bench/review_effort.json
"""Review effort: what the audit's order saves a reviewer fixing label errors.

For every (noise, seed): a stratified subsample of ``--samples`` Fashion-MNIST training images (equal count
per class, drawn with the seed) is written as PNGs plus a manifest CSV (id,path,label,split); a ``--noise``
share of them, chosen at random, gets a label drawn uniformly from the 9 other classes (planted errors).
The workspace is ingested, embedded and audited (``label_issues`` only), then the REAL labelling server
(``curato serve --no-loop``) runs as a subprocess on 127.0.0.1 and a scripted reviewer who knows the true
labels works through the ``label_issues`` review queue over HTTP, one item at a time, the way the browser
does (``GET /api/review/label_issues?status=open&limit=1``, then ``POST .../decide``):

* given label true -> ``keep`` (key ``k``);
* else suggestion true -> ``accept`` (key ``Enter``/``a``);
* else ``relabel`` to the true class (number key ``1``-``9``/``0``).

Every decision is one keystroke in the app (it moves to the next item by itself). Measured: keystrokes per
corrected planted error, client-measured latency of the GET + POST per decision and per corrected error, the
share of planted errors fixed within a budget of ``--review-share`` x N items in the audit's order, and the same
budget spent on a RANDOM sample of the whole dataset (the reviewer without the audit; simulated without the
server: each of ``--random-draws`` random orders, the planted errors among the first budget items are the ones
fixed, one keystroke per item), the queue's precision (share of reviewed items that were planted errors) and
how many planted errors the queue holds at all.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from curato.api import Workspace
from curato.imageio import read_idx

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
KIND = "label_issues"


def stratified(labels: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Indices of ``samples`` images, an equal share per class (the remainder to the first classes), sorted."""
    rng = np.random.default_rng([seed, 1])
    k = len(CLASSES)
    picked = []
    for cls in range(k):
        count = samples // k + (1 if cls < samples % k else 0)
        picked.append(rng.choice(np.flatnonzero(labels == cls), count, replace=False))
    return np.sort(np.concatenate(picked))


def plant_noise(truth: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Noisy copy of ``truth``: exactly ``round(rate * n)`` random samples get one of the other 9 classes."""
    rng = np.random.default_rng([seed, round(rate * 1000), 2])
    noisy = truth.copy()
    chosen = rng.choice(len(truth), round(rate * len(truth)), replace=False)
    noisy[chosen] = (truth[chosen] + rng.integers(1, len(CLASSES), len(chosen))) % len(CLASSES)
    return noisy


def write_dataset(folder: Path, images: np.ndarray, labels: np.ndarray, name: str) -> Path:
    """PNGs under ``folder/images`` (written once per subsample) and a manifest CSV with the given labels."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest = folder / f"manifest-{name}.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "label", "split"])
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = folder / "images" / f"{index:05d}.png"
            if not path.exists():
                Image.fromarray(image).save(path)
            writer.writerow([f"s{index:05d}", f"images/{index:05d}.png", CLASSES[label], "train"])
    return manifest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(root: Path, port: int) -> subprocess.Popen:
    """``curato serve -w ROOT --port PORT --no-loop`` as a subprocess; returns once it answers."""
    command = [sys.executable, "-m", "curato", "serve", "-w", str(root), "--port", str(port), "--no-loop"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the server did not start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.2)


def review_queue(base: str, token: str, truth: dict[str, str]) -> list[dict[str, Any]]:
    """The scripted reviewer: decides every open item of the queue in order; one record per decision."""
    records = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while True:
            started = time.perf_counter()
            answer = client.get(f"/api/review/{KIND}", params={"status": "open", "limit": 1})
            get_seconds = time.perf_counter() - started
            answer.raise_for_status()
            items = answer.json()["items"]
            if not items:
                break
            item = items[0]
            sample = item["samples"][0]
            given, true = sample["label"], truth[sample["sample_id"]]
            suggested = (item.get("evidence") or {}).get("suggested_label")
            if given == true:
                body = {"item": item["item"], "action": "keep"}
            elif suggested == true:
                body = {"item": item["item"], "action": "accept"}
            else:
                body = {"item": item["item"], "action": "relabel", "label": true}
            started = time.perf_counter()
            decided = client.post(f"/api/review/{KIND}/decide", json=body)
            post_seconds = time.perf_counter() - started
            decided.raise_for_status()
            records.append({"sample_id": sample["sample_id"], "action": body["action"], "planted": given != true,
                            "keys": 1, "seconds": get_seconds + post_seconds})
    return records


def one_run(images: np.ndarray, truth_labels: np.ndarray, rate: float, seed: int, args: argparse.Namespace,
            work: Path) -> dict[str, Any]:
    """Plant noise, build and audit a workspace, review its queue over HTTP; the measurements."""
    noisy = plant_noise(truth_labels, rate, seed)
    planted = noisy != truth_labels
    n, budget = len(noisy), round(args.review_share * len(noisy))
    manifest = write_dataset(work / f"seed{seed}", images, noisy, f"noise{rate}")
    root = work / f"ws-seed{seed}-noise{rate}"
    shutil.rmtree(root, ignore_errors=True)
    ws = Workspace.create(root)
    timings = {}
    started = time.perf_counter()
    ws.ingest(manifest)
    timings["ingest"] = time.perf_counter() - started
    started = time.perf_counter()
    embedder = args.embedder
    try:
        ws.embed(embedder)
    except Exception as error:  # the fallback is opt-in and reported
        if not args.fallback_classic:
            raise
        print(f"  {embedder} failed ({error}); falling back to classic", file=sys.stderr)
        embedder = "classic"
        ws.embed(embedder)
    timings["embed"] = time.perf_counter() - started
    started = time.perf_counter()
    result = ws.audit([KIND], embedder=embedder)
    timings["audit"] = time.perf_counter() - started
    flagged = sum(f.count for f in result.findings if f.check == KIND)
    token = Workspace.open(root).add_user("rev", "reviewer")

    truth = {f"s{i:05d}": CLASSES[label] for i, label in enumerate(truth_labels)}
    port = free_port()
    process = start_server(root, port)
    try:
        started = time.perf_counter()
        records = review_queue(f"http://127.0.0.1:{port}", token, truth)
        timings["review_wall"] = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)

    def summary(part: list[dict[str, Any]]) -> dict[str, Any]:
        fixed = sum(r["planted"] for r in part)  # every planted item reviewed is corrected (accept or relabel)
        keys = sum(r["keys"] for r in part)
        seconds = sum(r["seconds"] for r in part)
        return {"reviewed": len(part), "fixed": fixed, "fixed_share": fixed / int(planted.sum()),
                "precision": fixed / max(len(part), 1), "keys": keys,
                "keys_per_fix": keys / fixed if fixed else None,
                "seconds_per_decision": seconds / max(len(part), 1),
                "seconds_per_fix": seconds / fixed if fixed else None,
                "actions": {a: sum(r["action"] == a for r in part) for a in ("keep", "accept", "relabel")}}

    rng = np.random.default_rng([seed, round(rate * 1000), 3])
    random_fixed = np.array([planted[rng.permutation(n)[:budget]].sum() for _ in range(args.random_draws)])
    return {
        "noise": rate, "seed": seed, "samples": n, "planted": int(planted.sum()), "budget": budget,
        "embedder": embedder, "flagged": flagged, "queue": len(records), "timings": timings,
        "audit_order": summary(records[:budget]), "whole_queue": summary(records),
        "random": {"reviewed": budget, "fixed_mean": float(random_fixed.mean()),
                   "fixed_share": float(random_fixed.mean()) / int(planted.sum()),
                   "fixed_p5_p95": [float(np.percentile(random_fixed, 5)), float(np.percentile(random_fixed, 95))],
                   "keys_per_fix": budget / float(random_fixed.mean()),
                   "precision": float(random_fixed.mean()) / budget},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per (noise, seed)."""
    print(f"\n{'noise':>5} {'seed':>4} {'plant':>5} {'queue':>5} {'holds':>5} {'budget':>6} | "
          f"{'audit: fixed':>12} {'prec':>5} {'keys/fix':>8} | {'random: fixed':>13} {'keys/fix':>8} | "
          f"{'ms/dec':>6} {'ms/fix':>6} | {'gain':>5}")
    for row in rows:
        top, whole, rand = row["audit_order"], row["whole_queue"], row["random"]
        print(f"{row['noise']:>5.2f} {row['seed']:>4} {row['planted']:>5} {row['queue']:>5} {whole['fixed']:>5} "
              f"{row['budget']:>6} | {top['fixed']:>4} ({top['fixed_share']:>5.1%}) {top['precision']:>5.1%} "
              f"{top['keys_per_fix'] or float('nan'):>8.2f} | {rand['fixed_mean']:>5.1f} ({rand['fixed_share']:>5.1%}) "
              f"{rand['keys_per_fix']:>8.1f} | {1000 * whole['seconds_per_decision']:>6.1f} "
              f"{1000 * (whole['seconds_per_fix'] or float('nan')):>6.1f} | "
              f"{top['fixed'] / max(rand['fixed_mean'], 1e-9):>4.1f}x")
        print(f"{'':>11} whole queue: {whole['reviewed']} decisions, {whole['fixed']} fixed "
              f"({whole['fixed_share']:.1%} of planted), precision {whole['precision']:.1%}, "
              f"{whole['keys_per_fix'] or float('nan'):.2f} keys/fix, actions {whole['actions']}; "
              f"times {', '.join(f'{k} {v:.1f} s' for k, v in row['timings'].items())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05], help="planted noise rate(s)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="seed(s): subsample and noise")
    parser.add_argument("--embedder", default="efficientnet-lite0")
    parser.add_argument("--fallback-classic", action="store_true",
                        help="use the `classic` embedder when --embedder fails (e.g. no model weights)")
    parser.add_argument("--review-share", type=float, default=0.05, help="review budget as a share of the samples")
    parser.add_argument("--random-draws", type=int, default=1000, help="random orders for the baseline")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    all_images = read_idx(FASHION / "train-images-idx3-ubyte.gz")
    all_labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.int64)
    temporary = None if args.work else tempfile.TemporaryDirectory(prefix="curato-review-effort-")
    work = args.work or Path(temporary.name)
    rows = []
    try:
        for seed in args.seed:
            picked = stratified(all_labels, args.samples, seed)
            for rate in args.noise:
                print(f"noise {rate}, seed {seed} ...", flush=True)
                rows.append(one_run(all_images[picked], all_labels[picked], rate, seed, args, work))
    finally:
        if temporary is not None:
            temporary.cleanup()
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
