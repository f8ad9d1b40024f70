# Run from the repository root (after the graph is cached by one `curato embed` or benchmarks/embed.py):
#   .venv/bin/python benchmarks/embed_profile.py [--size 112] [--chunk 8]
"""Where the default image embedder's time goes inside onnxruntime (issue 25, part 4).

Profiles curato's cached EfficientNet-Lite0 graph on one single-threaded session (what each of the embedder's
workers runs) with onnxruntime's own profiler, and prints: images per second of that session alone on real
Fashion-MNIST chunks, the embedder's throughput on the same images (its workers side by side), and the share
of kernel time by operator kind -- pointwise (1x1) convolutions, depthwise convolutions, the full 3x3 stem, and
the rest -- read from the optimised graph's nodes.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112, choices=(112, 224))
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort

    from curato.features.embedders import get_embedder
    from curato.features.embedders.efficientnet import resize_batch
    from curato.imageio import read_idx

    raw = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")[:args.images]
    images = [np.repeat(image[:, :, None], 3, axis=2) for image in raw]
    embedder = get_embedder("efficientnet-lite0-112" if args.size == 112 else "efficientnet-lite0")
    embedder.embed(images[:16])  # builds or loads the cached graph
    chunks = [resize_batch(images[start:start + args.chunk], args.size)
              for start in range(0, len(images), args.chunk)]

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(folder) / "optimised.onnx")
        session = ort.InferenceSession(str(embedder.graph_path()), options, providers=["CPUExecutionProvider"])
        for chunk in chunks[:3]:
            session.run(None, {"pixels": chunk})
        alone = _best_rate(lambda: [session.run(None, {"pixels": chunk}) for chunk in chunks], len(images))
        side_by_side = _best_rate(lambda: embedder.embed(images), len(images))

        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        profiled = ort.InferenceSession(str(embedder.graph_path()), options, providers=["CPUExecutionProvider"])
        for chunk in chunks:
            profiled.run(None, {"pixels": chunk})
        events = json.loads(Path(profiled.end_profiling()).read_text())
        nodes = {node.name: node for node in onnx.load(options.optimized_model_filepath).graph.node}

    kinds: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = nodes.get(event["name"][:-len("_kernel_time")])
        kinds[_kind(node)] += event["dur"]
    total = sum(kinds.values())
    print(f"{args.size} px, chunks of {args.chunk}, {len(images)} Fashion-MNIST images, onnxruntime {ort.__version__}")
    print(f"one single-threaded session: {alone:.0f} img/s; the embedder ({embedder.workers} workers): "
          f"{side_by_side:.0f} img/s = {side_by_side / (alone * embedder.workers):.0%} of {embedder.workers} sessions")
    for kind, microseconds in kinds.most_common():
        print(f"  {kind:<24} {microseconds / total:6.1%} of kernel time")


def _kind(node: object) -> str:
    import onnx

    if node is None:
        return "other"
    if node.op_type != "Conv":  # type: ignore[attr-defined]
        return "other"
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # type: ignore[attr-defined]
    if attributes.get("group", 1) > 1:
        return "depthwise convolution"
    if list(attributes.get("kernel_shape", [])) == [1, 1]:
        return "1x1 convolution"
    return "full convolution (stem)"


def _best_rate(work: object, count: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return count / best


if __name__ == "__main__":
    main()
