# Run from the repository root (needs the 'scale' extra; starts a local Ray instance on this machine's cores):
#   .venv/bin/python benchmarks/scale_ray.py --images 2000 --texts 600 --out .bench/scale_ray
"""`--engine ray` against `--engine local` for ingest and embed on the same real data, in one run.

Writes Fashion-MNIST items as PNGs (a class folder each) and a CSV of Debian fortunes, then for each engine
ingests and embeds them into a fresh workspace, timing each step (wall-clock; the Ray instance is started
once before the clock, as a cluster would be). Checks what must hold: catalog rows, properties and
thumbnails equal; embedding cosine between the two engines' vectors of every sample (goal >= 0.9999).
On one machine Ray cannot beat the local path (same cores, plus Ray's scheduling and object transfer): the
ratio printed is Ray's overhead here; what Ray adds is more machines.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from curato.api import Workspace
from curato.featurestore import PROPERTIES, THUMBNAILS
from curato.imageio import read_idx

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FORTUNES = Path("/usr/share/games/fortunes")


def write_images(root: Path, count: int) -> Path:
    images = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:count]
    labels = read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")[:count]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / "images" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image)).save(folder / f"{index:06d}.png")
    return root / "images"


def write_texts(root: Path, count: int) -> Path:
    rows = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or not path.is_file():
            continue
        for text in path.read_text(errors="replace").split("\n%\n"):
            if text.strip():
                rows.append((f"{path.name}-{len(rows)}", text.strip(), path.name))
    rows = rows[:: max(1, len(rows) // count)][:count]
    table = root / "texts.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    return table


def cosines(a: Workspace, b: Workspace, name: str) -> np.ndarray:
    first, second = a.features.load(name), b.features.load(name)
    order = {sid: i for i, sid in enumerate(second.ids)}
    matched = second.vectors[[order[sid] for sid in first.ids]]
    return (first.vectors * matched).sum(1) / np.linalg.norm(first.vectors, axis=1) / np.linalg.norm(matched, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path(".bench/scale_ray"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import ray

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    sources = {"image": write_images(args.out, args.images), "text": write_texts(args.out, args.texts)}
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    print(f"Ray: {int(ray.cluster_resources().get('CPU', 0))} CPUs; {args.images} images, {args.texts} texts")
    results: dict[str, dict[str, float]] = {}
    workspaces: dict[tuple[str, str], Workspace] = {}
    for modality, source in sources.items():
        for engine in ("local", "ray"):
            ws = Workspace.create(args.out / f"ws-{modality}-{engine}")
            start = time.perf_counter()
            ws.ingest(source, format="text" if modality == "text" else None, engine=engine)
            ingested = time.perf_counter() - start
            start = time.perf_counter()
            summary = ws.embed(engine=engine)
            embedded = time.perf_counter() - start
            workspaces[modality, engine] = ws
            results[f"{modality}/{engine}"] = {"ingest_s": round(ingested, 2), "embed_s": round(embedded, 2),
                                               "embedder": summary.embedder, "items": summary.total}
            print(f"{modality:5s} {engine:5s}: ingest {ingested:7.2f} s, embed ({summary.embedder}) "
                  f"{embedded:7.2f} s, {summary.total / embedded:7.1f} items/s")
        local, distributed = workspaces[modality, "local"], workspaces[modality, "ray"]
        name = results[f"{modality}/local"]["embedder"]
        cos = cosines(distributed, local, name)
        same_rows = all(np.array_equal(distributed.features.load(t).vectors, local.features.load(t).vectors,
                                       equal_nan=True)
                        for t in (PROPERTIES, THUMBNAILS)) if modality == "image" else True
        results[f"{modality}/agreement"] = {"min_cosine": float(cos.min()), "properties_equal": same_rows}
        ray_run, local_run = results[f"{modality}/ray"], results[f"{modality}/local"]
        print(f"{modality:5s} ray vs local: min cosine {cos.min():.6f}, properties and thumbnails equal: {same_rows}; "
              f"ray/local time: ingest {ray_run['ingest_s'] / local_run['ingest_s']:.2f}x, "
              f"embed {ray_run['embed_s'] / local_run['embed_s']:.2f}x")
    ray.shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
