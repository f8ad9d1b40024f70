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

``--roofline`` also prints how much arithmetic each side did and how fast: the model's float32
multiply-adds over each side's padded batches (curato's length-sorted batches; sentence-transformers'
batches of 32 sorted by character length, as ``encode`` forms them), divided by its time, against this
machine's float32 matrix-multiply rate measured in the same run at the model's own shapes (the best of
numpy's BLAS and torch). The ceiling it prints is the speed-up over eager that a runtime doing curato's
padded work at that full matrix-multiply rate would reach: a float32 runtime cannot pass it. Last, the least
work (every text alone, no padding) and eager's padded work over it: where both sides run at the machine's
matrix-multiply rate, that is the most any float32 runtime can gain over eager.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import matmul_rate

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
    parser.add_argument("--roofline", action="store_true",
                        help="also print each side's float32 rate against this machine's matrix-multiply rate")
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
    cpu: dict[str, list[float]] = {"eager": [], "ours": []}
    # Rounds alternate the three so that a busy machine's slow spells hit each alike; best of rounds.
    for _ in range(args.rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        eager = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
        times["eager"].append(time.perf_counter() - start)
        cpu["eager"].append(time.process_time() - start_cpu)

        start, start_cpu = time.perf_counter(), time.process_time()
        ours = embedder.embed(texts)
        times["ours"].append(time.perf_counter() - start)
        cpu["ours"].append(time.process_time() - start_cpu)

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
    if args.roofline:
        print_roofline(texts, embedder, model, times, cpu)


def bert_flops(cells_by_batch: list[tuple[int, int]], config: dict[str, int]) -> float:
    """Floating-point operations (2 per multiply-add) of a BERT encoder over batches of (rows, width)
    tokens: per layer the Q, K, V and output projections, the two feed-forward matrices and the two
    attention products; layer norms, softmax and activations are not counted (they only add time)."""
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    total = 0.0
    for rows, width in cells_by_batch:
        tokens = rows * width
        total += layers * (2 * tokens * (4 * hidden * hidden + 2 * hidden * inner) + 4 * rows * width * width * hidden)
    return total


def print_roofline(texts: list[str], embedder, model, times: dict[str, list[float]],
                   cpu: dict[str, list[float]]) -> None:
    config = model[0].auto_model.config.to_dict()
    ours_cells = [input_ids.shape for _, input_ids, _ in embedder._padded_batches(texts)]
    tokenizer, longest = model.tokenizer, model.max_seq_length
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    eager_cells = []
    for start in range(0, len(by_chars), 32):
        rows = [texts[i].strip() for i in by_chars[start:start + 32]]
        ids = tokenizer(rows, truncation=True, max_length=longest, padding=False)["input_ids"]
        eager_cells.append((len(rows), max(len(row) for row in ids)))
    unpadded = [(1, len(ids)) for ids in embedder._tokenise(texts)]
    flops = {"eager": bert_flops(eager_cells, config), "ours": bert_flops(ours_cells, config),
             "least": bert_flops(unpadded, config)}
    peak_wall, peak_cpu = matmul_rate(2048, config["hidden_size"], config["intermediate_size"], embedder.threads)
    print(f"float32 matrix multiply at the model's shapes: {peak_wall:.1f} GFLOP/s wall, {peak_cpu:.1f} per CPU-second "
          f"(best of numpy and torch); load average {os.getloadavg()[0]:.1f}")
    print("| side | GFLOP (padded batches) | GFLOP/s wall | share of the matmul rate | GFLOP per CPU-s | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in ("eager", "ours"):
        wall, used = min(times[side]), min(cpu[side])
        gflop = flops[side] / 1e9
        print(f"| {side} | {gflop:.1f} | {gflop / wall:.1f} | {gflop / wall / peak_wall:.0%} | {gflop / used:.1f} "
              f"| {gflop / used / peak_cpu:.0%} |")
    ceiling_wall = min(times["eager"]) / (flops["ours"] / 1e9 / peak_wall)
    ceiling_cpu = min(cpu["eager"]) / (flops["ours"] / 1e9 / peak_cpu)
    print(f"ceiling for a float32 runtime doing curato's padded work at the full matmul rate: {ceiling_wall:.2f}x "
          f"eager by wall time, {ceiling_cpu:.2f}x by CPU time")
    print(f"least work (every text alone, no padding): {flops['least'] / 1e9:.1f} GFLOP; eager's padded work over it: "
          f"{flops['eager'] / flops['least']:.2f}x (the most that padding alone can give at equal rates)")


if __name__ == "__main__":
    main()
