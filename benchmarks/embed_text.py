"""Text embedding speed: sentence-transformers eager ``encode`` vs curato's ``minilm`` embedder vs the
full ``curato embed`` pipeline, on real short texts available offline (Debian ``fortunes``), in one run
(alternating, best of ``--rounds``).

    .venv/bin/python benchmarks/embed_text.py [--n 3000] [--rounds 2] [--runtime auto] [--also onnxruntime]
        [--other e5-small]

Prints texts/s for each, the pipeline's overhead over the embedder it drives, and the cosine between
curato's vectors and sentence-transformers' (min and mean over all texts). ``--also RUNTIME`` times
``minilm`` with a second runtime in the same rounds (default: onnxruntime when the main one is another,
so the OpenVINO default is compared with the runtime it replaced). ``--other NAME`` times another
registered text embedder's ``embed`` in the same rounds (its own model: no cosine to MiniLM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORTUNES = Path("/usr/share/games/fortunes")


def fortunes(n: int) -> list[str]:
    """Up to ``n`` distinct fortunes (whitespace collapsed), in file order; ``apt-get install fortunes``."""
    texts: list[str] = []
    seen: set[str] = set()
    for path in sorted(FORTUNES.glob("*")):
        if path.suffix or not path.is_file():
            continue
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = " ".join(entry.split())
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
    if not texts:
        sys.exit(f"no fortunes under {FORTUNES}; apt-get install fortunes")
    return texts[:n]


def rate(n: int, seconds: float) -> float:
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--also", default="onnxruntime",
                        help="a second minilm runtime to time in the same rounds ('none' to skip)")
    parser.add_argument("--other", help="another text embedder to time in the same rounds, e.g. e5-small")
    args = parser.parse_args()
    texts = fortunes(args.n)
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} fortunes, words per text median {int(np.median(words))}, max {max(words)}, "
          f"cpus {os.cpu_count()}")

    from curato.commands.embed import compute_embeddings
    from curato.commands.ingest import ingest
    from curato.features.embedders import get_embedder
    from curato.features.embedders.text import MiniLMEmbedder
    from curato.workspace import Workspace

    embedder = MiniLMEmbedder(runtime=args.runtime)
    embedder.embed(texts[:8])  # load (and on first use build and check) the runtime
    also = None
    if args.also != "none" and args.also != embedder.runtime:
        also = MiniLMEmbedder(runtime=args.also)
        also.embed(texts[:8])
    model = MiniLMEmbedder(runtime="torch")._load()
    model.encode(texts[:8])
    other = get_embedder(args.other) if args.other else None
    if other is not None:
        other.embed(texts[:8])

    manifest_dir = Path(tempfile.mkdtemp(prefix="curato-embed-text-"))
    manifest = manifest_dir / "texts.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    times: dict[str, list[float]] = {"eager": [], "ours": [], "pipeline": [], "also": [], "other": []}
    # Rounds alternate the three so that a busy machine's slow spells hit each alike; best of rounds.
    for _ in range(args.rounds):
        start = time.perf_counter()
        eager = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
        times["eager"].append(time.perf_counter() - start)

        start = time.perf_counter()
        ours = embedder.embed(texts)
        times["ours"].append(time.perf_counter() - start)

        with tempfile.TemporaryDirectory(dir=manifest_dir) as tmp:
            workspace = Workspace.create(Path(tmp) / "ws")
            ingest(workspace, manifest, workers=1)
            start = time.perf_counter()
            features, summary = compute_embeddings(workspace, embedder)
            times["pipeline"].append(time.perf_counter() - start)
            assert summary.computed == len(texts), summary
            order = {sid: i for i, sid in enumerate(features.ids)}
            stored = np.asarray(features.vectors)[[order[f"t{i}"] for i in range(len(texts))]]

        if also is not None:
            start = time.perf_counter()
            also_vectors = also.embed(texts)
            times["also"].append(time.perf_counter() - start)

        if other is not None:
            start = time.perf_counter()
            other.embed(texts)
            times["other"].append(time.perf_counter() - start)
    eager_s, ours_s, pipeline_s = (min(times[key]) for key in ("eager", "ours", "pipeline"))
    print("seconds per round:", {key: [round(t, 1) for t in value] for key, value in times.items()})

    shutil.rmtree(manifest_dir, ignore_errors=True)
    cosine = (ours * eager).sum(1)
    stored_cosine = (stored * ours).sum(1)
    print(f"runtime {embedder.runtime}, batch {embedder.batch_size}")
    print("| what | texts/s | vs eager encode |")
    print("|---|---:|---:|")
    base = rate(len(texts), eager_s)
    for label, seconds in (("sentence-transformers `encode` (eager torch, batch 32)", eager_s),
                           (f"curato `minilm` embed ({embedder.runtime}, length-sorted)", ours_s),
                           ("`curato embed` pipeline (same embedder)", pipeline_s)):
        print(f"| {label} | {rate(len(texts), seconds):.1f} | {rate(len(texts), seconds) / base:.2f}x |")
    if also is not None:
        also_rate = rate(len(texts), min(times["also"]))
        print(f"| curato `minilm` embed ({also.runtime}, length-sorted) | {also_rate:.1f} | {also_rate / base:.2f}x |")
    if other is not None:
        other_rate = rate(len(texts), min(times["other"]))
        print(f"| curato `{other.name}` embed | {other_rate:.1f} | {other_rate / base:.2f}x |")
    print(f"pipeline overhead over the embedder: {100 * (pipeline_s / ours_s - 1):+.1f}%")
    print(f"cosine curato vs encode: min {cosine.min():.6f}, mean {cosine.mean():.6f}; "
          f"stored vs embed: min {stored_cosine.min():.6f}")
    per_round = [round(e / o, 2) for e, o in zip(times["eager"], times["ours"], strict=True)]
    print(f"{embedder.runtime} vs eager per round: {per_round}; load average {os.getloadavg()[0]:.1f}")
    if also is not None:
        also_cosine = (also_vectors * eager).sum(1)
        print(f"{also.runtime}: cosine vs encode min {also_cosine.min():.6f}; {embedder.runtime} vs {also.runtime} "
              f"per round: {[round(a / o, 2) for a, o in zip(times['also'], times['ours'], strict=True)]}")


if __name__ == "__main__":
    main()
